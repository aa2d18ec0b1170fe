"""Evidence that a visit happened, and the signs of visits in name only (走过场).

A visit's evidence, strongest first: **confirmed** by the household itself (its own scan of the
visit's one-time QR), **location** sent at the doorstep within ``VISIT_RADIUS_METERS`` of the
household (and no less accurate than that), **photo** taken there, or **none**. A location or photo
forwarded from another chat, or coordinates typed as numbers, are kept but are no evidence.

Everything is computed when the visit is confirmed (``on_confirmed``) or when its inputs change (the
household confirms it: ``household_confirmed``), never when a report is drawn: the supervisors' views
only count stored columns (``summary``, ``flags_of``).

Flags, each with its reason: the same photo as another visit (perceptual hash, so a re-encoded copy
is caught), two visits in a row further apart than ``MAX_TRAVEL_KMH`` allows in the time between,
``VISIT_BURST_COUNT`` visits confirmed within ``VISIT_BURST_MINUTES``, a forwarded location or one
``VISIT_FAR_KM`` from the household, and the same survey answers in every visit of the cadre.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import imagehash
from PIL import Image, UnidentifiedImageError
from sqlalchemy import func, or_
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core.geo import Point, describe, distance_m, to_wgs84
from bot.core.types import Location
from storage import hot
from storage.models import Cadre, Household, Visit, VisitFlag

CONFIRMED, LOCATION, PHOTO, NONE = "confirmed", "location", "photo", "none"
LEVELS = (CONFIRMED, LOCATION, PHOTO, NONE)  # strongest first
SAME_PHOTO_BITS = 6  # perceptual hashes this close (of 64 bits) are the same picture


# -- at the doorstep ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocationCheck:
    """What a location sent during a visit says about it (kept in the dialogue until confirmed)."""

    latitude: float  # WGS-84
    longitude: float
    accuracy: float | None
    note: str | None  # "forwarded" or "typed": not evidence
    distance: float | None  # metres from the household, when it has coordinates
    matches: bool

    def as_data(self) -> dict:
        return {"lat": self.latitude, "lon": self.longitude, "accuracy": self.accuracy, "note": self.note,
                "distance": self.distance, "matches": self.matches}

    def message(self, settings: Settings) -> str:
        """The answer given at once: whether the location matches the household (never a refusal)."""
        if self.note == "forwarded":
            return texts.LOCATION_FORWARDED
        if self.note == "typed":
            return texts.LOCATION_TYPED
        if self.distance is None:
            return texts.LOCATION_NO_COORDS
        if self.matches:
            return texts.LOCATION_MATCHES.format(distance=describe(self.distance))
        if self.accuracy is not None and self.accuracy > settings.visit_radius_meters:
            return texts.LOCATION_INACCURATE.format(accuracy=describe(self.accuracy), distance=describe(self.distance))
        return texts.LOCATION_FAR.format(distance=describe(self.distance))


def check_location(location: Location, household: Household | None, settings: Settings) -> LocationCheck:
    point = to_wgs84(location.latitude, location.longitude, location.datum)
    distance = None
    if household is not None and household.latitude is not None and household.longitude is not None:
        distance = distance_m(point, Point(household.latitude, household.longitude))
    accurate = location.accuracy is None or location.accuracy <= settings.visit_radius_meters
    matches = (location.note is None and distance is not None and accurate
               and distance <= settings.visit_radius_meters)
    return LocationCheck(point.latitude, point.longitude, location.accuracy, location.note, distance, matches)


@dataclass(frozen=True)
class PhotoFacts:
    sha256: str
    phash: str | None  # None when the bytes are not a picture Pillow can read


def picture_type(content: bytes) -> str | None:
    """The MIME type of a picture Pillow can read (image/jpeg, image/png ...), else None: what an
    appeal's photo must be, and what the console serves it as."""
    try:
        with Image.open(io.BytesIO(content)) as picture:
            kind = Image.MIME.get(picture.format or "")
            picture.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    return kind if kind and kind.startswith("image/") else None


def photo_path(settings: Settings, sha256: str):
    """Where ``keep_photo`` put the picture with this content hash (a name it made, never user input)."""
    return settings.media_dir / f"{sha256}.img"


def keep_photo(content: bytes, settings: Settings) -> PhotoFacts:
    """Stores the picture under MEDIA_DIR named by its content hash (written once) and returns its
    hashes; the perceptual one survives re-encoding and resizing."""
    sha = hashlib.sha256(content).hexdigest()
    folder = settings.media_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = photo_path(settings, sha)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    try:
        with Image.open(io.BytesIO(content)) as picture:
            phash = str(imagehash.phash(picture))
    except (UnidentifiedImageError, OSError, ValueError):
        phash = None
    return PhotoFacts(sha, phash)


# -- when the visit is confirmed ----------------------------------------------------------------------

def level(visit: Visit, settings: Settings) -> str:
    if visit.household_confirmed_at is not None:
        return CONFIRMED
    if (visit.latitude is not None and visit.location_note is None and visit.distance_m is not None
            and visit.distance_m <= settings.visit_radius_meters
            and (visit.location_accuracy is None or visit.location_accuracy <= settings.visit_radius_meters)):
        return LOCATION
    if visit.photo_ref is not None and not visit.photo_forwarded:
        return PHOTO
    return NONE


def _flag(session: Session, visit: Visit, kind: str, reason: str, now: datetime) -> None:
    """One flag of the visit being confirmed (each kind is looked for once, so never twice)."""
    hot.add_visit_flag(session, visit_id=visit.id, cadre_id=visit.cadre_id, kind=kind, reason=reason[:300], now=now)


def on_confirmed(session: Session, visit: Visit, household: Household, settings: Settings, now: datetime) -> None:
    """The visit's evidence level and its flags, as it is confirmed (it is flushed, so it has an id).
    The cadre's visits of the half-year are read once (``storage.hot.cadre_visits``, a dozen rows) for
    the trip from the previous one, the burst and the identical surveys."""
    evidence = level(visit, settings)
    if visit.evidence != evidence:  # set, even to the same value, it makes the next flush look at the whole row
        visit.evidence = evidence
        session.add(visit)
    if visit.photo_phash:
        _same_photo(session, visit, now)
    if visit.location_note == "forwarded" or visit.photo_forwarded:
        _flag(session, visit, "forwarded", texts.FLAG_FORWARDED, now)
    if _is_far(visit, settings):
        _flag(session, visit, "far", texts.FLAG_FAR.format(distance=describe(visit.distance_m)), now)
    visits = [row for row in hot.cadre_visits(session, visit.cadre_id, visit.half) if row.visited_at <= visit.visited_at]
    _too_fast(session, visit, visits, settings, now)
    _burst(session, visit, visits, settings, now)
    _same_answers(session, visit, visits, settings, now)


PHASH_CHUNKS = 8  # the 64-bit perceptual hash as eight bytes (two hex digits each)
assert SAME_PHOTO_BITS < PHASH_CHUNKS  # so the pigeonhole below misses no pair


def _same_photo(session: Session, visit: Visit, now: datetime) -> None:
    """Flags the visit when another visit's photo is within ``SAME_PHOTO_BITS`` of its perceptual hash.

    Every stored photo is a candidate, however old and whoever took it, but not every one is compared
    in Python: two hashes at most 6 bits apart differ in at most 6 of their 8 bytes, so they share at
    least one byte in the same place (the pigeonhole principle; multi-index hashing). The database
    returns only the hashes sharing a byte with this one (a few hundred among the city's 10,000, from
    the covering index on ``photo_phash``), and only those are compared exactly, as integers. Before,
    every stored hash was read and made an ImageHash object: 1.2 s per photo on the city's data set,
    on the path of the visit's confirmation; now about 8 ms (bench/evidence.py)."""
    mine = visit.photo_phash.lower()
    if len(mine) != 2 * PHASH_CHUNKS:
        return
    same_byte = or_(*(func.substr(Visit.photo_phash, 2 * k + 1, 2) == mine[2 * k:2 * k + 2]
                      for k in range(PHASH_CHUNKS)))
    others = session.exec(select(Visit.id, Visit.photo_phash)
                          .where(Visit.photo_phash.is_not(None), Visit.id != visit.id, same_byte)).all()
    value = int(mine, 16)
    close = sorted(other_id for other_id, other_hash in others if (int(other_hash, 16) ^ value).bit_count()
                   <= SAME_PHOTO_BITS)
    if close:
        other = session.get(Visit, close[0])  # the earliest visit with the same photo
        _flag(session, visit, "same_photo", texts.FLAG_SAME_PHOTO.format(
            other=other.id, date=other.visited_at.date().isoformat()), now)


def _where(row: hot.CadreVisitRow) -> Point | None:
    if row.latitude is not None and row.location_note is None:
        return Point(row.latitude, row.longitude)
    if row.home_latitude is not None:
        return Point(row.home_latitude, row.home_longitude)
    return None


def _too_fast(session: Session, visit: Visit, visits: list, settings: Settings, now: datetime) -> None:
    mine = next((row for row in visits if row.id == visit.id), None)
    before = [row for row in visits if row.id != visit.id]
    here = _where(mine) if mine is not None else None
    if here is None or not before:
        return
    there = _where(before[-1])
    if there is None:
        return
    meters = distance_m(here, there)
    hours = max((visit.visited_at - before[-1].visited_at).total_seconds(), 1) / 3600
    if meters > 500 and meters / 1000 / hours > settings.max_travel_kmh:
        _flag(session, visit, "too_fast", texts.FLAG_TOO_FAST.format(
            distance=describe(meters), minutes=max(1, round(hours * 60)), other=before[-1].id), now)


def _burst(session: Session, visit: Visit, visits: list, settings: Settings, now: datetime) -> None:
    since = visit.visited_at - timedelta(minutes=settings.visit_burst_minutes)
    count = sum(1 for row in visits if row.visited_at >= since)
    if count >= settings.visit_burst_count:
        _flag(session, visit, "burst", texts.FLAG_BURST.format(count=count, minutes=settings.visit_burst_minutes), now)


def _same_answers(session: Session, visit: Visit, visits: list, settings: Settings, now: datetime) -> None:
    if not visit.survey or len(visits) < settings.visit_same_answers_minimum:
        return
    if all(row.survey == visit.survey for row in visits):
        _flag(session, visit, "same_answers", texts.FLAG_SAME_ANSWERS.format(count=len(visits)), now)


def household_confirmed(session: Session, visit: Visit, settings: Settings, now: datetime) -> None:
    """The household's own scan of the visit's one-time QR: the strongest evidence. A household with no
    coordinates learns them from this visit's location (recorded as learned, not surveyed)."""
    visit.household_confirmed_at = visit.household_confirmed_at or now
    visit.evidence = CONFIRMED
    session.add(visit)
    household = session.get(Household, visit.household_id)
    if (household is not None and household.latitude is None and visit.latitude is not None
            and visit.location_note is None):
        household.latitude, household.longitude, household.coord_source = visit.latitude, visit.longitude, "learned"
        session.add(household)


def relocate(session: Session, household_ids: list[int], settings: Settings, now: datetime | None = None) -> int:
    """The households' coordinates changed (a roster import surveyed them): each of their visits with a
    location gets its distance and evidence level again (a confirmed visit stays confirmed), and its
    "far" flag is judged again by the new distance: added, its distance corrected, or removed (a flag
    found against learned coordinates must not outlive them). The other flags stay as they were found
    when each visit was confirmed. Returns how many visits were looked at."""
    now = now or datetime.now(timezone.utc)
    ids, seen = sorted(set(household_ids)), 0
    for start in range(0, len(ids), 500):  # a roster that surveys a whole city at once: bounded IN lists
        chunk = ids[start:start + 500]
        homes = {h.id: h for h in session.exec(select(Household).where(Household.id.in_(chunk))).all()}
        visits = session.exec(select(Visit).where(Visit.household_id.in_(chunk), Visit.latitude.is_not(None))).all()
        far_flags = {flag.visit_id: flag for flag in session.exec(select(VisitFlag).where(
            VisitFlag.kind == "far", VisitFlag.visit_id.in_([v.id for v in visits]))).all()} if visits else {}
        for visit in visits:
            home = homes[visit.household_id]
            visit.distance_m = (None if home.latitude is None else distance_m(
                Point(visit.latitude, visit.longitude), Point(home.latitude, home.longitude)))
            visit.evidence = level(visit, settings)
            session.add(visit)
            flag = far_flags.get(visit.id)
            if _is_far(visit, settings):
                reason = texts.FLAG_FAR.format(distance=describe(visit.distance_m))[:300]
                if flag is None:
                    session.add(VisitFlag(visit_id=visit.id, cadre_id=visit.cadre_id, kind="far", reason=reason,
                                          created_at=now))
                elif flag.reason != reason:
                    flag.reason = reason
                    session.add(flag)
            elif flag is not None:
                session.delete(flag)
        seen += len(visits)
    return seen


def _is_far(visit: Visit, settings: Settings) -> bool:
    """The visit's location is farther from its household than VISIT_FAR_KM (a forwarded or typed
    location is no evidence, so never "far")."""
    return (visit.distance_m is not None and visit.distance_m > settings.visit_far_km * 1000
            and visit.location_note is None)


# -- the supervisors' views ---------------------------------------------------------------------------

@dataclass
class CadreEvidence:
    cadre_id: int
    name: str
    unit_id: int
    counts: Counter
    flags: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def shares(self) -> str:
        """确认 2 · 位置 5 · 照片 1 · 无 4 (the levels a cadre has, strongest first)."""
        return " · ".join(f"{texts.EVIDENCE_NAMES[lv]} {self.counts[lv]}" for lv in LEVELS if self.counts[lv])

    def percentages(self) -> str:
        return percentages(self.counts)

    def share(self, level: str) -> float:
        return self.counts[level] / self.total if self.total else 0.0


def percentages(counts: Counter, separator: str = "、") -> str:
    """住户确认 20%、位置相符 40%、无凭证 40%: the share of visits at each level they have, strongest first."""
    total = sum(counts.values())
    return separator.join(f"{texts.EVIDENCE_NAMES[lv]} {100 * counts[lv] / total:.0f}%"
                          for lv in LEVELS if counts[lv]) if total else ""


def summary(session: Session, half: str, unit_ids: list[int] | None = None) -> list[CadreEvidence]:
    """Per cadre, how many of the half-year's visits have each level of evidence, and how many are
    flagged: two grouped queries over stored columns. The visits are counted first, from the covering
    index (half, cadre_id, evidence) alone, and only the counts (a few per cadre) are joined to the
    cadres: 2,000 cadres and 50,000 visits in about a tenth of a second (bench/evidence.py)."""
    counted = (select(Visit.cadre_id, Visit.evidence, func.count().label("n")).where(Visit.half == half)
               .group_by(Visit.cadre_id, Visit.evidence))
    flagged = (select(VisitFlag.cadre_id, func.count(func.distinct(VisitFlag.visit_id)))
               .join(Visit, Visit.id == VisitFlag.visit_id).where(Visit.half == half).group_by(VisitFlag.cadre_id))
    if unit_ids is not None:
        unit_ids = sorted(unit_ids)
        counted = counted.where(Visit.cadre_id.in_(select(Cadre.id).where(Cadre.unit_id.in_(unit_ids))))
        flagged = flagged.join(Cadre, Cadre.id == VisitFlag.cadre_id).where(Cadre.unit_id.in_(unit_ids))
    counted = counted.subquery()
    query = (select(counted.c.cadre_id, Cadre.name, Cadre.unit_id, counted.c.evidence, counted.c.n)
             .join(Cadre, Cadre.id == counted.c.cadre_id))
    rows: dict[int, CadreEvidence] = {}
    for cadre_id, name, unit_id, evidence, count in session.exec(query).all():
        rows.setdefault(cadre_id, CadreEvidence(cadre_id, name, unit_id, Counter())).counts[evidence] += count
    for cadre_id, count in session.exec(flagged).all():
        if cadre_id in rows:
            rows[cadre_id].flags = count
    return sorted(rows.values(), key=lambda r: (r.unit_id, -(r.counts[NONE] / r.total if r.total else 0), r.name))


def flags_of(session: Session, half: str, unit_ids: list[int] | None = None, limit: int | None = None):
    """The flags of the half-year's visits, per cadre: (cadre name, visit id, date, kind, reason)."""
    query = (select(Cadre.name, VisitFlag.visit_id, Visit.visited_at, VisitFlag.kind, VisitFlag.reason)
             .join(Visit, Visit.id == VisitFlag.visit_id).join(Cadre, Cadre.id == VisitFlag.cadre_id)
             .where(Visit.half == half).order_by(Cadre.unit_id, Cadre.name, Visit.visited_at, VisitFlag.kind))
    if unit_ids is not None:
        query = query.where(Cadre.unit_id.in_(sorted(unit_ids)))
    if limit is not None:
        query = query.limit(limit)
    return session.exec(query).all()
