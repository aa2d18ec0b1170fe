"""WeChat's wire security: signatures, timestamps, safe-mode AES, and XML that cannot hurt us.

Incoming, in this order, before anything else runs: ``check_signature`` compares the SHA-1 of the
sorted token, timestamp and nonce (and, in safe mode, the Encrypt field) in constant time;
``check_timestamp`` refuses requests outside the window (replays); ``parse_xml`` refuses DTDs and
entity declarations (billion laughs, external entities), malformed XML and anything but the flat
``<xml>`` document WeChat sends; ``Cipher.open`` decrypts a safe-mode message and refuses one
sealed for another app id. Each failure is a ``Refused`` with the HTTP status to answer.

Outgoing: ``text_reply`` renders a passive text reply with wechatpy, every value escaped for its
CDATA section (wechatpy does not: a "]]>" in user text would end it and let the rest through as
XML), and ``Cipher.seal`` encrypts it for safe mode. wechatpy supplies the AES (PrpCrypto), the
envelope and the reply rendering; the checks above are ours, because wechatpy compares
signatures with ``!=`` and knows no timestamp window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import TextReply

from bot.errors import RequestRefused

MAX_BODY_BYTES = 64 * 1024  # WeChat's messages are a few kilobytes; anything bigger is not from it
_DECLARATIONS = (b"<!doctype", b"<!entity")
# Characters XML 1.0 cannot carry at all, even in CDATA.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Refused(RequestRefused):
    """A request we will not process; ``status`` is what to answer, ``reason`` what to log."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def signature(*parts: str) -> str:
    """WeChat's signature: the SHA-1 hex of the parts sorted and joined."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_signature(given: str | None, token: str, timestamp: str, nonce: str, *extra: str) -> None:
    expected = signature(token, timestamp, nonce, *extra)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refused(403, "bad signature")


def check_timestamp(timestamp: str | None, now: float, tolerance: int) -> None:
    try:
        sent = int(timestamp or "")
    except ValueError:
        raise Refused(403, "bad timestamp") from None
    if abs(now - sent) > tolerance:
        raise Refused(403, "stale timestamp")


def parse_xml(body: bytes | str) -> dict[str, str]:
    """The fields of a flat ``<xml>`` document; refuses declarations, malformed or nested input."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise Refused(413, "too large")
    lowered = raw.lower()
    if any(mark in lowered for mark in _DECLARATIONS):
        raise Refused(400, "DTD or entity declaration")
    try:
        # The byte check above misses a DTD in UTF-16; the parser itself refuses it too.
        root = safe_fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise Refused(400, f"malformed XML: {type(exc).__name__}") from None
    if root.tag != "xml":
        raise Refused(400, "not a WeChat message")
    fields: dict[str, str] = {}
    for child in root:
        # Nested elements (a scan-code menu's ScanCodeInfo) are kept only as their text.
        fields[child.tag] = (child.text or "").strip() if len(child) == 0 else ""
    return fields


def cdata(text: str) -> str:
    """``text`` safe inside a CDATA section: "]]>" split across two sections, forbidden characters dropped."""
    return _NOT_XML.sub("", text).replace("]]>", "]]]]><![CDATA[>")


def text_reply(*, to_user: str, from_account: str, content: str, now: int) -> str:
    """A passive text reply (plain XML); the values are escaped here since wechatpy does not."""
    reply = TextReply(source=cdata(from_account), target=cdata(to_user), content=cdata(content), time=now)
    return reply.render()


class Cipher:
    """Safe mode (安全模式): AES-256-CBC with the EncodingAESKey, app id checked inside each message."""

    def __init__(self, token: str, aes_key: str, app_id: str):
        self.token, self.app_id = token, app_id
        self._crypto = WeChatCrypto(token, aes_key, app_id)
        self._prp = PrpCrypto(base64.b64decode(aes_key + "="))

    def open(self, envelope: dict[str, str], msg_signature: str | None, timestamp: str, nonce: str) -> str:
        """The plain XML inside a safe-mode message, after its signature and app id are checked."""
        encrypted = envelope.get("Encrypt") or ""
        if not encrypted:
            raise Refused(400, "no Encrypt field")
        check_signature(msg_signature, self.token, timestamp, nonce, encrypted)
        try:
            return self._prp.decrypt(encrypted, self.app_id)
        except InvalidAppIdException:
            raise Refused(400, "wrong app id") from None
        except Exception as exc:  # bad Base64, padding or length: not sealed with our key
            raise Refused(400, f"undecryptable: {type(exc).__name__}") from None

    def seal(self, plain_xml: str, timestamp: str) -> str:
        """The encrypted reply envelope for a plain reply."""
        return self._crypto.encrypt_message(plain_xml, secrets.token_hex(8), timestamp)
