"""Citizen evaluation (好差评): evaluation codes, and recording a rating from any channel.

An evaluation code (评价码) names one cadre or service window. Its token is what a card's QR
code carries, as a web address or a Telegram deep-link payload (and next a WeChat scene string),
so it keeps to 25 characters of A-Z a-z 0-9 _ -: "r" and the URL-safe Base64 of the code's id (4
bytes), its version (2 bytes) and an HMAC of both (12 bytes) under EVALUATION_SECRET. A forged
token fails the HMAC; a revoked card carries an old version and fails the lookup.

``submit_rating`` is the one way a rating is stored, whatever the channel: one rating per rater,
target and local day (a second replaces the first), a burst of ratings of one target from one
address flagged as misuse, and a 差评 put on the problem ledger with a call-back task when the
rater left a phone number. A 差评 needs at least one reason or a comment. A 差评 about a
supervisor, or about someone whose unit has no other supervisor, goes to the 作风办 (bot.core.scope).
Callers own the transaction; nothing here commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core.dialogue import InputError, clean_text
from bot.core.feature import Feature
from bot.core.ledger import open_problem
from bot.core.phones import normalize_phone
from bot.core.scope import needs_office
from bot.core.workdays import work_calendar
from storage import crypto
from storage.db import insert_ignore
from storage.models import (
    Cadre,
    CallbackTask,
    EvaluationCode,
    Problem,
    ProblemSource,
    ProblemStatus,
    Rating,
    ServiceWindow,
    TargetKind,
    Unit,
    WindowDuty,
)

TOKEN_PREFIX = "r"
TOKEN_LENGTH = 25
_BODY = struct.Struct(">IH")  # code id, version
_MAC_BYTES = 12
_TOKEN_SHAPE = re.compile(r"r[A-Za-z0-9_-]{24}")

LEVELS = (5, 4, 3, 2, 1)  # 非常满意 … 非常不满意, best first as the page shows them
BAD_LEVELS = (2, 1)  # 差评: 不满意, 非常不满意
COMMENT_LIMIT = 300
PROBLEM_CATEGORY = "干部作风"  # a 差评 is about work style in every 问题类型 list


# -- tokens --------------------------------------------------------------------------------------


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"evaluation-code:" + body, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(key: bytes, code_id: int, version: int) -> str:
    body = _BODY.pack(code_id, version)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(body + _mac(key, body)).decode()


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the shape of a token (a /start payload may be one, or a binding code)."""
    return bool(_TOKEN_SHAPE.fullmatch(text or ""))


def parse_token(key: bytes, token: str) -> tuple[int, int] | None:
    """(code id, version) of a genuine token; None for anything forged, truncated or malformed."""
    if not looks_like_token(token):
        return None
    raw = base64.urlsafe_b64decode(token[1:])
    body, mac = raw[:_BODY.size], raw[_BODY.size:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        return None
    return _BODY.unpack(body)


def keyed_hash(key: bytes, purpose: str, value: str) -> str:
    """A rater's or an address's stored key: not reversible without the secret, stable with it."""
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


# -- targets and codes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Whom a code rates, with what a card and the rating page show of them."""

    code_id: int
    version: int
    kind: str
    target_id: int
    name: str
    unit_id: int
    unit: str
    post: str | None = None
    duties: str | None = None
    on_duty: tuple[str, ...] = ()  # a window's cadres on duty
    cadre_ids: tuple[int, ...] = ()  # the cadre, or a window's cadres on duty: who may not rate it

    @property
    def label(self) -> str:
        if self.kind == TargetKind.WINDOW:
            return texts.RATING_TARGET_WINDOW.format(name=self.name, unit=self.unit)
        return texts.RATING_TARGET_CADRE.format(name=self.name, unit=self.unit,
                                                post=f" · {self.post}" if self.post else "")


def code_for(session: Session, kind: str, target_id: int, now: datetime) -> EvaluationCode:
    """The target's evaluation code, issued now if it has none yet."""
    column = EvaluationCode.cadre_id if kind == TargetKind.CADRE else EvaluationCode.window_id
    code = session.exec(select(EvaluationCode).where(column == target_id)).first()
    if code is None:
        values = {"target_kind": kind, "version": 1, "issued_at": now,
                  "cadre_id": target_id if kind == TargetKind.CADRE else None,
                  "window_id": target_id if kind == TargetKind.WINDOW else None}
        insert_ignore(session, EvaluationCode, values)  # two admins printing at once get one code
        code = session.exec(select(EvaluationCode).where(column == target_id)).one()
    return code


def revoke(session: Session, code: EvaluationCode, now: datetime) -> EvaluationCode:
    """Revokes the printed card (a lost card): its token is refused from now on; the next card printed
    for the target carries the new version."""
    code.version += 1
    code.revoked_at = now
    session.add(code)
    session.flush()
    return code


def target_of(session: Session, code: EvaluationCode) -> Target | None:
    """The code's target as shown; None when the cadre or window has left the roster."""
    if code.target_kind == TargetKind.CADRE:
        cadre = session.get(Cadre, code.cadre_id)
        unit = session.get(Unit, cadre.unit_id) if cadre else None
        if cadre is None or not cadre.active or unit is None:
            return None
        return Target(code.id, code.version, TargetKind.CADRE, cadre.id, cadre.name, unit.id, unit.name,
                      cadre.post, cadre.duties, cadre_ids=(cadre.id,))
    window = session.get(ServiceWindow, code.window_id)
    unit = session.get(Unit, window.unit_id) if window else None
    if window is None or not window.active or unit is None:
        return None
    staff = session.exec(select(Cadre).join(WindowDuty, WindowDuty.cadre_id == Cadre.id)
                         .where(WindowDuty.window_id == window.id, Cadre.active == True)  # noqa: E712
                         .order_by(Cadre.name)).all()
    return Target(code.id, code.version, TargetKind.WINDOW, window.id, window.name, unit.id, unit.name,
                  on_duty=tuple(c.name for c in staff), cadre_ids=tuple(c.id for c in staff))


def resolve(session: Session, key: bytes, token: str) -> Target | None:
    """The target a scanned token rates; None for a forged token, a revoked card or a departed target."""
    parsed = parse_token(key, token)
    if parsed is None:
        return None
    code = session.get(EvaluationCode, parsed[0])
    if code is None or code.version != parsed[1]:
        return None
    return target_of(session, code)


def token_of(key: bytes, target: Target) -> str:
    return make_token(key, target.code_id, target.version)


# -- input -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatingInput:
    """A rating as the rater gave it, already checked."""

    level: int
    reasons: tuple[str, ...] = ()
    comment: str | None = None
    phone: str | None = None

    @property
    def bad(self) -> bool:
        return self.level in BAD_LEVELS


def check_input(level: object, reasons: list[str] | tuple[str, ...] = (), comment: str | None = None,
                phone: str | None = None) -> RatingInput:
    """The rating, checked; raises ``InputError`` with what to fix. Reasons, comment and phone belong
    to a 差评 and are dropped from any other level."""
    try:
        level = int(str(level))
    except ValueError:
        raise InputError(texts.RATING_PICK_LEVEL) from None
    if level not in LEVELS:
        raise InputError(texts.RATING_PICK_LEVEL)
    if level not in BAD_LEVELS:
        return RatingInput(level)
    unknown = [r for r in reasons if r not in texts.RATING_REASONS]
    if unknown or len(set(reasons)) != len(reasons):
        raise InputError(texts.RATING_BAD_REASON)
    comment = (comment or "").strip() or None
    if comment is not None:
        comment = clean_text(comment, COMMENT_LIMIT)
    phone_raw = (phone or "").strip()
    normal = None
    if phone_raw:
        normal = normalize_phone(phone_raw) if len(phone_raw) <= 30 else None
        if normal is None:
            raise InputError(texts.RATING_BAD_PHONE)
    if not reasons and comment is None:  # a 差评 must say what went wrong, or it cannot be looked into
        raise InputError(texts.RATING_NEED_REASON)
    ordered = tuple(r for r in texts.RATING_REASONS if r in reasons)
    return RatingInput(level, ordered, comment, normal)


def rates_self(target: Target, cadre: Cadre | None) -> bool:
    """Staff may not rate themselves, nor a window they are on duty at, from their bound account."""
    return cadre is not None and cadre.id in target.cadre_ids


# -- submitting ------------------------------------------------------------------------------------


@dataclass
class Submitted:
    rating: Rating
    replaced: bool  # the rater's earlier rating of today was replaced
    problem: Problem | None = None
    callback: CallbackTask | None = None
    flagged: list[int] = field(default_factory=list)  # ids of ratings flagged as misuse by this one


def submit_rating(session: Session, settings: Settings, target: Target, given: RatingInput, *, channel: str,
                  rater: str, now: datetime, address: str | None = None) -> Submitted:
    """Stores the rating (replacing the rater's earlier one of today), flags bursts, and puts a 差评 on
    the ledger with a call-back task when a phone was left. ``rater`` and ``address`` are the raw
    channel user id (or web cookie) and client address; only keyed hashes of them are stored."""
    key = settings.evaluation_key
    local_day = now.astimezone(settings.tz).date()
    rater_key = keyed_hash(key, "rater", f"{channel}:{rater}")
    address_key = keyed_hash(key, "address", address) if address else None
    values = {
        "level": given.level, "reasons": list(given.reasons), "comment": given.comment, "phone": given.phone,
        "phone_hash": crypto.keyring().hash(given.phone),  # a Core insert: the ORM's hook does not run
        "channel": channel, "address_key": address_key, "rated_at": now,
    }
    identity = {"code_id": target.code_id, "rater_key": rater_key, "rated_on": local_day.isoformat()}
    # Insert-or-nothing first: two submissions racing each other then meet on the row lock below.
    created = insert_ignore(session, Rating, {
        **identity, **values, "target_kind": target.kind, "unit_id": target.unit_id, "misuse": False,
        "number": new_number(),  # a replaced rating keeps the number its rater was given
        "cadre_id": target.target_id if target.kind == TargetKind.CADRE else None,
        "window_id": target.target_id if target.kind == TargetKind.WINDOW else None}) is not None
    rating = session.exec(select(Rating).where(*(getattr(Rating, k) == v for k, v in identity.items()))
                          .with_for_update().execution_options(populate_existing=True)).one()
    if not created:
        for name, value in values.items():
            setattr(rating, name, value)
        session.add(rating)
        session.flush()
    result = Submitted(rating, replaced=not created)
    if address_key is not None:
        result.flagged = _flag_burst(session, settings, rating, now)
    if given.bad:
        result.problem = _ledger_problem(session, target, rating, now)
        if given.phone:
            result.callback = _callback(session, settings, rating, result.problem, local_day, now)
    return result


def _flag_burst(session: Session, settings: Settings, rating: Rating, now: datetime) -> list[int]:
    """Marks every rating of this target from this address in the burst window as misuse, once there
    are at least RATING_BURST_COUNT of them (as HappyOrNot terminals discount rapid presses)."""
    since = now - timedelta(minutes=settings.rating_burst_minutes)
    ids = session.exec(select(Rating.id).where(Rating.code_id == rating.code_id,
                                               Rating.address_key == rating.address_key,
                                               Rating.rated_at >= since)).all()
    if len(ids) < settings.rating_burst_count:
        return []
    session.execute(update(Rating).where(Rating.id.in_(ids)).values(misuse=True)
                    .execution_options(synchronize_session=False))
    rating.misuse = True
    return list(ids)


def _problem_content(target: Target, rating: Rating) -> str:
    parts = [texts.RATING_PROBLEM.format(level=texts.RATING_LEVELS[rating.level], target=target.label)]
    if rating.reasons:
        parts.append(texts.RATING_PROBLEM_REASONS.format(reasons="、".join(rating.reasons)))
    if rating.comment:
        parts.append(rating.comment)
    return "；".join(parts)[:1000]


def _ledger_problem(session: Session, target: Target, rating: Rating, now: datetime) -> Problem:
    """The 差评's item on the ledger (source: rating), for the target's unit; a replaced 差评 updates it."""
    problem = session.get(Problem, rating.problem_id) if rating.problem_id else None
    content = _problem_content(target, rating)
    if problem is None:
        problem = open_problem(session, source=ProblemSource.RATING, category=PROBLEM_CATEGORY, content=content,
                               now=now, actor_label=texts.RATING_ACTOR, unit_id=target.unit_id,
                               raiser_phone=rating.phone,
                               to_office=needs_office(session, target.unit_id, set(target.cadre_ids)))
        rating.problem_id = problem.id
        session.add(rating)
    else:
        problem.content, problem.updated_at = content, now
        problem.raiser_phone = rating.phone or problem.raiser_phone
        session.add(problem)
    session.flush()
    return problem


def _callback(session: Session, settings: Settings, rating: Rating, problem: Problem, day: date,
              now: datetime) -> CallbackTask:
    task = session.exec(select(CallbackTask).where(CallbackTask.rating_id == rating.id)).first()
    if task is None:
        task = CallbackTask(rating_id=rating.id, problem_id=problem.id, unit_id=rating.unit_id, phone=rating.phone,
                            due_on=work_calendar(settings.holiday_file).add_working_days(
                                day, settings.rating_follow_up_days).isoformat(),
                            created_at=now)
    else:
        task.phone = rating.phone
    session.add(task)
    session.flush()
    return task


def thanks_text(given: RatingInput, submitted: Submitted, settings: Settings) -> str:
    """What the rater is told afterwards, on every channel: a 差评 with the 评价编号 to follow it up
    (a good rating has no follow-up to look up)."""
    lines = [texts.RATING_THANKS_REPLACED if submitted.replaced else texts.RATING_THANKS]
    if given.bad:
        if submitted.callback is not None:
            lines.append(texts.RATING_FOLLOW_UP_CALL.format(days=settings.rating_follow_up_days))
        else:
            lines.append(texts.RATING_FOLLOW_UP_NO_PHONE)
        if submitted.rating.number:
            lines.append(texts.RATING_NUMBER.format(number=submitted.rating.number,
                                                    url=f"{settings.public_url}/r/status/{submitted.rating.number}"))
    return "\n".join(lines)


def issuer_line(settings: Settings) -> str:
    """发布单位 and 监督电话, as the pages, the thanks and the cards show them."""
    parts = [settings.issuer_name] if settings.issuer_name else []
    if settings.supervision_phone:
        parts.append(texts.SUPERVISION_PHONE.format(phone=settings.supervision_phone))
    return " · ".join(parts)


# -- the rater's side: the 评价编号 and where the follow-up stands ----------------------------------------

NUMBER_DIGITS = 12
_NUMBER_SHAPE = re.compile(r"\d{12}")


def new_number() -> str:
    """A 评价编号: twelve random digits, easy to type, not guessable (only its rater has it)."""
    return "".join(secrets.choice("0123456789") for _ in range(NUMBER_DIGITS))


@dataclass(frozen=True)
class FollowUp:
    """What the holder of a 评价编号 may see: their own rating's date and level, and the stage reached."""

    number: str
    rated_on: str
    level: int
    stage: int | None  # index into texts.FOLLOW_UP_STAGES; None for a rating that needs no follow-up


_STAGE_OF = {ProblemStatus.NEW: 0, ProblemStatus.ASSIGNED: 1, ProblemStatus.IN_PROGRESS: 1,
             ProblemStatus.SOLVED_ON_SPOT: 2, ProblemStatus.CLOSED: 2, ProblemStatus.ANSWERED: 3}


def follow_up(session: Session, number: str) -> FollowUp | None:
    """The follow-up of the rating with this 评价编号; None for anything else (nothing is said of
    whether a number exists)."""
    number = re.sub(r"[\s-]", "", number or "")
    if not _NUMBER_SHAPE.fullmatch(number):
        return None
    rating = session.exec(select(Rating).where(Rating.number == number)).first()
    if rating is None:
        return None
    stage = None
    if rating.level in BAD_LEVELS:
        problem = session.get(Problem, rating.problem_id) if rating.problem_id else None
        stage = _STAGE_OF.get(problem.status, 0) if problem is not None else 0
    return FollowUp(number, rating.rated_on, rating.level, stage)


def follow_up_lines(found: FollowUp | None) -> list[str]:
    if found is None:
        return [texts.FOLLOW_UP_UNKNOWN]
    lines = [texts.FOLLOW_UP_HEAD.format(number=found.number, date=found.rated_on,
                                         level=texts.RATING_LEVELS[found.level])]
    if found.stage is None:
        return lines + [texts.FOLLOW_UP_NONE_NEEDED]
    lines.append(" → ".join((texts.FOLLOW_UP_DONE if i <= found.stage else texts.FOLLOW_UP_TODO) + name
                            for i, name in enumerate(texts.FOLLOW_UP_STAGES)))
    return lines + [texts.FOLLOW_UP_NOW.format(stage=texts.FOLLOW_UP_STAGES[found.stage])]


def cmd_status(ctx) -> None:
    """Tells anyone holding a 评价编号 where its follow-up stands: /status <评价编号>."""
    number = ctx.inbound.args.strip()
    if not number:
        return ctx.say(texts.FOLLOW_UP_USAGE)
    ctx.say("\n".join(follow_up_lines(follow_up(ctx.session, number))))


STATUS = Feature("status", None, "查询评价进度", help=texts.HELP_STATUS, words=("查询进度", "评价进度"), run=cmd_status)
