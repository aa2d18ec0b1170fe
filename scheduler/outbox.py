"""The outbox's sending side: ``claim_due`` hands due rows to one sender at a time (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL; SQLite serialises writers), with a lease so rows of a sender that died
come back; ``mark_*`` store the delivery result, only for the claim's holder.

Writing rows (``enqueue``, ``enqueue_for_cadre``) lives in ``bot.core.outbox``, so the core queues a
message without importing the sender; the names are re-exported here for the jobs and channels.
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


def _mine(message_id: int, worker: str):
    return (OutboxMessage.id == message_id, OutboxMessage.claimed_by == worker,
            OutboxMessage.state == OutboxState.PENDING)


def mark_sent(session: Session, message_id: int, worker: str, now: datetime) -> bool:
    result = session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                             .values(state=OutboxState.SENT, sent_at=now, claimed_until=None, last_error=None)
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
                            last_error=error[:500])
                    .execution_options(synchronize_session=False))
    return state


def mark_failed(session: Session, message_id: int, worker: str, *, state: str, error: str, now: datetime) -> None:
    """A final failure: dead (a permanent error) or unreachable (the user blocked the bot)."""
    row = session.get(OutboxMessage, message_id)
    if row is None or row.claimed_by != worker or row.state != OutboxState.PENDING:
        return
    session.execute(update(OutboxMessage).where(*_mine(message_id, worker))
                    .values(state=state, attempts=row.attempts + 1, claimed_until=None, last_error=error[:500])
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
