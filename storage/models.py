"""The tables: roster (单位, 干部, 联户, 服务对象), chat bindings, dialogue state, visits and problems.

Datetime columns take and return aware UTC times (SQLModel's UTCDateTime), on SQLite as on
PostgreSQL; local dates (Asia/Shanghai) are derived where shown. Enumerations (roles, statuses,
sources) are ``StrEnum``s stored in plain string columns: a member *is* its stored string (``Role.CADRE
== "cadre"``), rows read back compare equal to the members, and adding a value needs no migration. Alembic migrations in storage/migrations create these tables; ``create_all`` is not
used outside tests.

Citizens' phone numbers are ``EncryptedString`` columns, each with a ``*_hash`` column beside it that
the ORM keeps (storage/crypto.py): read and written in clear here, stored encrypted. Staff mobiles
(``Cadre.mobile``, ``WeComMember.mobile``) identify and bind staff and stay in clear.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum, nonmember
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlmodel import Field, SQLModel

from storage.crypto import HASH_LENGTH, EncryptedString, SealedBytes, SealedJSON, SealedText, keep_hash


class Role(StrEnum):
    """Cadre roles, as imported from the roster's 角色 column."""

    CADRE = "cadre"  # 干部
    SUPERVISOR = "supervisor"  # 主管: oversees their own unit (and every unit named in SUPERVISION_UNITS)
    OFFICE = "office"  # 作风办: the work-style office, oversees every unit by its role
    ADMIN = "admin"  # 管理员
    ALL = nonmember((CADRE, SUPERVISOR, OFFICE, ADMIN))  # kept for callers; ``tuple(Role)`` is the same
    HEADS = nonmember((SUPERVISOR, OFFICE))  # who receive digests, reminders and escalations
    OVERSEERS = nonmember((SUPERVISOR, OFFICE, ADMIN))  # who may act as a supervisor on the ledger


class AreaKind(StrEnum):
    """Whether a household lives in a village (村) or an urban community (居/社区)."""

    VILLAGE = "村"
    COMMUNITY = "居"


class ProblemStatus(StrEnum):
    """Lifecycle states of a ledger item; the ledger issue adds the transitions."""

    NEW = "new"  # 待交办
    SOLVED_ON_SPOT = "solved"  # 当场解决
    ASSIGNED = "assigned"  # 已交办
    IN_PROGRESS = "in_progress"  # 整改中
    CLOSED = "closed"  # 已办结 / 销号
    ANSWERED = "answered"  # 已回访


class ProblemSource(StrEnum):
    """Where a ledger item came from; ``bot.core.ledger.open_problem`` takes one of these."""

    VISIT = "visit"  # 入户走访
    CONTACT = "contact"  # 日常走访
    SERVICE_OBJECT = "service_object"  # 联系服务对象
    RATING = "rating"  # 差评
    COMPLAINT = "complaint"  # /report (三个一)
    HOTLINE = "hotline"  # 12345 / 89000


class Unit(SQLModel, table=True):
    """单位: a city department or a township (市直部门 / 镇街区)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    kind: Optional[str] = Field(default=None, max_length=20)
    active: bool = True


class Cadre(SQLModel, table=True):
    """干部: a member of staff who visits households; also supervisors and admins."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    mobile: str = Field(max_length=20, unique=True)
    role: str = Field(default=Role.CADRE, max_length=20)
    post: Optional[str] = Field(default=None, max_length=100)  # 职务
    duties: Optional[str] = Field(default=None, max_length=300)  # 职责
    active: bool = True
    # Set by the cadre in chat (digests only, never deadline reminders); the roster import leaves it alone.
    digests_muted: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})


class Household(SQLModel, table=True):
    """联户: a household assigned to a cadre for the twice-yearly visits (包村(居)联户)."""

    __table_args__ = (UniqueConstraint("address", "name", name="uq_household_address_name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    address: str = Field(max_length=200)
    name: str = Field(max_length=50)
    phone: str = Field(sa_column=Column(EncryptedString(), nullable=False))  # encrypted at rest (storage/crypto.py)
    phone_hash: Optional[str] = Field(default=None, max_length=HASH_LENGTH)  # keyed hash, kept by the ORM
    area_kind: str = Field(max_length=4)  # 村 or 居
    area_name: Optional[str] = Field(default=None, max_length=100)  # the village or community
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    active: bool = True
    # Where the household lives, WGS-84 (roster columns 经度/纬度, or learned from its first visit that
    # the household confirmed with a location): "surveyed" or "learned".
    latitude: Optional[float] = None
    longitude: Optional[float] = None
    coord_source: Optional[str] = Field(default=None, max_length=10)


class ServiceObject(SQLModel, table=True):
    """服务对象: a person or business a cadre keeps in contact with (at least ten each)."""

    # No object twice within a unit: the same name and number (its keyed hash; the token differs at every write).
    __table_args__ = (UniqueConstraint("unit_id", "name", "phone_hash", name="uq_service_object_unit_name_phone_hash"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    workplace: str = Field(max_length=200)  # 工作单位(住址)
    phone: str = Field(sa_column=Column(EncryptedString(), nullable=False))  # encrypted at rest
    phone_hash: Optional[str] = Field(default=None, max_length=HASH_LENGTH)
    note: Optional[str] = Field(default=None, max_length=200)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    active: bool = True


class ChatAccount(SQLModel, table=True):
    """A chat account (channel + external user id) bound to a cadre."""

    __table_args__ = (UniqueConstraint("channel", "external_user_id", name="uq_chat_account"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    channel: str = Field(max_length=20)
    external_user_id: str = Field(max_length=100)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    bound_at: datetime
    bound_by: str = Field(max_length=20)  # "code", "contact" or "console"
    unreachable_at: Optional[datetime] = None  # the user blocked the bot (403); nothing is sent any more


class BindingCode(SQLModel, table=True):
    """A one-time code that binds whoever sends it to a cadre; only its hash is kept."""

    id: Optional[int] = Field(default=None, primary_key=True)
    code_hash: str = Field(max_length=64, unique=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    created_at: datetime
    expires_at: datetime
    used_at: Optional[datetime] = None
    used_by: Optional[str] = Field(default=None, max_length=130)


class DialogueState(SQLModel, table=True):
    """Where one chat user is in a conversation; every change bumps ``version``."""

    __tablename__ = "dialogue_state"

    channel: str = Field(max_length=20, primary_key=True)
    external_user_id: str = Field(max_length=100, primary_key=True)
    flow: Optional[str] = Field(default=None, max_length=40)
    step: Optional[str] = Field(default=None, max_length=60)
    # Sealed whole while it holds a phone number the user typed (storage/crypto.py SealedJSON).
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(SealedJSON, nullable=False))
    version: int = 0
    updated_at: datetime


class ProcessedInbound(SQLModel, table=True):
    """Inbound events already handled (a Telegram update id, a WeChat MsgId), with the answer given, so a
    redelivery changes nothing and gets the same answer if it was never delivered."""

    __tablename__ = "processed_inbound"

    channel: str = Field(max_length=20, primary_key=True)
    event_key: str = Field(max_length=100, primary_key=True)
    created_at: datetime = Field(index=True)
    # Sealed whole when it shows a phone number (a call-back list, a spot-check call).
    answer: Optional[dict[str, Any]] = Field(default=None, sa_column=Column(SealedJSON, nullable=True))
    delivered_at: Optional[datetime] = None  # the channel confirmed sending the answer


class Visit(SQLModel, table=True):
    """集中入户走访: one visit with its 四个一 (card, survey, difficulty, leaflet)."""

    __table_args__ = (Index("ix_visit_cadre_half", "cadre_id", "half"),
                      # The console's households-visited count looks visits up by household (covering).
                      Index("ix_visit_household_cadre_half", "household_id", "cadre_id", "half"),
                      # The evidence per cadre of a half-year (bot/core/evidence.py summary) counts from the
                      # index alone: 0.23 s -> 0.02 s for the city's 50,000 visits of a half (bench/evidence.py).
                      Index("ix_visit_half_cadre_evidence", "half", "cadre_id", "evidence"))

    id: Optional[int] = Field(default=None, primary_key=True)
    cadre_id: int = Field(foreign_key="cadre.id")
    household_id: int = Field(foreign_key="household.id", index=True)
    half: str = Field(max_length=6)  # e.g. 2026H2
    visited_at: datetime
    card_left: bool
    survey: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    difficulty_category: Optional[str] = Field(default=None, max_length=20)
    difficulty_content: Optional[str] = Field(default=None, max_length=1000)
    difficulty_solved: Optional[bool] = None
    leaflet_given: bool
    photo_ref: Optional[str] = Field(default=None, max_length=300)
    latitude: Optional[float] = None
    longitude: Optional[float] = None
    channel: str = Field(max_length=20)
    # Evidence that the visit happened (bot/core/evidence.py), computed when it is confirmed and again
    # when the household confirms it: "confirmed", "location", "photo" or "none".
    evidence: str = Field(default="none", max_length=10, index=True, sa_column_kwargs={"server_default": "none"})
    location_accuracy: Optional[float] = None  # metres, as the phone reported it
    location_note: Optional[str] = Field(default=None, max_length=10)  # "forwarded", "typed": not evidence
    distance_m: Optional[float] = None  # from the household's coordinates
    photo_sha256: Optional[str] = Field(default=None, max_length=64)
    photo_phash: Optional[str] = Field(default=None, max_length=16, index=True)  # perceptual hash, hex
    photo_forwarded: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # 一事一评 (issue #11): the household rated this visit through its one-time service QR, which is
    # its own confirmation that the visit happened.
    household_confirmed_at: Optional[datetime] = None
    # 好差评 (issue #11): the household denied the visit on a spot-check call; it does not count until a
    # supervisor rules (disputed_at cleared when upheld, the visit stays out when the denial stands).
    disputed_at: Optional[datetime] = None


class VisitFlag(SQLModel, table=True):
    """A sign of a visit in name only (走过场) found when it was confirmed, with the reason shown to
    the supervisor. One row per visit and kind."""

    __tablename__ = "visit_flag"
    __table_args__ = (UniqueConstraint("visit_id", "kind"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    visit_id: int = Field(foreign_key="visit.id", index=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    kind: str = Field(max_length=20)  # same_photo, too_fast, burst, forwarded, far, same_answers
    reason: str = Field(max_length=300)
    created_at: datetime


class EverydayContact(SQLModel, table=True):
    """日常走访: a phone call, a holiday visit or a meeting outside the visit rounds."""

    __tablename__ = "everyday_contact"

    id: Optional[int] = Field(default=None, primary_key=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    household_id: Optional[int] = Field(default=None, foreign_key="household.id")
    kind: str = Field(max_length=20)  # phone / holiday / meeting / other
    note: Optional[str] = Field(default=None, max_length=1000)
    half: str = Field(max_length=6)
    contacted_at: datetime
    channel: str = Field(max_length=20)


class Problem(SQLModel, table=True):
    """A problem raised by a household, a contact, a rating or a complaint: one item of the 整改台账."""

    id: Optional[int] = Field(default=None, primary_key=True)
    source: str = Field(max_length=20)
    status: str = Field(default=ProblemStatus.NEW, max_length=20, index=True)
    category: str = Field(max_length=20)  # 问题类型
    content: str = Field(max_length=1000)
    household_id: Optional[int] = Field(default=None, foreign_key="household.id", index=True)
    visit_id: Optional[int] = Field(default=None, foreign_key="visit.id")
    raised_by_cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    unit_id: Optional[int] = Field(default=None, foreign_key="unit.id")  # the unit whose cadre took it in
    raiser_name: Optional[str] = Field(default=None, max_length=50)
    raiser_phone: Optional[str] = Field(default=None, sa_column=Column(EncryptedString(), nullable=True))
    raiser_phone_hash: Optional[str] = Field(default=None, max_length=HASH_LENGTH)
    created_at: datetime
    updated_at: datetime
    # The ledger (整改台账): who must fix it by when, and what came of it.
    service_object_id: Optional[int] = Field(default=None, foreign_key="serviceobject.id")
    remit: Optional[str] = Field(default=None, max_length=10)  # 行业领域 / 公共方面 (附件4)
    raiser_channel: Optional[str] = Field(default=None, max_length=20)  # the raiser's chat, to answer them
    raiser_user_id: Optional[str] = Field(default=None, max_length=100)
    responsible_unit_id: Optional[int] = Field(default=None, foreign_key="unit.id", index=True)
    responsible_a_id: Optional[int] = Field(default=None, foreign_key="cadre.id")  # A岗
    responsible_b_id: Optional[int] = Field(default=None, foreign_key="cadre.id")  # B岗
    assigned_by_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    assigned_at: Optional[datetime] = None
    deadline: Optional[date] = None  # 限时办结, a local date
    last_action_at: Optional[datetime] = None  # the responsible side's latest step
    b_asked_at: Optional[datetime] = None  # when B was asked because A had not acted
    result: Optional[str] = Field(default=None, max_length=1000)  # 办理结果, required to close (销号)
    closed_at: Optional[datetime] = None
    answer: Optional[str] = Field(default=None, max_length=500)  # what the raiser was told / said
    answered_at: Optional[datetime] = None
    reopened: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    hotline_status: Optional[str] = Field(default=None, max_length=200)  # 办理情况 as imported (附件5)
    note: Optional[str] = Field(default=None, max_length=200)  # 备注
    # 好差评 (issue #11): a 差评 about a supervisor, or about someone whose unit has no other supervisor,
    # is handled by the 作风办 alone (the unit's supervisors do not see it).
    to_office: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})


class ProblemEvent(SQLModel, table=True):
    """One step in a ledger item's life: who did what, when, from which state to which."""

    __tablename__ = "problem_event"

    id: Optional[int] = Field(default=None, primary_key=True)
    problem_id: int = Field(foreign_key="problem.id", index=True)
    at: datetime
    actor_cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    actor: str = Field(max_length=60)  # a name, "群众" or "系统"
    action: str = Field(max_length=20)
    from_status: Optional[str] = Field(default=None, max_length=20)
    to_status: str = Field(max_length=20)
    note: Optional[str] = Field(default=None, max_length=1000)


class SpotCheck(SQLModel, table=True):
    """电话随机访问: a completed visit drawn for a phone check, and what the call found."""

    __tablename__ = "spot_check"

    id: Optional[int] = Field(default=None, primary_key=True)
    visit_id: int = Field(foreign_key="visit.id", unique=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    half: str = Field(max_length=6)
    seed: int
    drawn_at: datetime
    outcome: str = Field(default="pending", max_length=20)  # pending / confirmed / not_reached / denied
    checked_by_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    checked_at: Optional[datetime] = None
    note: Optional[str] = Field(default=None, max_length=300)
    # 好差评 (issue #11): a denial disputes the visit until a supervisor rules: "visit_stands" (it counts
    # again) or "denial_stands" (it stays out of progress, forms and rankings).
    ruling: Optional[str] = Field(default=None, max_length=20)
    ruled_by_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    ruled_at: Optional[datetime] = None
    # Why the visit was drawn (bot/reports/spotcheck.py): "flags:<kinds>", "none", "photo" or "random";
    # None for rows drawn before the draw was weighted by evidence.
    reason: Optional[str] = Field(default=None, max_length=100)


class OutboxState(StrEnum):
    """Where an outbox row is in its delivery."""

    PENDING = "pending"  # waiting for its next_attempt_at
    SENT = "sent"
    DEAD = "dead"  # gave up after too many attempts; listed for the admin
    UNREACHABLE = "unreachable"  # the recipient blocked the bot; not retried


class OutboxMessage(SQLModel, table=True):
    """A message that is not the direct reply to a user's own message: reminders, digests, notices.

    Written in the same transaction as whatever caused it; ``idempotency_key`` (kind + subject +
    period + recipient) is unique, so a job run twice writes it once. A sender claims due rows
    (``claimed_until`` is a lease, so a crashed sender's rows come back) and marks each sent once.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "state", "next_attempt_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200, unique=True)
    kind: str = Field(max_length=40)
    channel: str = Field(max_length=20)
    recipient: str = Field(max_length=100)  # the channel's user id
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id", index=True)
    body: str = Field(sa_column=Column(SealedText, nullable=False))  # at most 4096 characters; sealed if it shows a phone
    # A WeCom reply's API calls carry its text: sealed like the body when they show a phone number.
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(SealedJSON, nullable=False))
    state: str = Field(default=OutboxState.PENDING, max_length=20)
    attempts: int = 0
    next_attempt_at: datetime
    claimed_until: Optional[datetime] = None
    claimed_by: Optional[str] = Field(default=None, max_length=60)
    last_error: Optional[str] = Field(default=None, max_length=500)
    created_at: datetime
    sent_at: Optional[datetime] = None
    # Set just before the send goes out, cleared with its result: a row whose claim lapsed with this
    # set was in flight when its sender died, and may reach the user twice (可能重复).
    in_flight_at: Optional[datetime] = None
    interrupted: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # sends cut off by a crash


class RateBudget(SQLModel, table=True):
    """A shared send budget (PostgreSQL): the earliest moment, in the database's clock (epoch
    seconds), at which the next send under ``key`` may go (scheduler.budget)."""

    __tablename__ = "rate_budget"

    key: str = Field(primary_key=True, max_length=200)
    next_free: float


class RateHit(SQLModel, table=True):
    """One counted request under a per-address limit shared by processes (PostgreSQL)."""

    __tablename__ = "rate_hit"
    __table_args__ = (Index("ix_rate_hit_key_at", "key", "at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(max_length=200)
    at: float


class OutboxAttachment(SQLModel, table=True):
    """A file sent with an outbox message (a digest's chart)."""

    __tablename__ = "outbox_attachment"

    id: Optional[int] = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="outbox.id", index=True)
    filename: str = Field(max_length=100)
    content_type: str = Field(max_length=255)  # an Excel workbook's is 65 characters
    content: bytes = Field(sa_column=Column(SealedBytes, nullable=False))  # sealed at rest: it may be a form


# ---------------------------------------------------------------------------------------------
# Citizen evaluation (干部作风评价二维码, 好差评)


class ServiceWindow(SQLModel, table=True):
    """窗口: a service window of a unit, rated like a cadre; its cadres on duty are in ``window_duty``."""

    __tablename__ = "service_window"
    __table_args__ = (UniqueConstraint("unit_id", "name", name="uq_service_window_unit_name"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    active: bool = True


class WindowDuty(SQLModel, table=True):
    """A cadre on duty at a service window (在岗干部), as the roster's 窗口 sheet lists them."""

    __tablename__ = "window_duty"

    window_id: int = Field(foreign_key="service_window.id", primary_key=True)
    cadre_id: int = Field(foreign_key="cadre.id", primary_key=True, index=True)


class TargetKind(StrEnum):
    """What an evaluation code rates."""

    CADRE = "cadre"
    WINDOW = "window"


class EvaluationCode(SQLModel, table=True):
    """The evaluation code (评价码) of one cadre or window: the signed token names ``id`` and ``version``.

    Revoking a lost card bumps ``version``: the old card's token no longer matches and is refused,
    and the next printed card carries the new version.
    """

    __tablename__ = "evaluation_code"
    __table_args__ = (UniqueConstraint("cadre_id", name="uq_evaluation_code_cadre"),
                      UniqueConstraint("window_id", name="uq_evaluation_code_window"))

    id: Optional[int] = Field(default=None, primary_key=True)
    target_kind: str = Field(max_length=10)
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    window_id: Optional[int] = Field(default=None, foreign_key="service_window.id")
    version: int = 1
    issued_at: datetime
    revoked_at: Optional[datetime] = None  # when the previous version was revoked


class Rating(SQLModel, table=True):
    """One citizen's rating (好差评) of a cadre or window: level 5 非常满意 … 1 非常不满意.

    One row per rater, target and local day: a second rating that day replaces the first.
    ``rater_key`` is a keyed hash of the channel's user id (or the web cookie), never the id itself.
    """

    __table_args__ = (UniqueConstraint("code_id", "rater_key", "rated_on", name="uq_rating_rater_day"),
                      Index("ix_rating_unit_time", "unit_id", "rated_at"),
                      Index("ix_rating_code_address_time", "code_id", "address_key", "rated_at"),
                      # The console's per-unit counts of a half-year read only this index (covering).
                      Index("ix_rating_unit_time_level", "unit_id", "rated_at", "level", "misuse"))

    id: Optional[int] = Field(default=None, primary_key=True)
    code_id: int = Field(foreign_key="evaluation_code.id")
    target_kind: str = Field(max_length=10)
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id", index=True)
    window_id: Optional[int] = Field(default=None, foreign_key="service_window.id", index=True)
    unit_id: int = Field(foreign_key="unit.id")  # the target's unit, for the per-unit view
    level: int
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    comment: Optional[str] = Field(default=None, max_length=300)
    # Left for a call-back (差评 only); encrypted at rest. Core inserts give phone_hash themselves.
    phone: Optional[str] = Field(default=None, sa_column=Column(EncryptedString(), nullable=True))
    phone_hash: Optional[str] = Field(default=None, max_length=HASH_LENGTH)
    channel: str = Field(max_length=20)
    rater_key: str = Field(max_length=64)
    address_key: Optional[str] = Field(default=None, max_length=64)  # keyed hash of the web client's address
    rated_at: datetime
    rated_on: str = Field(max_length=10)  # the local date, YYYY-MM-DD
    misuse: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})  # burst pattern
    problem_id: Optional[int] = Field(default=None, foreign_key="problem.id")
    # 申诉复核 (issue #11): voided by the 作风办 as mistaken or malicious; out of every statistic, ranking
    # and form, kept in the history with the decision (RatingAppeal).
    voided: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # 评价编号: given to the rater on the thank-you page, to look up the follow-up (/r/status/<number>).
    number: Optional[str] = Field(default=None, max_length=20, unique=True)
    # 一事一评: the service this rating rates, when it came through a one-time service QR (ServiceTicket).
    visit_id: Optional[int] = Field(default=None, foreign_key="visit.id")
    contact_id: Optional[int] = Field(default=None, foreign_key="everyday_contact.id")


class CallbackStatus(StrEnum):
    """A 差评's call-back task (回访)."""

    OPEN = "open"  # 待回访
    DONE = "done"  # 已回访


class CallbackTask(SQLModel, table=True):
    """回访: call the rater of a 差评 back, by the due date; the one place the full phone is shown."""

    __tablename__ = "callback_task"

    id: Optional[int] = Field(default=None, primary_key=True)
    rating_id: int = Field(foreign_key="rating.id", unique=True)
    problem_id: int = Field(foreign_key="problem.id", index=True)
    unit_id: int = Field(foreign_key="unit.id", index=True)
    phone: str = Field(sa_column=Column(EncryptedString(), nullable=False))  # encrypted at rest; "" once erased
    phone_hash: Optional[str] = Field(default=None, max_length=HASH_LENGTH)
    status: str = Field(default=CallbackStatus.OPEN, max_length=20)
    due_on: str = Field(max_length=10)  # local date, YYYY-MM-DD
    created_at: datetime
    done_at: Optional[datetime] = None


# ---------------------------------------------------------------------------------------------
# WeChat Official Account (公众号)


class WeChatUser(SQLModel, table=True):
    """A WeChat follower as the channel knows them: when they last wrote, clicked the menu or scanned.

    WeChat accepts customer-service messages only within 48 hours of that moment; the outbox
    transport reads it to send, wait or fall back.
    """

    __tablename__ = "wechat_user"

    openid: str = Field(max_length=64, primary_key=True)
    last_inbound_at: datetime


class WeChatAccessToken(SQLModel, table=True):
    """The account's API access token, shared by every process; refreshed under a row lock, one at a time."""

    __tablename__ = "wechat_access_token"

    app_id: str = Field(max_length=40, primary_key=True)
    access_token: Optional[str] = Field(default=None, max_length=600)
    expires_at: Optional[datetime] = None
    refreshed_at: Optional[datetime] = None


class WeChatQrCode(SQLModel, table=True):
    """A permanent scene QR code (QR_LIMIT_STR_SCENE) whose scene string is an evaluation token."""

    __tablename__ = "wechat_qr_code"

    id: Optional[int] = Field(default=None, primary_key=True)
    scene: str = Field(max_length=64, unique=True)
    code_id: int = Field(foreign_key="evaluation_code.id", index=True)
    ticket: str = Field(max_length=200)
    url: str = Field(max_length=200)  # what the QR code encodes, to print on a card
    created_at: datetime


class AuditLog(SQLModel, table=True):
    """Who did what to which record, when and from where (审计日志): phone reveals, logins, downloads,
    imports, ledger actions, bindings, refused accesses. Rows are only ever inserted: nothing in the
    application updates or deletes them (PIPL: staff access to personal information is logged)."""

    __tablename__ = "audit_log"
    # The console's login limits count recent refusals per actor and per address (bot/core/login.py).
    __table_args__ = (Index("ix_audit_log_actor_at", "actor", "at"), Index("ix_audit_log_address_at", "address", "at"))

    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(index=True)
    actor: str = Field(max_length=130)  # "cadre:12", "telegram:4711", "cli", "system"
    action: str = Field(max_length=40, index=True)  # e.g. "phone.reveal", "binding.redeem", "access.refused"
    target: Optional[str] = Field(default=None, max_length=130)  # e.g. "problem:42", "rating:7"
    address: Optional[str] = Field(default=None, max_length=64)  # the client address, where there is one
    channel: Optional[str] = Field(default=None, max_length=20)
    detail: Optional[str] = Field(default=None, max_length=500)


class BindingAttempt(SQLModel, table=True):
    """Wrong binding codes in a row from one account (or one client address): after
    BIND_MAX_FAILURES within BIND_FAILURE_WINDOW_MINUTES the key is locked until ``locked_until``,
    and every code from it is refused, the right one too. A successful binding forgets the row."""

    __tablename__ = "binding_attempt"

    key: str = Field(max_length=160, primary_key=True)  # "account:telegram:4711" or "address:203.0.113.9"
    failures: int = 0
    first_failed_at: datetime
    locked_until: Optional[datetime] = None

class AppealState:
    PENDING = "pending"  # 待复核
    UPHELD = "upheld"  # 维持评价
    MISTAKEN = "mistaken"  # 撤销：误评
    MALICIOUS = "malicious"  # 撤销：恶意评价
    VOIDED = (MISTAKEN, MALICIOUS)


class RatingAppeal(SQLModel, table=True):
    """申诉复核: the rated cadre's appeal of a 差评, and the 作风办's decision. One per rating."""

    __tablename__ = "rating_appeal"

    id: Optional[int] = Field(default=None, primary_key=True)
    rating_id: int = Field(foreign_key="rating.id", unique=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)  # who appealed
    reason: str = Field(max_length=500)
    photo_ref: Optional[str] = Field(default=None, max_length=300)  # the channel's own reference, kept as is
    # The picture itself, kept under MEDIA_DIR as <sha256>.img (bot.core.evidence.keep_photo): what the
    # 作风办 sees in the console. Only the appellant's own photo: a forwarded one is refused.
    photo_sha256: Optional[str] = Field(default=None, max_length=64)
    filed_at: datetime
    state: str = Field(default=AppealState.PENDING, max_length=20, index=True)
    decided_by_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    decided_at: Optional[datetime] = None
    decision_note: Optional[str] = Field(default=None, max_length=500)


class ServiceTicket(SQLModel, table=True):
    """一事一评: a one-time rating QR for one service (a visit, an everyday contact, or a service at a
    window), valid SERVICE_QR_MINUTES and good for one rating. Its signed token names ``id``."""

    __tablename__ = "service_ticket"

    id: Optional[int] = Field(default=None, primary_key=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    code_id: int = Field(foreign_key="evaluation_code.id")  # the cadre's evaluation code, for the rating
    visit_id: Optional[int] = Field(default=None, foreign_key="visit.id")
    contact_id: Optional[int] = Field(default=None, foreign_key="everyday_contact.id")
    issued_at: datetime
    expires_at: datetime
    used_at: Optional[datetime] = None
    rating_id: Optional[int] = Field(default=None, foreign_key="rating.id")


# WeCom / 政务微信 (企业微信自建应用); the functions on them are in storage/wecom.py


class WeComMember(SQLModel, table=True):
    """A member of the WeCom directory (通讯录) as the last sync read it, and the cadre matched by mobile."""

    __tablename__ = "wecom_member"

    userid: str = Field(max_length=64, primary_key=True)
    name: str = Field(max_length=64)
    mobile: Optional[str] = Field(default=None, max_length=20)
    departments: str = Field(default="", max_length=300)  # department names, "、"-joined
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id", index=True)
    synced_at: datetime


# ---------------------------------------------------------------------------------------------
# The 作风办 web console (控制台): password-less login and its sessions


class LoginCode(SQLModel, table=True):
    """A one-time login credential for the console; only its hash is kept.

    ``kind`` "link": made by /login in chat for the bound cadre (``cadre_id`` set at once), redeemed by
    opening the link in a browser. ``kind`` "code": the 6-digit code a login page shows; the cadre is
    known once a bound chat account sends it to the bot (``confirmed_at``), and only the browser that
    asked for it (``browser_hash``, a hash of its cookie) turns it into a session. ``kind`` "wecom":
    the ``state`` of one WeCom web login (企业微信登录), the hash of its nonce, spent by the browser
    it was made for when WeCom sends it back. All expire after 5 minutes and are spent once (``used_at``).
    """

    __tablename__ = "login_code"

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=10)
    secret_hash: str = Field(max_length=64, index=True)
    cadre_id: Optional[int] = Field(default=None, foreign_key="cadre.id")
    browser_hash: Optional[str] = Field(default=None, max_length=64)
    confirmed_by: Optional[str] = Field(default=None, max_length=130)  # the chat account that sent the code
    confirmed_at: Optional[datetime] = None
    created_at: datetime
    expires_at: datetime
    used_at: Optional[datetime] = None
    address: Optional[str] = Field(default=None, max_length=64)


class ConsoleSession(SQLModel, table=True):
    """A logged-in browser: the cookie holds a random token, this row its hash. Ended by logout, by the
    user from the sessions page, or by idling longer than CONSOLE_IDLE_MINUTES."""

    __tablename__ = "console_session"

    id: Optional[int] = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    cadre_id: int = Field(foreign_key="cadre.id", index=True)
    created_at: datetime
    last_seen_at: datetime
    ended_at: Optional[datetime] = None
    address: Optional[str] = Field(default=None, max_length=64)
    user_agent: Optional[str] = Field(default=None, max_length=200)
    how: str = Field(max_length=10)  # "link", "code" or "wecom" (WeCom's web login)


# The keyed hash beside each encrypted phone, kept by every ORM insert and update (storage/crypto.py).
for _model, _column in ((Household, "phone"), (ServiceObject, "phone"), (Problem, "raiser_phone"), (Rating, "phone"),
                        (CallbackTask, "phone")):
    keep_hash(_model, _column, f"{_column}_hash")
