"""The outbox's sending side: ``claim_due`` hands due rows to one sender at a time (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite serialises writers), with a lease so rows of a sender that died
come back; ``mark_*`` store the delivery result, only for the claim's holder.

Writing rows (``enqueue``, ``enqueue_for_cadre``) lives in ``bot.core.outbox``, so the core queues a
message without importing the sender; the names are re-exported here for the jobs and channels.

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

from sqlalchemy import or_, true, update
from sqlmodel import Session, select

from bot.core.outbox import (IMMEDIATE_KINDS, MAX_BODY, SEND_CHANNELS, Attachment, enqueue,  # noqa: F401
                             enqueue_for_cadre, existing_keys, quiet_end, reachable_account)
from storage.models import ChatAccount, OutboxAttachment, OutboxMessage, OutboxState

# A send cut off by its sender's death is sent once more at most (the user may get it twice, never
# three times): cut off again, the row is dead with this error.
MAX_REPEATS = 1
INTERRUPTED_TWICE = "发送两次均被进程中断，可能已送达，不再重发（可能重复）"

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


def held_row(session: Session, key: str, worker: str) -> Claimed | None:
    """The row of this idempotency key as its holder's claim, None when ``worker`` no longer holds it."""
    row = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == key)).first()
    if row is None or row.claimed_by != worker or row.state != OutboxState.PENDING:
        return None
    return Claimed(row.id, row.channel, row.recipient, row.body, dict(row.payload or {}), row.attempts, (),
                   row.kind, row.created_at)


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
