"""WeCom / 政务微信 (企业微信) storage on the callback path.

The answer given to a callback is kept with the event by the core (``Outcome.rendered``, set by the
channel's hook), so WeCom's retry of a callback gets the same XML. ``queue_reply`` writes the outbox row
of the API calls that answer one callback (storage/hot.py). The access token is kept in
``wechat_access_token`` under the key ``wecom:<corp>:<agent>``; the directory's members
(``WeComMember``) are matched to cadres by ``bot.core.directory``. ``keep_media`` stores on an outbox
row the media ids of its attachments, uploaded before its first send, so a send again reuses them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from storage import hot
from storage.db import session_scope
from storage.models import OutboxMessage, OutboxState

CHANNEL = "wecom"


def queue_reply(db, *, key: str, recipient: str, body: str, calls: list[dict], now: datetime,
                claimed_by: str | None = None, claimed_until: datetime | None = None) -> bool:
    """The API calls that answer one callback, as one outbox row (in the caller's transaction),
    claimed by ``claimed_by`` until ``claimed_until`` when given; False when the row exists already."""
    return hot.queue_outbox_reply(db, channel=CHANNEL, key=key, recipient=recipient, body=body,
                                  payload={"wecom": calls}, now=now, claimed_by=claimed_by, claimed_until=claimed_until)


def mark_replies_sent(db, keys: list[str], worker: str, now: datetime) -> int:
    """Marks sent the rows of these keys that the reply pump ``worker`` delivered and still holds (in
    the caller's transaction: a later callback's, or the pump's own when none came); how many."""
    return sum(hot.mark_reply_sent(db, key=key, worker=worker, now=now) for key in keys)


def keep_media(db, message_id: int, payload: dict) -> None:
    """The row's payload, now with its attachments' media ids (a transaction of its own)."""
    with session_scope(db) as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == message_id,
                                                    OutboxMessage.state == OutboxState.PENDING)
                        .values(payload=payload).execution_options(synchronize_session=False))
