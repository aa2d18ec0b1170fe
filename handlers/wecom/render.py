"""The core's replies as WeCom API calls: button cards (按钮交互型) where the options fit, text otherwise.

A reply with 1 to ``BUTTONS_MAX`` options becomes a template card of the button type: its title is
the question (the reply's last line), the text before it the card's subtitle (or a text message
of its own when it is too long), and one button per option whose ``key`` is the option's token, so
a press comes back as the core's versioned token (an old card is answered stale by the core).
More options than fit (a household list, eleven problem types) become numbered lines, answered
with the number or the words, as on WeChat. Every card has a task id of its own, made from the
event key, so the same outbox row sent twice is the same card (WeCom's duplicate check drops it).

A press whose answer is the next question and nothing else replaces the pressed card with the
next question's card, the choice on its source line ("已选：是"): the passive update_template_card
reply (更新点击用户的整张卡片), or ``update_template_card`` with the press's response code and the
whole card when the answer comes after the deadline. Any other answer (texts, a summary, a text
before the card) greys out the pressed card's buttons with the choice (update_button) and comes by
the send API. Either way the pressed card cannot answer its question again. A stale press changes
no card (the card it came from may already hold the question to answer now) and is told so by text.

WeCom's duplicate check (every message/send carries ``enable_duplicate_check``, see
``handlers.wecom.transport``) drops any message whose content equals one the member got within the
interval, not only the repeat of a row after a crash: two "已取消…" in a row, two reminders with the
same words. So every text sent by the API ends with an invisible mark (``mark``): 16 zero-width
characters (U+200B, U+200C, U+200D, U+2060) spelling 32 bits of a hash of the outbox row's key and
the call's place in the row (the event key for a callback's answer, ``outbox:<row id>`` for a
proactive message). Texts of distinct rows, or distinct calls of one row, differ (but for one
chance in 2**32); the same row sent again is byte for byte the same, and WeCom still drops it. The
mark is counted within the 2,048 bytes of a text (``TEXT_ROOM`` is what is left for the words).
"""

from __future__ import annotations

import hashlib
from typing import Any

from bot import texts
from bot.core.types import Reply
from handlers.wechat.channel import fit, pack

BUTTONS_MAX = 6  # WeCom's limit for button_list
BUTTON_TEXT_MAX = 10  # characters WeCom shows on a button
TITLE_MAX = 26  # characters of main_title.title
SUBTITLE_MAX = 112  # characters of sub_title_text
SOURCE_DESC_MAX = 13  # characters of source.desc (WeCom advises at most 13)
TEXT_MAX_BYTES = 2048  # one text message
MARK_ALPHABET = "\u200b\u200c\u200d\u2060"  # zero width: space, non-joiner, joiner, word joiner
MARK_LENGTH = 16  # two bits a character: 32 bits
TEXT_ROOM = TEXT_MAX_BYTES - len(("\u200b" * MARK_LENGTH).encode())  # the words of a text, its mark left out
SEND = "/cgi-bin/message/send"
UPDATE_CARD = "/cgi-bin/message/update_template_card"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def has_card(reply: Reply) -> bool:
    return 1 <= len(reply.flat_options()) <= BUTTONS_MAX


def as_text(reply: Reply) -> str:
    """A reply without a card: options numbered, hints for what has no button here."""
    text = reply.numbered_text()
    if reply.request_contact:
        text += "\n" + texts.WECOM_BIND_HINT
    if reply.request_location:
        text += "\n" + texts.WECOM_LOCATION_HINT
    return text


def task_id(event_key: str, index: int) -> str:
    """A card's task id (unique per app; letters, digits, _-@; at most 128 bytes)."""
    return f"t{hashlib.sha1(event_key.encode()).hexdigest()[:24]}-{index}"


def mark(key: str, index: int) -> str:
    """The invisible end of the ``index``-th call's text in the outbox row of ``key``: the same for
    the same row and call, different (but for one chance in 2**32) for any other."""
    bits = int.from_bytes(hashlib.sha256(f"{key}\n{index}".encode()).digest()[:4], "big")
    return "".join(MARK_ALPHABET[(bits >> (2 * i)) & 3] for i in range(MARK_LENGTH))


def marked(content: str, key: str, index: int) -> str:
    """``content`` cut to ``TEXT_ROOM`` bytes, with its mark: at most ``TEXT_MAX_BYTES`` (an empty
    text stays empty: WeCom refuses it, rather than deliver an invisible message)."""
    return fit(content, TEXT_ROOM) + mark(key, index) if content else content


def unmarked(content: str) -> str:
    """A text as the member reads it: its mark left out."""
    tail = content[-MARK_LENGTH:]
    return content[:-MARK_LENGTH] if len(tail) == MARK_LENGTH and all(c in MARK_ALPHABET for c in tail) else content


def card(reply: Reply, task: str) -> tuple[str | None, dict[str, Any]]:
    """A button card for the reply, and the text to send before it when the card cannot hold it."""
    lines = [line for line in reply.text.strip().split("\n")]
    question = lines[-1].strip() if lines else ""
    before = "\n".join(lines[:-1]).strip()
    if len(question) > TITLE_MAX:
        title, before = texts.WECOM_CARD_TITLE, reply.text.strip()
    else:
        title = question or texts.WECOM_CARD_TITLE
    extra = [texts.WECOM_LOCATION_HINT] if reply.request_location else []
    if reply.request_contact:
        extra.append(texts.WECOM_BIND_HINT)
    before = "\n".join([before, *extra]).strip()
    lead = None
    template: dict[str, Any] = {"card_type": "button_interaction", "main_title": {"title": title}, "task_id": task,
                                "button_list": [{"text": cut(o.label, BUTTON_TEXT_MAX), "key": o.token}
                                                for o in reply.flat_options()],
                                "replace_text": texts.WECOM_CARD_DONE}
    if before and len(before) <= SUBTITLE_MAX:
        template["sub_title_text"] = before
    elif before:
        lead = before
    return lead, template


def only_card(calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The card of ``calls`` that are one template card and nothing else (the next question after a
    press, to take the pressed card's place), without its task id (the card keeps the pressed one's).
    An answer with texts besides the card is not one: the texts stay in the chat as messages (a card
    in the pressed one's place is itself replaced at the next press)."""
    if len(calls) != 1 or calls[0]["path"] != SEND or calls[0]["body"].get("msgtype") != "template_card":
        return None
    # Nor its replace_text: on an update WeCom shows the buttons grey and not pressable when it is set.
    return {k: v for k, v in calls[0]["body"]["template_card"].items() if k not in ("task_id", "replace_text")}


def replace_card(code: str, card: dict[str, Any], *, touser: str, agent_id: int) -> dict[str, Any]:
    """The call that replaces the card pressed with ``code`` (its response code) by ``card``, when the
    answer comes after the passive reply's deadline."""
    return {"path": UPDATE_CARD, "body": {"userids": [touser], "agentid": agent_id, "response_code": code,
                                          "template_card": card}}


def grey_card(code: str, shown: str, *, touser: str, agent_id: int) -> dict[str, Any]:
    """The call that greys out the buttons of the card pressed with ``code``, showing ``shown``."""
    return {"path": UPDATE_CARD, "body": {"userids": [touser], "agentid": agent_id, "response_code": code,
                                          "button": {"replace_name": cut(shown, BUTTON_TEXT_MAX)}}}


def actions(replies: list[Reply], *, touser: str, agent_id: int, event_key: str,
            duplicate_check: int) -> list[dict[str, Any]]:
    """The API calls that deliver ``replies`` to ``touser``, in order."""
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # texts joined into as few messages as fit

    def flush() -> None:
        for part in pack(pending, TEXT_ROOM):
            out.append({"path": SEND, "body": text_message(touser, agent_id, part, duplicate_check, key=event_key,
                                                           index=len(out))})
        pending.clear()

    for reply in replies:
        if has_card(reply):
            lead, template = card(reply, task_id(event_key, len(out)))
            if lead:
                pending.append(lead)
            flush()
            out.append({"path": SEND, "body": card_message(touser, agent_id, template, duplicate_check)})
        else:
            pending.append(as_text(reply))
    flush()
    return out


def card_message(touser: str, agent_id: int, template: dict[str, Any], duplicate_check: int) -> dict[str, Any]:
    """A button card as message/send takes it (``template`` with its task id)."""
    return {"touser": touser, "agentid": agent_id, "msgtype": "template_card", "template_card": template,
            "enable_duplicate_check": 1, "duplicate_check_interval": duplicate_check}


def text_message(touser: str, agent_id: int, content: str, duplicate_check: int, *, key: str,
                 index: int = 0) -> dict[str, Any]:
    """A text message on its own (a reminder, a digest, the rest of a passive reply), marked for the
    ``index``-th call of the outbox row ``key``."""
    return {"touser": touser, "agentid": agent_id, "msgtype": "text", "text": {"content": marked(content, key, index)},
            "enable_duplicate_check": 1, "duplicate_check_interval": duplicate_check}
