"""电话随机访问 (spot-checks by phone): did the visits on record really happen?

A draw takes, for every cadre with visits in the half-year, ``ceil(share × their visits)`` of them
(at least one) and records a SpotCheck row for each; a caller rings the household and records what
they said: confirmed, not reached (to be rung again) or denied. A visit that was denied, or that
nobody could verify, is what 走过场 looks like; the summary lists those per cadre. A denied visit is
disputed: it does not count (progress, forms, rankings) until a supervisor rules that the visit
stands, or that the denial does.

Weighted: the calls go where they are most needed. Each visit weighs by its evidence as stored when
it was confirmed (bot/core/evidence.py): a visit flagged as possibly in name only ``WEIGHT_FLAGGED``,
one with no evidence ``WEIGHTS[none]``, a photo only less, a matching location less again, and one
the household confirmed itself (its scan of the one-time QR) least, but never nothing: any visit
may be rung, so a good record is no safe place to hide. The sample is drawn without replacement with
probabilities in proportion to the weights, by Efraimidis and Spirakis' method (each visit gets the
key ``log(u) / weight`` for a uniform ``u``; the ``k`` largest keys are the sample), a few lines
over ``random.Random`` instead of numpy, which the project does not otherwise need and whose
generators may change between versions. Each row stores why its visit was drawn (``reason``: its
flags, no evidence, a photo only, or chance for the well evidenced), shown to whoever calls.

Reproducible: each cadre's sample comes from a generator seeded with (seed, half-year, cadre), over
that cadre's visits in id order, so the same seed on the same data draws the same visits (and a
cadre's sample does not move when other cadres log more visits). A visit is never drawn twice:
drawing again with the same seed adds nothing; with another seed, visits already drawn are skipped
and only the new ones recorded.
"""

from __future__ import annotations

import heapq
import math
import random
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from sqlalchemy import case, func, select
from sqlmodel import Session

from bot import texts
from bot.core import evidence
from storage.db import dialect_insert
from storage.models import Cadre, Household, SpotCheck, Unit, Visit, VisitFlag

PENDING, CONFIRMED, NOT_REACHED, DENIED = "pending", "confirmed", "not_reached", "denied"
OUTCOMES = (CONFIRMED, NOT_REACHED, DENIED)
UNVERIFIED = (PENDING, NOT_REACHED)


def new_seed() -> int:
    """A seed for a draw when none is given; it is stored with every row and printed, to redo the draw."""
    return secrets.randbelow(1_000_000)


def sample_size(visits: int, share: float) -> int:
    return min(visits, max(1, math.ceil(share * visits))) if visits else 0


# How much more likely a visit is to be drawn, by its evidence (strongest first) and when flagged.
WEIGHTS = {evidence.CONFIRMED: 1.0, evidence.LOCATION: 3.0, evidence.PHOTO: 6.0, evidence.NONE: 10.0}
WEIGHT_FLAGGED = 20.0
# Why a visit was drawn, as stored (SpotCheck.reason): "flags:same_photo,too_fast" or a level's reason.
REASON_FLAGS = "flags:"
REASONS = {evidence.NONE: "none", evidence.PHOTO: "photo", evidence.LOCATION: "random",
           evidence.CONFIRMED: "random"}


@dataclass(frozen=True)
class Candidate:
    """A visit that may be drawn: its evidence level as stored, and the kinds of its flags."""

    id: int
    evidence: str = evidence.NONE
    flags: tuple[str, ...] = ()

    @property
    def weight(self) -> float:
        return WEIGHT_FLAGGED if self.flags else WEIGHTS.get(self.evidence, WEIGHTS[evidence.NONE])

    @property
    def reason(self) -> str:
        if self.flags:
            return REASON_FLAGS + ",".join(sorted(self.flags))
        return REASONS.get(self.evidence, "none")


def reason_text(reason: str | None, level: str | None = None) -> str:
    """有走过场标记：重复照片、行程过快 / 无佐证 / 仅照片 / 随机（位置相符）; a row drawn before the draw was
    weighted (no reason) was drawn at random."""
    if not reason:
        return texts.SPOT_REASONS["random"]
    if reason.startswith(REASON_FLAGS):
        kinds = [texts.FLAG_NAMES.get(kind, kind) for kind in reason[len(REASON_FLAGS):].split(",") if kind]
        return texts.SPOT_REASON_FLAGS.format(kinds="、".join(kinds))
    text = texts.SPOT_REASONS.get(reason, reason)
    if reason == "random" and level in (evidence.LOCATION, evidence.CONFIRMED):
        text += texts.SPOT_REASON_LEVEL.format(level=texts.EVIDENCE_NAMES[level])
    return text


def sample(candidates: Sequence[Candidate], share: float, seed: int, half: str, cadre_id: int) -> list[Candidate]:
    """The visits drawn from one cadre's visits for this seed and half-year: ``sample_size`` of them
    without replacement, each with a probability in proportion to its weight (Efraimidis–Spirakis:
    the largest keys ``log(u) / weight``), in id order."""
    ordered = sorted(candidates, key=lambda c: c.id)
    rng = random.Random(f"{seed}:{half}:{cadre_id}")  # str seeds hash the same in every process
    # 1 - random() is in (0, 1]: log() never sees 0. One draw per visit, in id order: reproducible.
    keyed = [(math.log(1.0 - rng.random()) / c.weight, c.id, c) for c in ordered]
    chosen = heapq.nlargest(sample_size(len(ordered), share), keyed, key=lambda k: (k[0], -k[1]))
    return sorted((c for _key, _id, c in chosen), key=lambda c: c.id)


def candidates(session: Session, half: str, unit_ids: Sequence[int] | None = None) -> dict[int, list[Candidate]]:
    """Every visit of the half-year (of these units) per cadre, with its stored evidence and flags:
    two queries over stored columns, nothing recomputed."""
    visits = select(Visit.cadre_id, Visit.id, Visit.evidence).where(Visit.half == half)
    flags = (select(VisitFlag.visit_id, VisitFlag.kind).join(Visit, Visit.id == VisitFlag.visit_id)
             .where(Visit.half == half))
    if unit_ids is not None:
        units = sorted(unit_ids)
        visits = visits.join(Cadre, Cadre.id == Visit.cadre_id).where(Cadre.unit_id.in_(units))
        flags = flags.join(Cadre, Cadre.id == Visit.cadre_id).where(Cadre.unit_id.in_(units))
    kinds: dict[int, list[str]] = defaultdict(list)
    for visit_id, kind in session.execute(flags):
        kinds[visit_id].append(kind)
    by_cadre: dict[int, list[Candidate]] = defaultdict(list)
    for cadre_id, visit_id, level in session.execute(visits):
        by_cadre[cadre_id].append(Candidate(visit_id, level, tuple(sorted(kinds.get(visit_id, ())))))
    return by_cadre


def plan(session: Session, half: str, share: float, seed: int,
         unit_ids: Sequence[int] | None = None) -> list[tuple[int, Candidate]]:
    """(cadre id, visit) for every visit this seed draws, by cadre and visit id; writes nothing."""
    by_cadre = candidates(session, half, unit_ids)
    return [(cadre_id, chosen) for cadre_id in sorted(by_cadre)
            for chosen in sample(by_cadre[cadre_id], share, seed, half, cadre_id)]


@dataclass
class Draw:
    seed: int
    half: str
    drawn: list[int] = field(default_factory=list)  # the visits this draw chose (new or not)
    new: int = 0  # of which recorded now
    reasons: Counter = field(default_factory=Counter)  # why the new ones were drawn: none, photo, flags, random

    @property
    def again(self) -> int:
        return len(self.drawn) - self.new

    def reasons_text(self) -> str:
        """其中 有走过场标记 1、无佐证 3、仅照片 1、随机 2 (the new rows)."""
        order = ("flags", "none", "photo", "random")
        parts = [f"{texts.SPOT_REASON_SHORT[key]} {self.reasons[key]}" for key in order if self.reasons[key]]
        return texts.SPOT_DRAWN_REASONS.format(parts="、".join(parts)) if parts else ""


def draw(session: Session, half: str, share: float, now: datetime, *, seed: int | None = None,
         unit_ids: Sequence[int] | None = None) -> Draw:
    """Draws the sample for every cadre (of these units) with visits in the half-year and records it,
    with why each visit was drawn."""
    seed = new_seed() if seed is None else seed
    result = Draw(seed, half)
    rows = []
    for cadre_id, chosen in plan(session, half, share, seed, unit_ids):
        result.drawn.append(chosen.id)
        rows.append({"visit_id": chosen.id, "cadre_id": cadre_id, "half": half, "seed": seed, "drawn_at": now,
                     "outcome": PENDING, "reason": chosen.reason})
    inserted = _insert_new(session, rows)
    result.new = len(inserted)
    for row in rows:
        if row["visit_id"] in inserted:
            result.reasons["flags" if row["reason"].startswith(REASON_FLAGS) else row["reason"]] += 1
    return result


def _insert_new(session: Session, rows: list[dict], chunk: int = 500) -> set[int]:
    """Inserts the rows whose visit has no spot-check yet; the unique visit_id makes a visit drawn
    before (by any seed, or by a draw running at the same time) a no-op. Returns the visits new."""
    insert = dialect_insert(session.get_bind().dialect.name)
    new: set[int] = set()
    for start in range(0, len(rows), chunk):
        stmt = (insert(SpotCheck).values(rows[start:start + chunk]).on_conflict_do_nothing()
                .returning(SpotCheck.visit_id))
        new.update(session.execute(stmt).scalars())
    return new


@dataclass(frozen=True)
class Item:
    """One spot-check as the caller sees it: whom to ring (full phone) and whose visit it was."""

    id: int
    outcome: str
    household: str
    address: str
    phone: str
    cadre: str
    unit: str
    visited_at: datetime
    note: str | None
    household_confirmed_at: datetime | None = None  # the household rated the visit's one-time QR (一事一评)
    reason: str | None = None  # why the visit was drawn (None: drawn before draws were weighted)
    evidence: str = evidence.NONE  # the visit's evidence as stored now

    @property
    def why(self) -> str:
        """Why this visit was drawn, as the caller reads it (无佐证, 有走过场标记：重复照片 …)."""
        return reason_text(self.reason, self.evidence)


def _items_query(half: str | None, unit_ids: Sequence[int] | None):
    query = (select(SpotCheck.id, SpotCheck.outcome, Household.name, Household.address, Household.phone, Cadre.name,
                    Unit.name, Visit.visited_at, SpotCheck.note, Visit.household_confirmed_at, SpotCheck.reason,
                    Visit.evidence)
             .join(Visit, Visit.id == SpotCheck.visit_id).join(Household, Household.id == Visit.household_id)
             .join(Cadre, Cadre.id == SpotCheck.cadre_id).join(Unit, Unit.id == Cadre.unit_id))
    if half is not None:
        query = query.where(SpotCheck.half == half)
    if unit_ids is not None:
        query = query.where(Cadre.unit_id.in_(list(unit_ids)))
    return query


def items(session: Session, half: str, *, unit_ids: Sequence[int] | None = None, outcomes: Sequence[str] | None = None,
          visit_ids: Sequence[int] | None = None) -> list[Item]:
    """Spot-checks of a half-year: pending first, then not reached (ring again), then the rest;
    within each by unit, cadre and household."""
    query = _items_query(half, unit_ids)
    if outcomes is not None:
        query = query.where(SpotCheck.outcome.in_(list(outcomes)))
    if visit_ids is not None:
        query = query.where(SpotCheck.visit_id.in_(list(visit_ids)))
    order = case({PENDING: 0, NOT_REACHED: 1}, value=SpotCheck.outcome, else_=2)
    query = query.order_by(order, Unit.name, Cadre.name, Household.address, SpotCheck.id)
    return [Item(*row) for row in session.execute(query)]


def item(session: Session, check_id: int, unit_ids: Sequence[int] | None) -> Item | None:
    """One spot-check, if it is within the units (None: all)."""
    row = session.execute(_items_query(None, unit_ids).where(SpotCheck.id == check_id)).first()
    return Item(*row) if row else None


def record(session: Session, check_id: int, outcome: str, by: Cadre | None, now: datetime,
           note: str | None = None) -> SpotCheck:
    """Records what the call found; a later call overwrites an earlier (not reached, then reached).

    A denial disputes the visit (``Visit.disputed_at``): it stops counting toward progress, forms and
    rankings until a supervisor rules (``rule``). A later call that confirms it, before any ruling,
    lifts the dispute."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    check = session.get(SpotCheck, check_id)
    check.outcome, check.checked_at, check.note = outcome, now, note
    check.checked_by_id = by.id if by else None
    session.add(check)
    if check.ruling is None:
        visit = session.get(Visit, check.visit_id)
        visit.disputed_at = now if outcome == DENIED else None
        session.add(visit)
    session.flush()
    return check


VISIT_STANDS, DENIAL_STANDS = "visit_stands", "denial_stands"
RULINGS = (VISIT_STANDS, DENIAL_STANDS)


def awaiting_ruling(session: Session, half: str, unit_ids: Sequence[int] | None = None) -> list[Item]:
    """Denied visits no supervisor has ruled on yet: they do not count until then."""
    query = _items_query(half, unit_ids).where(SpotCheck.outcome == DENIED, SpotCheck.ruling.is_(None))
    return [Item(*row) for row in session.execute(query.order_by(Unit.name, Cadre.name, SpotCheck.id))]


def rule(session: Session, check_id: int, ruling: str, by: Cadre, now: datetime) -> SpotCheck:
    """A supervisor's ruling on a denied visit: it counts again (the visit stands) or stays out for good."""
    if ruling not in RULINGS:
        raise ValueError(f"unknown ruling {ruling!r}")
    check = session.get(SpotCheck, check_id)
    if check is None or check.outcome != DENIED or check.ruling is not None:
        raise ValueError("only an unruled denial can be ruled on")
    check.ruling, check.ruled_by_id, check.ruled_at = ruling, by.id, now
    visit = session.get(Visit, check.visit_id)
    if ruling == VISIT_STANDS:
        visit.disputed_at = None
    session.add_all([check, visit])
    session.flush()
    return check


@dataclass(frozen=True)
class CadreSummary:
    cadre_id: int
    cadre: str
    unit: str
    drawn: int
    confirmed: int
    not_reached: int
    denied: int
    pending: int

    @property
    def unverified(self) -> int:
        return self.not_reached + self.pending

    @property
    def flagged(self) -> bool:
        return bool(self.denied or self.unverified)


def summary(session: Session, half: str, unit_ids: Sequence[int] | None = None) -> list[CadreSummary]:
    """Per cadre with spot-checks in the half-year: counts per outcome (one GROUP BY), the cadres with
    denied visits first, then those with the most unverified, then by unit and name."""
    def count(outcome: str):
        return func.sum(case((SpotCheck.outcome == outcome, 1), else_=0))

    query = (select(SpotCheck.cadre_id, Cadre.name, Unit.name, func.count(), count(CONFIRMED), count(NOT_REACHED),
                    count(DENIED), count(PENDING))
             .join(Cadre, Cadre.id == SpotCheck.cadre_id).join(Unit, Unit.id == Cadre.unit_id)
             .where(SpotCheck.half == half)
             .group_by(SpotCheck.cadre_id, Cadre.name, Unit.name))
    if unit_ids is not None:
        query = query.where(Cadre.unit_id.in_(list(unit_ids)))
    rows = [CadreSummary(*(row[:4]), *(int(n or 0) for n in row[4:])) for row in session.execute(query)]
    return sorted(rows, key=lambda s: (-s.denied, -s.unverified, s.unit, s.cadre))
