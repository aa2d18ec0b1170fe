"""WeCom's wire security: the checks of ``handlers.wechat.crypto`` with WeCom's envelope.

WeCom callbacks are always encrypted (there is no plain mode), signed with ``msg_signature`` over
the token, timestamp, nonce and the Encrypt field, and sealed with the corp id as the receive id.
In order, before anything else runs: the size, the signature (constant time), the timestamp
window, the outer XML (no DTD, no entities, flat), the AES envelope with our corp id inside, then
the inner XML under the same rules. The GET verification's ``echostr`` is encrypted the same way
and answered decrypted. wechatpy's enterprise module (``wechatpy.work`` in wechatpy 2) supplies the
AES (PrpCrypto with the corp id) and the envelope of our replies; the checks are ours.
"""

from __future__ import annotations

import secrets

from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.enterprise.replies import TextReply

from handlers.wechat.crypto import MAX_BODY_BYTES, Refused, cdata, check_signature, check_timestamp, parse_xml

__all__ = ["MAX_BODY_BYTES", "Cipher", "Refused", "button_reply", "card_reply", "check_timestamp", "parse_xml",
           "text_reply"]


def text_reply(*, to_user: str, corp_id: str, agent_id: int, content: str, now: int) -> str:
    """A passive text reply (plain XML), every value escaped for its CDATA section."""
    reply = TextReply(source=cdata(corp_id), target=cdata(to_user), content=cdata(content), time=now, agent=agent_id)
    return reply.render()


def button_reply(*, to_user: str, corp_id: str, replace_name: str, now: int) -> str:
    """The passive reply to a card press that greys out the pressed card's buttons with ``replace_name``
    (模板卡片更新消息, MsgType update_button): the card cannot be pressed again."""
    return ("<xml>"
            f"<ToUserName><![CDATA[{cdata(to_user)}]]></ToUserName>"
            f"<FromUserName><![CDATA[{cdata(corp_id)}]]></FromUserName>"
            f"<CreateTime>{int(now)}</CreateTime>"
            "<MsgType><![CDATA[update_button]]></MsgType>"
            f"<Button><ReplaceName><![CDATA[{cdata(replace_name)}]]></ReplaceName></Button>"
            "</xml>")


def card_reply(*, to_user: str, corp_id: str, card: dict, now: int) -> str:
    """The passive reply to a card press that replaces the pressed card with ``card`` (模板卡片更新消息,
    "更新点击用户的整张卡片", MsgType update_template_card): ``card`` as for message/send, its fields
    in XML as WeCom names them (``sub_title_text`` → ``SubTitleText``; a list is one element per item,
    ``<ButtonList>`` once for each button), without a task id (the card keeps the pressed one's:
    ``render.only_card`` leaves it out)."""
    return ("<xml>"
            f"<ToUserName><![CDATA[{cdata(to_user)}]]></ToUserName>"
            f"<FromUserName><![CDATA[{cdata(corp_id)}]]></FromUserName>"
            f"<CreateTime>{int(now)}</CreateTime>"
            "<MsgType><![CDATA[update_template_card]]></MsgType>"
            f"<TemplateCard>{_xml_fields(card)}</TemplateCard>"
            "</xml>")


def _xml_fields(fields: dict) -> str:
    out = []
    for name, value in fields.items():
        tag = "".join(part.capitalize() for part in name.split("_"))
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                out.append(f"<{tag}>{_xml_fields(item)}</{tag}>")
            elif isinstance(item, bool):
                out.append(f"<{tag}>{'true' if item else 'false'}</{tag}>")
            elif isinstance(item, int):
                out.append(f"<{tag}>{item}</{tag}>")
            else:
                out.append(f"<{tag}><![CDATA[{cdata(str(item))}]]></{tag}>")
    return "".join(out)


class Cipher:
    """AES-256-CBC with the EncodingAESKey; the corp id inside every message is checked."""

    def __init__(self, token: str, aes_key: str, corp_id: str):
        self.token, self.corp_id = token, corp_id
        self._crypto = WeChatCrypto(token, aes_key, corp_id)
        self._prp = PrpCrypto(self._crypto.key)

    def _decrypt(self, encrypted: str) -> str:
        try:
            return self._prp.decrypt(encrypted, self.corp_id)
        except InvalidCorpIdException:
            raise Refused(400, "wrong corp id") from None
        except Exception as exc:  # bad Base64, padding or length: not sealed with our key
            raise Refused(400, f"undecryptable: {type(exc).__name__}") from None

    def echo(self, msg_signature: str | None, timestamp: str, nonce: str, echostr: str) -> str:
        """The URL check: the decrypted echostr, after its signature is checked."""
        if not echostr or len(echostr) > 1000:
            raise Refused(400, "no echostr")
        check_signature(msg_signature, self.token, timestamp, nonce, echostr)
        return self._decrypt(echostr)

    def open(self, envelope: dict[str, str], msg_signature: str | None, timestamp: str, nonce: str) -> str:
        """The plain XML inside a callback, after its signature and corp id are checked."""
        encrypted = envelope.get("Encrypt") or ""
        if not encrypted:
            raise Refused(400, "no Encrypt field")
        check_signature(msg_signature, self.token, timestamp, nonce, encrypted)
        return self._decrypt(encrypted)

    def seal(self, plain_xml: str, timestamp: str) -> str:
        """The encrypted envelope of a passive reply."""
        return self._crypto.encrypt_message(plain_xml, secrets.token_hex(8), timestamp)
