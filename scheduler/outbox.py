"""The durable outbox: every proactive message is a row written in the cause's own transaction.

``enqueue_for_cadre`` picks the cadre's chat account, computes when the message may go (after quiet
hours), and inserts the row unless its idempotency key exists already: a job that runs twice, or
two schedulers that both run it, write one row. ``claim_due`` hands due rows to one sender at a
time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers), with a lease so rows of
a sender that died come back; ``record`` stores the delivery result, only for the claim's holder.

Delivery after a crash, stated and bounded: a sender marks a row in flight (``take_off``) just
before the send and renews the lease from then; if it dies before recording the result, the row
comes back when the lease ends (``OUTBOX_LEASE_SECONDS`` after the send at most) and is sent once
more, counted in ``interrupted`` (可能重复: the user may have it twice). Rows claimed but not yet
taken off are sent once, by whoever claims them next. A second cut-off leaves the row dead rather
than risk a third copy. So a crash repeats at most the messages in flight at that moment (up to
the sender's concurrency, 8 per process), each at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import or_, true, update
from sqlmodel import Session, select

from bot.config import Settings
from storage.db import insert_ignore
from storage.models import ChatAccount, OutboxAttachment, OutboxMessage, OutboxState

MAX_BODY = 4096
# Kinds sent at once, quiet hours or not: the answer to a user's own message that a channel could
# not give in its reply (WeChat's slow path).
IMMEDIATE_KINDS = ("reply",)
# A send cut off by its sender's death is sent once more at most (the user may get it twice, never
# three times): cut off again, the row is dead with this error.
MAX_REPEATS = 1
INTERRUPTED_TWICE = "发送两次均被进程中断，可能已送达，不再重发（可能重复）"
# Channels that can carry a message nobody asked for (the console cannot: nobody may be there).
SEND_CHANNELS = ("telegram", "wechat")


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


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: str
    recipient: str
    body: str
    payload: dict
    attempts: int
    attachments: tuple[Attachment, ...]
    kind: str = ""
    created_at: datetime | None = None


def claim_due(session: Session, *, channels: Iterable[str], now: datetime, worker: str, lease: timedelta,
              limit: int, kinds: Iterable[str] | None = None) -> list[Claimed]:
    """Takes up to ``limit`` due rows (of ``kinds``, when given) for this worker; other senders skip
    them until the lease ends."""
    rows = session.exec(
        select(OutboxMessage)
        .where(OutboxMessage.state == OutboxState.PENDING, OutboxMessage.next_attempt_at <= now,
               OutboxMessage.channel.in_(list(channels)),
               OutboxMessage.kind.in_(list(kinds)) if kinds is not None else true(),
               or_(OutboxMessage.claimed_until == None, OutboxMessage.claimed_until < now))  # noqa: E711
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    interrupted = [row for row in rows if row.in_flight_at is not None]
    given_up = set()
    for row in interrupted:
        # Its sender died (or stalled past the lease) with the send in flight: the user may have it
        # already. Sent once more; cut off twice, it is not sent a third time.
        count = row.interrupted + 1
        values = {"interrupted": count, "in_flight_at": None}
        if count > MAX_REPEATS:
            values.update(state=OutboxState.DEAD, claimed_until=None, last_error=INTERRUPTED_TWICE)
            given_up.add(row.id)
        session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values)
                        .execution_options(synchronize_session=False))
    rows = [row for row in rows if row.id not in given_up]
    if not rows:
        return []
    ids = [row.id for row in rows]
    session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                    .values(claimed_until=now + lease, claimed_by=worker)
                    .execution_options(synchronize_session=False))
    files: dict[int, list[Attachment]] = {}
    for a in session.exec(select(OutboxAttachment).where(OutboxAttachment.message_id.in_(ids))
                          .order_by(OutboxAttachment.id)).all():
        files.setdefault(a.message_id, []).append(Attachment(a.filename, a.content_type, a.content))
    return [Claimed(r.id, r.channel, r.recipient, r.body, dict(r.payload or {}), r.attempts,
                    tuple(files.get(r.id, ())), r.kind, r.created_at) for r in rows]


def take_off(session: Session, message_id: int, worker: str, now: datetime, lease: timedelta) -> bool:
    """Marks the row in flight just before its send goes out, and renews its lease from now: if
    this sender dies before recording the result, the next sender to claim it (after the lease)
    knows the user may have it already (``interrupted``, shown as 可能重复 by ``python -m bot
    outbox``). False when the claim has lapsed and another sender holds the row: do not send."""
    result = session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                             .values(in_flight_at=now, claimed_until=now + lease)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def possibly_repeated(session: Session, limit: int = 50) -> list[OutboxMessage]:
    """Rows whose send was cut off by a crash (they may have reached the user twice), newest first."""
    return list(session.exec(select(OutboxMessage).where(OutboxMessage.interrupted > 0)
                             .order_by(OutboxMessage.id.desc()).limit(limit)).all())


def _mine(message_id: int, worker: str):
    return (OutboxMessage.id == message_id, OutboxMessage.claimed_by == worker,
            OutboxMessage.state == OutboxState.PENDING)


def mark_sent(session: Session, message_id: int, worker: str, now: datetime) -> bool:
    result = session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                             .values(state=OutboxState.SENT, sent_at=now, claimed_until=None, last_error=None,
                                     in_flight_at=None)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def mark_retry(session: Session, message_id: int, worker: str, *, at: datetime, error: str, count_attempt: bool,
               max_attempts: int) -> str:
    """Puts the row back for a later attempt, or moves it to dead after ``max_attempts``."""
    row = session.get(OutboxMessage, message_id)
    if row is None or row.claimed_by != worker or row.state != OutboxState.PENDING:
        return "lost-claim"
    attempts = row.attempts + (1 if count_attempt else 0)
    state = OutboxState.DEAD if attempts >= max_attempts else OutboxState.PENDING
    session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                    .values(attempts=attempts, state=state, next_attempt_at=at, claimed_until=None,
                            last_error=error[:500], in_flight_at=None)
                    .execution_options(synchronize_session=False))
    return state


def mark_failed(session: Session, message_id: int, worker: str, *, state: str, error: str, now: datetime) -> None:
    """A final failure: dead (a permanent error) or unreachable (the user blocked the bot)."""
    row = session.get(OutboxMessage, message_id)
    if row is None or row.claimed_by != worker or row.state != OutboxState.PENDING:
        return
    session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                    .values(state=state, attempts=row.attempts + 1, claimed_until=None, last_error=error[:500],
                            in_flight_at=None)
                    .execution_options(synchronize_session=False))
    if state == OutboxState.UNREACHABLE:
        # Stop sending to this account: flag it, and settle its other waiting rows the same way.
        session.execute(update(ChatAccount).where(ChatAccount.channel == row.channel,
                                                  ChatAccount.external_user_id == row.recipient,
                                                  ChatAccount.unreachable_at == None)  # noqa: E711
                        .values(unreachable_at=now).execution_options(synchronize_session=False))
        session.execute(update(OutboxMessage).where(OutboxMessage.channel == row.channel,
                                                    OutboxMessage.recipient == row.recipient,
                                                    OutboxMessage.state == OutboxState.PENDING,
                                                    OutboxMessage.id != row.id)
                        .values(state=OutboxState.UNREACHABLE, last_error="recipient unreachable")
                        .execution_options(synchronize_session=False))
