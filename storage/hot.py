"""The hot statements: every statement run on the fast path (storage/prepared.py), with its typed row.

These are the statements each chat event runs (or a step that every visit takes): the event's
bookkeeping (its key, the dialogue row), the bound cadre, a cadre's households and progress, the
visit's 回头看 (look back), and the WeChat channel's interaction and cached-answer rows. Each one is
declared here once, with

- a row type (a NamedTuple, or a frozen dataclass where the row is handed around as a domain
  object: ``BoundCadre``, ``HouseholdStatus``), so callers write ``row.flow``, never ``row["flow"]``;
- a small named function that runs it (``start_event(conn, channel, user_id, key) -> EventStart | None``),
  which is what callers import.

``_statement`` registers each in ``STATEMENTS``; ``tests/test_hot_parity.py`` runs every registered
statement both ways (here and through ``Connection.execute``) and fails for one it has no case
for, so a new statement cannot skip the comparison. A statement the fast path cannot run (an
expanding ``IN``, a bind rendered at execution, a Python-side column default) is refused when this
module is imported (``prepared.UnsupportedStatement``): write such a query with plain SQLAlchemy
outside this module.

``db`` below is the event's Connection, or a Session (flushed first, so its writes are seen).
Column types convert here as they do in SQLAlchemy: a dialogue row or a kept answer that carries a
phone number is sealed by its column's type (storage/crypto.py ``SealedJSON``) on both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (Boolean, and_, bindparam, cast, delete, exists, func, insert, literal_column, or_, select,
                        true, update)

from storage.models import (Cadre, ChatAccount, DialogueState, EverydayContact, Household, Problem, ProblemEvent,
                            ProblemStatus, OutboxMessage, ProcessedInbound, ServiceObject, Visit, VisitFlag, WeChatUser)
from storage.prepared import Prepared

STATEMENTS: dict[str, Prepared] = {}


def _statement(name: str, stmt, row: type | None = None, **options) -> Prepared:
    if name in STATEMENTS:
        raise ValueError(f"hot statement {name!r} declared twice")
    prepared = STATEMENTS[name] = Prepared(stmt, row, **options)
    return prepared


_state, _events = DialogueState.__table__, ProcessedInbound.__table__
_cadre, _account = Cadre.__table__, ChatAccount.__table__
_h, _v, _p = Household.__table__, Visit.__table__, Problem.__table__
_sv, _ec = ServiceObject.__table__, EverydayContact.__table__
_users = WeChatUser.__table__


# -- the event's bookkeeping (bot/core/engine.py) -------------------------------------------------

_CREATE_STATE = _statement("create_state", lambda insert: insert(_state).values(
    channel=bindparam("channel"), external_user_id=bindparam("user_id"), flow=None, step=None,
    data=bindparam("data", type_=_state.c.data.type), version=0,
    updated_at=bindparam("updated_at", type_=_state.c.updated_at.type)).on_conflict_do_nothing())
# The version check that makes a lost race visible (the row changed under us).
_SAVE_STATE = _statement("save_state", update(_state)
                         .where(_state.c.channel == bindparam("b_channel"),
                                _state.c.external_user_id == bindparam("b_user"),
                                _state.c.version == bindparam("b_version"))
                         .values(flow=bindparam("flow"), step=bindparam("step"),
                                 data=bindparam("data", type_=_state.c.data.type), version=bindparam("version"),
                                 updated_at=bindparam("updated_at", type_=_state.c.updated_at.type)))


_CONFIRM_ANSWER = _statement("confirm_answer", update(_events).where(
    _events.c.channel == bindparam("b_channel"), _events.c.event_key == bindparam("b_event_key"),
    _events.c.delivered_at.is_(None)).values(delivered_at=bindparam("now", type_=_events.c.delivered_at.type)))


def confirm_answer(db, channel: str, event_key: str, now: datetime) -> int:
    """Marks the event's answer delivered (once: a later confirmation keeps the first time)."""
    return _CONFIRM_ANSWER.run(db, b_channel=channel, b_event_key=event_key, now=now)


def create_state(db, channel: str, user_id: str, now: datetime) -> int:
    """An empty dialogue row for the user unless one exists; the number of rows made (0 or 1)."""
    return _CREATE_STATE.run(db, channel=channel, user_id=user_id, data={}, updated_at=now)


def save_state(db, channel: str, user_id: str, *, expected_version: int, flow: str | None, step: str | None,
               data: dict[str, Any], version: int, now: datetime) -> int:
    """Saves the dialogue if its row still has ``expected_version``; the number of rows changed (0: lost a race)."""
    return _SAVE_STATE.run(db, b_channel=channel, b_user=user_id, b_version=expected_version, flow=flow, step=step,
                           data=data, version=version, updated_at=now)


# -- the bound cadre (bot/core/binding.py) ---------------------------------------------------------

@dataclass(frozen=True)
class BoundCadre:
    """The cadre bound to the sender as read when the event began: Cadre's columns, read-only.

    The dialogue context holds this one type (``ctx.cadre``). Code that changes the cadre loads
    the ORM row itself (``session.get(Cadre, ctx.cadre.id)``).
    """

    id: int
    name: str
    unit_id: int
    mobile: str
    role: str
    post: str | None
    duties: str | None
    active: bool
    digests_muted: bool

    @classmethod
    def of(cls, cadre: Cadre) -> "BoundCadre":
        """The read-only view of an ORM cadre (one just bound, say)."""
        return cls(*(getattr(cadre, name) for name in cls.__dataclass_fields__))


_BOUND_CADRE = _statement("bound_cadre", select(*(_cadre.c[name] for name in BoundCadre.__dataclass_fields__))
                          .join(_account, _account.c.cadre_id == _cadre.c.id)
                          .where(_account.c.channel == bindparam("channel"),
                                 _account.c.external_user_id == bindparam("user_id"), _cadre.c.active == true()),
                          BoundCadre)


def bound_cadre(db, channel: str, user_id: str) -> BoundCadre | None:
    """The active cadre (channel, user_id) is bound to."""
    return _BOUND_CADRE.first(db, channel=channel, user_id=user_id)


# -- one event's first and last statement (bot/core/unit_of_work.py) --------------------------------

class EventStart(NamedTuple):
    """What an event starts from, in one statement: the user's dialogue row (locked on PostgreSQL),
    whether the event's key was recorded before and the answer kept with it, and the bound cadre."""

    flow: str | None
    step: str | None
    data: dict[str, Any]
    version: int
    seen: str | None  # the event's channel when its key is recorded already (a redelivery)
    answer: dict[str, Any] | None
    delivered_at: datetime | None
    cadre_id: int | None  # the active bound cadre's columns (BoundCadre), None when there is none
    cadre_name: str | None
    cadre_unit_id: int | None
    cadre_mobile: str | None
    cadre_role: str | None
    cadre_post: str | None
    cadre_duties: str | None
    cadre_active: bool | None
    cadre_digests_muted: bool | None

    def cadre(self) -> BoundCadre | None:
        return None if self.cadre_id is None else BoundCadre(*self[7:])


def _start_event(lock: bool):
    stmt = (select(
        _state.c.flow, _state.c.step, _state.c.data, _state.c.version,
        _events.c.channel.label("seen"), _events.c.answer, _events.c.delivered_at,
        *(_cadre.c[name].label(f"cadre_{name}") for name in BoundCadre.__dataclass_fields__))
        .select_from(_state
                     .outerjoin(_events, and_(_events.c.channel == _state.c.channel,
                                              _events.c.event_key == bindparam("event_key")))
                     .outerjoin(_account, and_(_account.c.channel == _state.c.channel,
                                               _account.c.external_user_id == _state.c.external_user_id))
                     .outerjoin(_cadre, and_(_cadre.c.id == _account.c.cadre_id, _cadre.c.active == true())))
        .where(_state.c.channel == bindparam("channel"), _state.c.external_user_id == bindparam("user_id")))
    return stmt.with_for_update(of=_state) if lock else stmt


_START_EVENT = _statement("start_event", _start_event(lock=True), EventStart)
# The same without the row lock: the asyncpg path's first read, outside a transaction (unit_of_work).
_START_EVENT_UNLOCKED = _statement("start_event_unlocked", _start_event(lock=False), EventStart)


class VersionRow(NamedTuple):
    version: int


_LOCK_STATE = _statement("lock_state", select(_state.c.version).where(
    _state.c.channel == bindparam("channel"), _state.c.external_user_id == bindparam("user_id"))
    .with_for_update(), VersionRow)


def lock_state(db, channel: str, user_id: str) -> int | None:
    """Locks the user's dialogue row (FOR UPDATE on PostgreSQL) and gives its version; None: no row."""
    row = _LOCK_STATE.first(db, channel=channel, user_id=user_id)
    return None if row is None else row.version


# The event's key and its answer, in one statement at the end of its unit of work; no row is inserted
# when a redelivery of the same event committed first (PostgreSQL, another process). Its rowcount says
# which (0 or 1 on both databases): a RETURNING clause read back cost SQLite 38 K instructions an event.
_RECORD_ANSWER = _statement("record_answer", lambda insert: insert(_events).values(
    channel=bindparam("channel"), event_key=bindparam("event_key"),
    created_at=bindparam("created_at", type_=_events.c.created_at.type),
    answer=bindparam("answer", type_=_events.c.answer.type))
    .on_conflict_do_nothing())


class EventFinish(NamedTuple):
    saved: int  # dialogue rows saved (0: not asked to, or the version had changed)
    recorded: int  # 0: the key was recorded already (a redelivery another process committed first)
    confirmed: int  # earlier answers marked delivered
    unchanged: int  # 1: the dialogue row was still the version read (0: nothing saved or recorded)


def _finish_event(insert):
    """PostgreSQL: the event's last writes in one statement, a WITH of a row lock and three writes,
    where they were three round trips. In order:

    - ``unchanged``: the dialogue row locked, if it is still the version read (``s_expected``). Under
      READ COMMITTED the lock waits for a transaction that holds the row and then reads its newest
      version, so a change another process committed meanwhile is seen here, not overwritten;
    - ``recorded``: the event's key with its answer, only if ``unchanged`` found the row (and unless
      the key is there already: a redelivery another process committed first);
    - ``saved``: the dialogue as the step left it (``s_save``), only if the key was recorded;
    - ``confirmed``: an earlier event's answer marked delivered (its own row, true whatever else).

    So the statement is whole on its own: run outside a transaction (the asyncpg path's events that
    wrote nothing before it, unit_of_work), it saves and records both or neither. Inside one (the row
    locked since the event began) ``unchanged`` always finds the row. SQLite takes no writes in a WITH;
    there ``finish_event`` runs the statements, each a call in the process. No parameter is named as
    a column: SQLAlchemy's own execution (the parity test) would add such a parameter to the SET of
    an UPDATE in the WITH. The INSERT's values are cast: in an INSERT … SELECT, PostgreSQL does not
    take a parameter's type from the column it goes to."""
    one = literal_column("1")
    where_user = (_state.c.channel == bindparam("s_channel"), _state.c.external_user_id == bindparam("s_user"),
                  _state.c.version == bindparam("s_expected"))
    unchanged = select(one.label("one")).select_from(_state).where(*where_user).with_for_update().cte("unchanged")
    columns = ("channel", "event_key", "created_at", "answer")
    values = select(*(cast(bindparam(f"r_{name}", type_=_events.c[name].type), _events.c[name].type)
                      for name in columns)).select_from(unchanged)
    recorded = (insert(_events).from_select(list(columns), values)
                .on_conflict_do_nothing().returning(one).cte("recorded"))
    saved = (update(_state).where(*where_user, bindparam("s_save", type_=Boolean),
                                  select(one).select_from(recorded).exists())
             .values(flow=bindparam("s_flow"), step=bindparam("s_step"),
                     data=bindparam("s_data", type_=_state.c.data.type), version=bindparam("s_version"),
                     updated_at=bindparam("s_at", type_=_state.c.updated_at.type))
             .returning(one).cte("saved"))
    confirmed = (update(_events).where(_events.c.channel == bindparam("c_channel"),
                                       _events.c.event_key == bindparam("c_key"),
                                       _events.c.delivered_at.is_(None))
                 .values(delivered_at=bindparam("c_at", type_=_events.c.delivered_at.type))
                 .returning(one).cte("confirmed"))
    return select(*(select(func.count()).select_from(cte).scalar_subquery().label(name)
                    for name, cte in (("saved", saved), ("recorded", recorded), ("confirmed", confirmed),
                                      ("unchanged", unchanged))))


_FINISH_EVENT = _statement("finish_event", _finish_event, EventFinish, dialects=("postgresql",))


def finish_event(db, channel: str, user_id: str, event_key: str, answer: dict[str, Any] | None, now: datetime, *,
                 version: int, save: tuple[str | None, str | None, dict[str, Any]] | None,
                 confirm: tuple[str, str, datetime] | None) -> EventFinish:
    """An event's last writes, if the dialogue row is still ``version`` (the version the event read):
    the dialogue saved if ``save`` (flow, step, data; as the next version), the event's key with its
    answer (unless recorded already), and ``confirm`` (channel, key, when), an earlier event's answer
    marked delivered. One statement on PostgreSQL, whole on its own (``_finish_event``); on SQLite,
    where the event's transaction holds the database, the statements, and nothing recorded after a
    lost race."""
    if db.dialect.name == "postgresql":
        flow, step, data = save if save is not None else (None, None, {})
        c_channel, c_key, c_at = confirm if confirm is not None else (None, None, None)
        return _FINISH_EVENT.first(db, s_channel=channel, s_user=user_id, s_expected=version,
                                   s_save=save is not None, s_flow=flow, s_step=step, s_data=data,
                                   s_version=version + 1, s_at=now, r_channel=channel, r_event_key=event_key,
                                   r_created_at=now, r_answer=answer, c_channel=c_channel, c_key=c_key, c_at=c_at)
    saved = 0
    if save is not None:
        flow, step, data = save
        saved = save_state(db, channel, user_id, expected_version=version, flow=flow, step=step, data=data,
                           version=version + 1, now=now)
        if not saved:
            return EventFinish(0, 0, 0, 0)
    recorded = int(record_answer(db, channel, event_key, answer, now))
    confirmed = confirm_answer(db, *confirm) if confirm is not None and recorded else 0
    return EventFinish(saved, recorded, confirmed, 1)


def start_event(db, channel: str, user_id: str, event_key: str | None, *, lock: bool = True) -> EventStart | None:
    """The event's starting point (see ``EventStart``); None when the user has no dialogue row yet.
    ``lock=False``: the row read without locking it (outside a transaction)."""
    return (_START_EVENT if lock else _START_EVENT_UNLOCKED).first(db, channel=channel, user_id=user_id,
                                                                  event_key=event_key)


def record_answer(db, channel: str, event_key: str, answer: dict[str, Any] | None, now: datetime) -> bool:
    """Records the event's key with its answer; False if the key was recorded already."""
    return _RECORD_ANSWER.run(db, channel=channel, event_key=event_key, created_at=now, answer=answer) == 1


# -- households and progress (bot/core/progress.py) ------------------------------------------------

class HouseholdStatus(NamedTuple):
    id: int
    name: str
    address: str
    visited: bool  # this half-year, by this cadre


class ProgressRow(NamedTuple):
    assigned: int
    visited: int  # distinct active households of the cadre's, visited by the cadre this half-year
    contacts: int  # everyday contacts this half-year
    objects: int  # active service objects


def progress_counts(cadre_id, half) -> list:
    """The four counts of a cadre's progress as scalar subqueries, for one cadre (``cadre_id`` a
    bind) or correlated with an outer query over cadres (``cadre_id`` = ``Cadre.id``): one
    definition for ``/progress`` and ``/unit``."""
    return [
        select(func.count()).where(_h.c.cadre_id == cadre_id, _h.c.active == true())
        .scalar_subquery().label("assigned"),
        select(func.count(func.distinct(_v.c.household_id))).select_from(_v.join(_h, _h.c.id == _v.c.household_id))
        .where(_v.c.cadre_id == cadre_id, _v.c.half == half, _h.c.active == true(), _h.c.cadre_id == _v.c.cadre_id,
               _v.c.disputed_at.is_(None))  # a visit its household denied counts only once ruled to stand
        .scalar_subquery().label("visited"),
        select(func.count()).where(_ec.c.cadre_id == cadre_id, _ec.c.half == half)
        .scalar_subquery().label("contacts"),
        select(func.count()).where(_sv.c.cadre_id == cadre_id, _sv.c.active == true())
        .scalar_subquery().label("objects"),
    ]


_HOUSEHOLDS = _statement("households_with_status", select(
    _h.c.id, _h.c.name, _h.c.address,
    exists().where(_v.c.household_id == _h.c.id, _v.c.cadre_id == bindparam("cadre_id"),
                   _v.c.half == bindparam("half"), _v.c.disputed_at.is_(None)).label("visited"))
    .where(_h.c.cadre_id == bindparam("cadre_id"), _h.c.active == true())
    .order_by(literal_column("visited"), _h.c.address, _h.c.name), HouseholdStatus)
_PROGRESS = _statement("cadre_progress", select(*progress_counts(bindparam("cadre_id"), bindparam("half"))),
                       ProgressRow)


def households_with_status(db, cadre_id: int, half: str) -> list[HouseholdStatus]:
    """The cadre's active households, unvisited this half-year first, then by address."""
    return _HOUSEHOLDS.rows(db, cadre_id=cadre_id, half=half)


def cadre_progress(db, cadre_id: int, half: str) -> ProgressRow:
    """One cadre's progress this half-year, in one statement."""
    return _PROGRESS.first(db, cadre_id=cadre_id, half=half)


# -- the visit's household and 回头看 (bot/core/flows/visit.py) ------------------------------------

class HouseholdRow(NamedTuple):
    id: int
    name: str
    address: str
    area_kind: str
    area_name: str | None
    cadre_id: int
    active: bool


class LookbackRow(NamedTuple):
    category: str
    content: str
    status: str
    created_at: datetime


class CountRow(NamedTuple):
    n: int


_HOUSEHOLD = _statement("household", select(_h.c.id, _h.c.name, _h.c.address, _h.c.area_kind, _h.c.area_name,
                                            _h.c.cadre_id, _h.c.active).where(_h.c.id == bindparam("id")),
                        HouseholdRow)
_LOOKBACK = _statement("lookback", select(_p.c.category, _p.c.content, _p.c.status, _p.c.created_at)
                       .where(_p.c.household_id == bindparam("household_id")).order_by(_p.c.created_at, _p.c.id),
                       LookbackRow)
_OPEN_NEARBY = _statement("open_nearby", select(func.count().label("n"))
                          .select_from(_p.join(_h, _h.c.id == _p.c.household_id))
                          .where(_h.c.area_name == bindparam("area_name"), _h.c.id != bindparam("household_id"),
                                 or_(*(_p.c.status == status for status in (
                                     ProblemStatus.NEW, ProblemStatus.ASSIGNED, ProblemStatus.IN_PROGRESS)))),
                          CountRow)


_pe = ProblemEvent.__table__
_ADD_PROBLEM_EVENT = _statement("add_problem_event", insert(_pe).values(
    problem_id=bindparam("problem_id"), at=bindparam("at", type_=_pe.c.at.type), actor_cadre_id=bindparam("actor_cadre_id"),
    actor=bindparam("actor"), action=bindparam("action"), from_status=bindparam("from_status"),
    to_status=bindparam("to_status"), note=bindparam("note")))


def add_problem_event(db, *, problem_id: int, at: datetime, actor_cadre_id: int | None, actor: str, action: str,
                      from_status: str | None, to_status: str, note: str | None) -> None:
    """One entry of a ledger item's history, for a caller that needs no ProblemEvent object (its id):
    an ORM object flushed with the session cost about 1.2 M instructions, a visit's confirmation
    included (bench/README.md)."""
    _ADD_PROBLEM_EVENT.run(db, problem_id=problem_id, at=at, actor_cadre_id=actor_cadre_id, actor=actor, action=action,
                           from_status=from_status, to_status=to_status, note=note)


def household(db, household_id: int) -> HouseholdRow | None:
    return _HOUSEHOLD.first(db, id=household_id)


def lookback(db, household_id: int) -> list[LookbackRow]:
    """What a household raised before, oldest first (回头看)."""
    return _LOOKBACK.rows(db, household_id=household_id)


def open_nearby(db, area_name: str, household_id: int) -> int:
    """Items still open that other households of the same village or community raised."""
    return _OPEN_NEARBY.first(db, area_name=area_name, household_id=household_id).n


# -- the WeChat channel's rows (handlers/wechat/channel.py) ----------------------------------------

def _interaction_upsert(insert):
    statement = insert(_users).values(openid=bindparam("openid"),
                                      last_inbound_at=bindparam("now", type_=_users.c.last_inbound_at.type))
    return statement.on_conflict_do_update(
        index_elements=["openid"], set_={"last_inbound_at": statement.excluded.last_inbound_at},
        where=_users.c.last_inbound_at < statement.excluded.last_inbound_at)


_NOTE_INTERACTION = _statement("wechat_note_interaction", _interaction_upsert)


def note_wechat_interaction(db, openid: str, now: datetime) -> None:
    """Notes that the follower wrote, clicked or scanned now (customer-service messages may follow for 48 h)."""
    _NOTE_INTERACTION.run(db, openid=openid, now=now)


# -- the WeCom channel's answers that go by the send API (handlers/wecom/channel.py) ------------------

class OutboxKeyRow(NamedTuple):
    idempotency_key: str


_outbox = OutboxMessage.__table__
_QUEUE_REPLY = _statement("queue_outbox_reply", lambda insert: insert(_outbox).values(
    idempotency_key=bindparam("key"), kind="reply", channel=bindparam("channel"), recipient=bindparam("recipient"),
    body=bindparam("body"), payload=bindparam("payload", type_=_outbox.c.payload.type),
    state=bindparam("state"), attempts=bindparam("attempts"), interrupted=bindparam("interrupted"),
    next_attempt_at=bindparam("now", type_=_outbox.c.next_attempt_at.type),
    created_at=bindparam("created_at", type_=_outbox.c.created_at.type),
    claimed_by=bindparam("claimed_by"), claimed_until=bindparam("claimed_until", type_=_outbox.c.claimed_until.type),
    in_flight_at=bindparam("in_flight_at", type_=_outbox.c.in_flight_at.type))
    .on_conflict_do_nothing().returning(_outbox.c.idempotency_key), OutboxKeyRow)

def queue_outbox_reply(db, *, channel: str, key: str, recipient: str, body: str, payload: dict, now: datetime,
                       claimed_by: str | None = None, claimed_until: datetime | None = None) -> bool:
    """One outbox row of kind "reply" (sent at once, quiet hours or not), unless its key exists (False):
    the row ``bot.core.outbox.enqueue`` writes, without an ORM session on a callback's path. With
    ``claimed_by``, the row is written already claimed by that sender until ``claimed_until`` and in
    flight (the web process's reply pump sends it from memory once the transaction commits; should
    the process die first, the outbox's worker sends it after the lease, as a possible repeat)."""
    rows = _QUEUE_REPLY.rows(db, channel=channel, key=key[:200], recipient=recipient, body=body[:4096],
                             payload=payload, state="pending", attempts=0, interrupted=0, now=now, created_at=now,
                             claimed_by=claimed_by, claimed_until=claimed_until if claimed_by else None,
                             in_flight_at=now if claimed_by else None)
    return bool(rows)


_MARK_REPLY_SENT = _statement("mark_reply_sent", update(_outbox)
                              .where(_outbox.c.idempotency_key == bindparam("key"),
                                     _outbox.c.claimed_by == bindparam("worker"), _outbox.c.state == "pending")
                              .values(state="sent", sent_at=bindparam("now", type_=_outbox.c.sent_at.type),
                                      claimed_until=None, last_error=None, in_flight_at=None))


def mark_reply_sent(db, *, key: str, worker: str, now: datetime) -> int:
    """Marks sent the row of this key that ``worker`` still holds (a reply pump's delivery, recorded
    with a later callback's transaction); 0 when another sender holds it now."""
    return _MARK_REPLY_SENT.run(db, key=key, worker=worker, now=now)


# -- a cadre's visits of the half-year, for the signs of 走过场 (bot/core/evidence.py) ---------------------

class CadreVisitRow(NamedTuple):
    id: int
    visited_at: datetime
    survey: dict[str, Any]
    latitude: float | None
    longitude: float | None
    location_note: str | None
    home_latitude: float | None  # the household's coordinates
    home_longitude: float | None


_CADRE_VISITS = _statement("cadre_visits", select(
    _v.c.id, _v.c.visited_at, _v.c.survey, _v.c.latitude, _v.c.longitude, _v.c.location_note,
    _h.c.latitude.label("home_latitude"), _h.c.longitude.label("home_longitude"))
    .select_from(_v.join(_h, _h.c.id == _v.c.household_id))
    .where(_v.c.cadre_id == bindparam("cadre_id"), _v.c.half == bindparam("half"))
    .order_by(_v.c.visited_at, _v.c.id), CadreVisitRow)


def cadre_visits(db, cadre_id: int, half: str) -> list[CadreVisitRow]:
    """The cadre's visits of the half-year, oldest first, with where each was and where its household is."""
    return _CADRE_VISITS.rows(db, cadre_id=cadre_id, half=half)


_flag = VisitFlag.__table__
_ADD_VISIT_FLAG = _statement("add_visit_flag", insert(_flag).values(
    visit_id=bindparam("visit_id"), cadre_id=bindparam("cadre_id"), kind=bindparam("kind"), reason=bindparam("reason"),
    created_at=bindparam("created_at", type_=_flag.c.created_at.type)))


def add_visit_flag(db, *, visit_id: int, cadre_id: int, kind: str, reason: str, now: datetime) -> None:
    """One flag of a visit being confirmed (an ORM object each, flushed, cost a visit's confirmation
    about 1.5 M instructions a flag: bench/README.md)."""
    _ADD_VISIT_FLAG.run(db, visit_id=visit_id, cadre_id=cadre_id, kind=kind, reason=reason, created_at=now)

