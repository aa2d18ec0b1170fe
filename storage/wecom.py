"""WeCom / 政务微信 (企业微信) storage: the directory's members matched to cadres, and the answers given
to callbacks, so a retried callback gets the same answer.

``WeComMember`` is one member of the organisation's directory as ``python -m bot wecom-sync`` last
read it (within the app's visible range): userid, name, mobile where the directory shows it, and
the cadre whose roster mobile matched. ``save_directory`` writes what a sync read and binds each
matched member's userid to the cadre (a ``ChatAccount`` on channel "wecom", bound_by "wecom"), so
a cadre who opens the app is known without a binding code. It changes nothing in the roster.

``WeComReply`` is the passive reply (plain XML) given to one callback, stored in the event's own
transaction by the channel's hook (``store_reply``): WeCom retries a callback it got no answer to
within 5 s, and the core drops the retry as a duplicate; ``cached_reply`` gives the same answer.
The access token is kept in ``wechat_access_token`` under the key ``wecom:<corp>:<agent>``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Optional

from sqlalchemy import bindparam, delete, insert, select as sa_select
from sqlmodel import Field, Session, SQLModel, select

from bot.core import binding
from storage import audit
from bot.core.phones import normalize_mobile
from storage.models import Cadre, ChatAccount, OutboxMessage, OutboxState, Unit
from storage.prepared import Prepared

CHANNEL = "wecom"
REPLY_TTL = timedelta(hours=1)  # WeCom's retries come within seconds
PRUNE_ONE_IN = 100


class WeComMember(SQLModel, table=True):
    """A member of the WeCom directory (通讯录) as the last sync read it, and the cadre matched by mobile."""

    __tablename__ = "wecom_member"

    userid: str = Field(max_length=64, primary_key=True)
    name: str = Field(max_length=64)
    mobile: Optional[str] = Field(default=None, max_length=20)
    departments: str = Field(default="", max_length=300)  # department names, "、"-joined
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id", index=True)
    synced_at: datetime


class WeComReply(SQLModel, table=True):
    """The passive reply given to one WeCom callback; None: the answer went through message/send."""

    __tablename__ = "wecom_reply"

    event_key: str = Field(max_length=100, primary_key=True)
    xml: Optional[str] = Field(default=None, max_length=4000)
    created_at: datetime = Field(index=True)


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


# -- the directory -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DirectoryMember:
    """One member as the directory API gives them."""

    userid: str
    name: str
    mobile: str | None
    departments: tuple[str, ...] = ()


@dataclass
class SyncReport:
    """What a sync found: who matched, who is only in the roster, who only in the directory."""

    matched: list[tuple[str, str, str]] = field(default_factory=list)  # (cadre name, unit, userid)
    roster_only: list[tuple[str, str]] = field(default_factory=list)  # (cadre name, unit)
    directory_only: list[tuple[str, str]] = field(default_factory=list)  # (member name, userid)
    no_mobile: list[tuple[str, str]] = field(default_factory=list)  # (member name, userid): 绑定码 as fallback
    bound: int = 0  # accounts newly bound (or moved to this userid)


def save_directory(session: Session, members: Iterable[DirectoryMember], now: datetime) -> SyncReport:
    """Stores the members read, matches them to active cadres by mobile and binds the matched ones
    (each new binding in the audit log)."""
    cadres = {c.mobile: c for c in session.exec(select(Cadre).where(Cadre.active == True)).all()}  # noqa: E712
    units = {u.id: u.name for u in session.exec(select(Unit)).all()}
    accounts = {a.external_user_id: a for a in session.exec(select(ChatAccount)
                                                            .where(ChatAccount.channel == CHANNEL)).all()}
    report = SyncReport()
    seen_cadres: set[int] = set()
    for member in members:
        mobile = normalize_mobile(member.mobile or "") if member.mobile else None
        cadre = cadres.get(mobile) if mobile else None
        row = session.get(WeComMember, member.userid)
        if row is None:
            row = WeComMember(userid=member.userid, name=member.name[:64], synced_at=now)
        row.name, row.mobile, row.synced_at = member.name[:64], mobile, now
        row.departments = "、".join(member.departments)[:300]
        row.cadre_id = cadre.id if cadre else None
        session.add(row)
        if cadre is None:
            (report.directory_only if mobile else report.no_mobile).append((member.name, member.userid))
            continue
        seen_cadres.add(cadre.id)
        report.matched.append((cadre.name, units.get(cadre.unit_id, ""), member.userid))
        account = accounts.get(member.userid)
        if account is None or account.cadre_id != cadre.id:
            binding.bind(session, cadre, CHANNEL, member.userid, "wecom", now)
            audit.record(session, at=now, actor="cli:wecom-sync", action="binding.directory",
                         target=f"cadre:{cadre.id}", channel=CHANNEL, detail=f"userid {member.userid}, mobile matched")
            report.bound += 1
    for cadre in cadres.values():
        if cadre.id not in seen_cadres:
            report.roster_only.append((cadre.name, units.get(cadre.unit_id, "")))
    report.roster_only.sort(key=lambda item: (item[1], item[0]))
    return report
