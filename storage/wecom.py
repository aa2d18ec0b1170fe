"""WeCom / 政务微信 (企业微信) storage on the callback path: the answers given to callbacks, and the
outbox row of the API calls that answer one.

``WeComReply`` is the passive reply (plain XML) given to one callback, stored in the event's own
transaction by the channel's hook (``store_reply``): WeCom retries a callback it got no answer to
within 5 s, and the core drops the retry as a duplicate; ``cached_reply`` gives the same answer.
``queue_reply`` writes the outbox row of one callback's API calls. The access token is kept in
``wechat_access_token`` under the key ``wecom:<corp>:<agent>``; the directory's members
(``WeComMember``) are matched to cadres by ``bot.core.directory``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, insert, select as sa_select

from storage.models import OutboxMessage, OutboxState, WeComReply
from storage.prepared import Prepared

CHANNEL = "wecom"
REPLY_TTL = timedelta(hours=1)  # WeCom's retries come within seconds
PRUNE_ONE_IN = 100


# -- the reply cache ---------------------------------------------------------------------------------

_replies = WeComReply.__table__
_STORE = Prepared(insert(_replies).values(event_key=bindparam("event_key"), xml=bindparam("xml"),
                                          created_at=bindparam("now", type_=_replies.c.created_at.type)))
_PRUNE = Prepared(delete(_replies).where(_replies.c.created_at < bindparam("before", type_=_replies.c.created_at.type)))
_CACHED = Prepared(sa_select(_replies.c.xml).where(_replies.c.event_key == bindparam("event_key")))


_outbox = OutboxMessage.__table__
_QUEUE = Prepared(lambda insert: insert(_outbox).values(
    idempotency_key=bindparam("key"), kind="reply", channel=CHANNEL, recipient=bindparam("recipient"),
    body=bindparam("body"), payload=bindparam("payload", type_=_outbox.c.payload.type), state=OutboxState.PENDING,
    attempts=0, next_attempt_at=bindparam("now", type_=_outbox.c.next_attempt_at.type),
    created_at=bindparam("now", type_=_outbox.c.created_at.type)).on_conflict_do_nothing())


def queue_reply(db, *, key: str, recipient: str, body: str, calls: list[dict], now: datetime) -> None:
    """The API calls that answer one callback, as one outbox row of kind "reply" (sent at once, quiet
    hours or not) in the caller's transaction: the row ``scheduler.outbox.enqueue`` would write,
    without an ORM session on the callback's path."""
    _QUEUE.run(db, key=key[:200], recipient=recipient, body=body[:4096], payload={"wecom": calls}, now=now)


def store_reply(db, event_key: str, xml: str | None, now: datetime) -> None:
    """Stores the answer to a callback in the caller's transaction (``ctx.db`` in the core's hook)."""
    _STORE.run(db, event_key=event_key[:100], xml=xml, now=now)
    if random.randrange(PRUNE_ONE_IN) == 0:
        _PRUNE.run(db, before=now - REPLY_TTL)


@dataclass(frozen=True)
class Cached:
    xml: str | None


def cached_reply(engine, event_key: str) -> Cached | None:
    """The answer stored for a callback, if it was answered."""
    with engine.connect() as conn, conn.begin():
        row = _CACHED.first(conn, event_key=event_key[:100])
        return Cached(row["xml"]) if row is not None else None
