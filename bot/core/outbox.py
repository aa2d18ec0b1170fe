"""Queueing a proactive message (主动消息): the outbox row, written in the cause's own transaction.

Everything that is not the direct reply to a user's own message (reminders, digests, ledger
notices, answers to a raiser) is queued here, by the core or a job, and delivered later by the
sender (``scheduler.sender``), which claims rows through ``scheduler.outbox``. This module only
writes rows: the core reaches it without importing the sender.

``enqueue_for_cadre`` picks the cadre's chat account, computes when the message may go (after quiet
hours), and inserts the row unless its idempotency key exists already: a job that runs twice, or
two schedulers that both run it, write one row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from bot.config import Settings
from storage.db import insert_ignore
from storage.models import ChatAccount, OutboxAttachment, OutboxMessage, OutboxState

MAX_BODY = 4096
# Kinds sent at once, quiet hours or not: the answer to a user's own message that a channel could
# not give in its reply (WeChat's slow path).
IMMEDIATE_KINDS = ("reply",)
# Channels that can carry a message nobody asked for (the console cannot: nobody may be there).
SEND_CHANNELS = ("telegram", "wechat", "wecom")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


def quiet_end(moment: datetime, settings: Settings) -> datetime | None:
    """When the quiet hours around ``moment`` end, or None when it is not in quiet hours."""
    tz: ZoneInfo = settings.tz
    start, end = settings.quiet_hours_start, settings.quiet_hours_end
    if start == end:
        return None
    local = moment.astimezone(tz)
    now_t = local.time()
    in_quiet = (start <= now_t or now_t < end) if start > end else (start <= now_t < end)
    if not in_quiet:
        return None
    day = local.date() if now_t < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=tz)


def reachable_account(session: Session, cadre_id: int, channels: Iterable[str]) -> ChatAccount | None:
    """The cadre's most recently bound account on a channel we can send to, not blocked."""
    return session.exec(
        select(ChatAccount).where(ChatAccount.cadre_id == cadre_id, ChatAccount.unreachable_at == None,  # noqa: E711
                                  ChatAccount.channel.in_(list(channels)))
        .order_by(ChatAccount.bound_at.desc(), ChatAccount.id.desc())
    ).first()


def enqueue(session: Session, *, key: str, kind: str, channel: str, recipient: str, body: str, now: datetime,
            settings: Settings, cadre_id: int | None = None, payload: dict | None = None,
            attachments: Iterable[Attachment] = ()) -> int | None:
    """Writes one outbox row (and its attachments) unless the key exists; returns its id or None."""
    due = now if kind in IMMEDIATE_KINDS else (quiet_end(now, settings) or now)
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY - 1] + "…"
    new_id = insert_ignore(session, OutboxMessage, {
        "idempotency_key": key[:200], "kind": kind, "channel": channel, "recipient": recipient,
        "cadre_id": cadre_id, "body": body, "payload": payload or {}, "state": OutboxState.PENDING,
        "attempts": 0, "next_attempt_at": due, "created_at": now})
    if new_id is not None:
        for a in attachments:
            session.add(OutboxAttachment(message_id=new_id, filename=a.filename, content_type=a.content_type,
                                         content=a.content))
    return new_id


def enqueue_for_cadre(session: Session, cadre_id: int, *, key: str, kind: str, body: str, now: datetime,
                      settings: Settings, channels: Iterable[str], attachments: Iterable[Attachment] = ()) -> int | None:
    """Queues a message for a cadre on their reachable account; the key names the cadre, not the account."""
    account = reachable_account(session, cadre_id, channels)
    if account is None:
        return None
    return enqueue(session, key=f"{key}:c{cadre_id}", kind=kind, channel=account.channel,
                   recipient=account.external_user_id, body=body, now=now, settings=settings, cadre_id=cadre_id,
                   attachments=attachments)


def existing_keys(session: Session, keys: list[str], chunk: int = 500) -> set[str]:
    """Which of these idempotency keys have a row already."""
    found: set[str] = set()
    for i in range(0, len(keys), chunk):
        found.update(session.exec(select(OutboxMessage.idempotency_key)
                                  .where(OutboxMessage.idempotency_key.in_(keys[i:i + chunk]))).all())
    return found
