"""Scheduled jobs. Each one only writes outbox rows, so running it twice, or in two schedulers at
once, is harmless: every message has an idempotency key and is written once.

A job does not trust the moment it runs. It looks back over the misfire grace for the points in
time it serves (a reminder at 09:00 seven days before a deadline, a digest at 18:00) and writes
the newest one not yet written: a service that was down across a point sends it once after it
starts again, and one that missed two points sends only the newer.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core import appeals, evidence, evidence_views
from bot.core.evaluation import BAD_LEVELS
from bot.core.periods import half_of
from bot.core.phones import mask
from bot.core.progress import unit_progress, unvisited_by_cadre
from bot.core.scope import in_scope, shows_rater, subjects_of, unit_scope
from bot.fonts import FontNotFound
from scheduler.outbox import SEND_CHANNELS, Attachment, enqueue_for_cadre, existing_keys
from storage.db import session_scope
from storage.models import (
    CallbackStatus,
    CallbackTask,
    Cadre,
    Problem,
    Rating,
    Role,
    ServiceWindow,
    Unit,
    Visit,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deadline:
    form: str  # "form12", "form34", "form5"
    due: date


FORM_LABELS = {
    "form5": "附件5（12345/89000 热线问题办理情况）",
    "form34": "附件3、4（服务对象名单及收集问题）",
    "form12": "附件1、2（联户走访名单及收集问题）",
}


def deadlines(settings: Settings, year: int) -> list[Deadline]:
    """The report deadlines of a calendar year, both halves."""
    out = []
    for form, days in (("form5", settings.deadline_form5), ("form34", settings.deadline_form34),
                       ("form12", settings.deadline_form12)):
        for month_day in days:
            month, day = (int(x) for x in month_day.split("-"))
            out.append(Deadline(form, date(year, month, day)))
    return out


def _at(day: date, moment: time, settings: Settings) -> datetime:
    return datetime.combine(day, moment, tzinfo=settings.tz)


def latest_point(points: list[datetime], now: datetime, grace: timedelta) -> datetime | None:
    """The newest point in (now - grace, now], or None."""
    due = [p for p in points if now - grace < p <= now]
    return max(due) if due else None


def _grace(settings: Settings) -> timedelta:
    return timedelta(hours=settings.misfire_grace_hours)


def supervisors(session: Session) -> list[Cadre]:
    return list(session.exec(select(Cadre).where(Cadre.role.in_(Role.HEADS), Cadre.active == True)  # noqa: E712
                             .order_by(Cadre.id)).all())


def _cadres(session: Session) -> list[Cadre]:
    return list(session.exec(select(Cadre).where(Cadre.active == True, Cadre.role == Role.CADRE)  # noqa: E712
                             .order_by(Cadre.unit_id, Cadre.id)).all())


def _date_label(day: date) -> str:
    return f"{day.month}月{day.day}日"


def _days_left(due: date, today: date) -> str:
    left = (due - today).days
    return texts.DUE_TODAY if left == 0 else texts.DAYS_LEFT.format(days=left)


# -- report-deadline reminders ----------------------------------------------------------------

def remind_deadlines(session: Session, settings: Settings, now: datetime) -> int:
    """Reminds cadres of what they still owe before each report deadline, and supervisors of who
    is behind; returns the number of messages written."""
    grace = _grace(settings)
    local_year = now.astimezone(settings.tz).year
    written = 0
    for form in ("form5", "form34", "form12"):
        candidates = [(d, k, _at(d.due - timedelta(days=k), settings.reminder_time, settings))
                      for year in (local_year - 1, local_year, local_year + 1) for d in deadlines(settings, year) if d.form == form
                      for k in settings.reminder_days_before]
        point = latest_point([c[2] for c in candidates], now, grace)
        if point is None:
            continue
        deadline, days_before, _ = next(c for c in candidates if c[2] == point)
        written += _remind_form(session, settings, now, deadline, days_before)
    return written


def _pending(session: Session, key: str, cadre_ids: list[int]) -> set[int]:
    """The cadres who have no row under ``key`` yet (the outbox appends ':c<id>' to every key)."""
    wanted = {f"{key}:c{cid}": cid for cid in cadre_ids}
    done = existing_keys(session, list(wanted))
    return {cid for k, cid in wanted.items() if k not in done}


def _remind_form(session: Session, settings: Settings, now: datetime, deadline: Deadline, days_before: int) -> int:
    key = f"deadline:{deadline.form}:{deadline.due.isoformat()}:{days_before}"
    cadres = _cadres(session)
    heads = supervisors(session)
    if not _pending(session, key, [c.id for c in cadres + heads]):
        return 0  # this point was served already: skip the work, not just the writes
    half = half_of(_at(deadline.due, time(12), settings), settings.tz)
    today = deadline.due - timedelta(days=days_before)
    head = texts.DEADLINE_HEAD.format(form=FORM_LABELS[deadline.form], due=_date_label(deadline.due),
                                      left=_days_left(deadline.due, today))
    progress = {p.cadre.id: p for p in unit_progress(session, cadres, half)}
    unvisited = unvisited_by_cadre(session, [c.id for c in cadres], half) if deadline.form == "form12" else {}
    minimum = settings.service_object_minimum
    behind: dict[int, str] = {}  # cadre id -> what they still owe
    written = 0
    for cadre in cadres:
        p = progress[cadre.id]
        if deadline.form == "form12" and p.visited < p.assigned:
            remaining = unvisited.get(cadre.id, [])
            body = head + "\n" + texts.DEADLINE_VISITS.format(done=p.visited, total=p.assigned) + "\n" + "\n".join(
                f"• {h.name} · {h.address}" for h in remaining[:20])
            behind[cadre.id] = f"{cadre.name} {p.visited}/{p.assigned}"
        elif deadline.form == "form34" and p.service_objects < minimum:
            body = head + "\n" + texts.DEADLINE_OBJECTS.format(count=p.service_objects, minimum=minimum)
            behind[cadre.id] = f"{cadre.name} {p.service_objects}/{minimum}"
        else:
            continue  # nobody is reminded of what they have already done
        written += enqueue_for_cadre(session, cadre.id, key=key, kind="deadline", body=body, now=now,
                                     settings=settings, channels=SEND_CHANNELS) is not None
    for supervisor in heads:
        scope = unit_scope(session, supervisor, settings)
        late = [behind[cadre.id] for cadre in cadres if cadre.id in behind and in_scope(scope, cadre.unit_id)]
        if deadline.form == "form5":
            body = head + "\n" + texts.DEADLINE_FORM5
        elif late:
            body = head + "\n" + texts.DEADLINE_BEHIND.format(count=len(late)) + "\n" + "\n".join(
                f"• {line}" for line in late[:30]) + (f"\n…… 共 {len(late)} 人" if len(late) > 30 else "")
        else:
            body = head + "\n" + texts.DEADLINE_ALL_DONE
        written += enqueue_for_cadre(session, supervisor.id, key=key, kind="deadline", body=body, now=now,
                                     settings=settings, channels=SEND_CHANNELS) is not None
    return written


# -- supervisor digests --------------------------------------------------------------------------

def digest_points(settings: Settings, now: datetime) -> list[tuple[str, datetime]]:
    """The newest due daily and weekly digest points, as (period key, moment)."""
    local = now.astimezone(settings.tz).date()
    days = [local - timedelta(days=i) for i in range(0, 8)]
    grace = _grace(settings)
    due: list[tuple[str, datetime]] = []
    if settings.digest_daily_time is not None:
        point = latest_point([_at(d, settings.digest_daily_time, settings) for d in days], now, grace)
        if point:
            due.append((f"daily:{point.date().isoformat()}", point))
    if settings.digest_weekly_day is not None:
        point = latest_point([_at(d, settings.digest_weekly_time, settings) for d in days
                              if d.weekday() == settings.digest_weekly_day], now, grace)
        if point:
            year, week, _ = point.date().isocalendar()
            due.append((f"weekly:{year}-W{week:02d}", point))
    return due


@dataclass(frozen=True)
class PlannedDigest:
    cadre_id: int  # the supervisor
    key: str
    kind: str
    body: str
    attachments: tuple[Attachment, ...]


def send_digests(session: Session, settings: Settings, now: datetime, chart=None) -> int:
    """Writes each supervisor's daily and weekly digest for their scope; muted ones get none.

    The figures come from grouped queries over all cadres, computed once per digest point, so the
    cost grows with the number of cadres and supervisors, not with visits times recipients.
    In one session; the worker uses ``run_digests``, which computes them without the write lock.
    """
    return write_digests(session, plan_digests(session, settings, now, chart), settings, now)


def run_digests(db, settings: Settings, now: datetime, chart=None) -> int:
    """``send_digests`` in two transactions: the digests are computed (and charts drawn, about two
    seconds for a city) in a read-only one, which on SQLite holds up no writer, then queued in a
    short one. A digest queued meanwhile by another worker is not queued twice (outbox keys)."""
    with session_scope(db, read_only=True) as session:
        planned = plan_digests(session, settings, now, chart)
    if not planned:
        return 0
    with session_scope(db) as session:
        return write_digests(session, planned, settings, now)


def plan_digests(session: Session, settings: Settings, now: datetime, chart=None) -> list[PlannedDigest]:
    """The digests due now that are not queued yet: only reads."""
    planned: list[PlannedDigest] = []
    recipients = [s for s in supervisors(session) if not s.digests_muted]
    if not recipients:
        return planned
    cadres = _cadres(session)
    units = {u.id: u for u in session.exec(select(Unit)).all()}
    for period, point in digest_points(settings, now):
        kind = period.split(":")[0]
        waiting = _pending(session, f"digest:{period}", [s.id for s in recipients])
        if not waiting:
            continue
        since = point - (timedelta(days=1) if kind == "daily" else timedelta(days=7))
        half = half_of(point, settings.tz)
        progress = unit_progress(session, cadres, half)
        visits_in_period = dict(session.exec(
            select(Visit.cadre_id, func.count()).where(Visit.visited_at > since, Visit.visited_at <= point)
            .group_by(Visit.cadre_id)).all())
        ratings = _ratings_in(session, since, point, {c.id: c.name for c in cadres}, units)
        proof = evidence.summary(session, half)  # stored levels and flags, grouped once for every cadre
        point_digests = []
        for supervisor in (s for s in recipients if s.id in waiting):
            scope = unit_scope(session, supervisor, settings)
            mine = [p for p in progress if in_scope(scope, p.cadre.unit_id)]
            body = (_digest_body(kind, point, settings, mine, visits_in_period, units) + "\n"
                    + evidence_text([row for row in proof if in_scope(scope, row.unit_id)], units) + "\n"
                    + ratings.text(scope, supervisor.id))
            point_digests.append((supervisor, mine, body + "\n" + texts.DIGEST_MUTE_HINT))
        pictures = _charts(chart, [mine for _s, mine, _b in point_digests], units, half)
        if pictures is None:
            chart = None  # no font: the next digest point goes without charts too
        for (supervisor, _mine, body), png in zip(point_digests, pictures or [None] * len(point_digests)):
            attachments = (Attachment("digest.png", "image/png", png),) if png is not None else ()
            planned.append(PlannedDigest(supervisor.id, f"digest:{period}", f"digest-{kind}", body, attachments))
    return planned


def _charts(chart, scopes: list, units, half: str) -> list[bytes | None] | None:
    """One chart per digest (None for an empty scope), drawn two at a time: Pillow lets go of the
    GIL while it encodes the PNG (1.8 s instead of 2.8 s for the city's 105 charts). The cached
    fonts are shared: Pillow holds the GIL, or on a free-threaded Python a lock of the font's own,
    around FreeType. None when no font can draw Chinese: the text is what matters, the digests
    go without pictures."""
    if chart is None:
        return [None] * len(scopes)

    def draw(mine):
        return chart(mine, units, half) if mine else None

    try:
        with ThreadPoolExecutor(2, thread_name_prefix="digest-chart") as pool:
            return list(pool.map(draw, scopes))
    except FontNotFound as exc:
        log.warning("digest without chart: %s", exc)
        return None


def write_digests(session: Session, planned: list[PlannedDigest], settings: Settings, now: datetime) -> int:
    """Queues planned digests; one already queued (same key) is left alone."""
    written = 0
    for digest in planned:
        written += enqueue_for_cadre(session, digest.cadre_id, key=digest.key, kind=digest.kind, body=digest.body,
                                     now=now, settings=settings, channels=SEND_CHANNELS,
                                     attachments=digest.attachments) is not None
    return written


def _digest_body(kind, point, settings, progress, visits_in_period, units) -> str:
    local = point.astimezone(settings.tz)
    visited = sum(p.visited for p in progress)
    assigned = sum(p.assigned for p in progress)
    in_period = sum(visits_in_period.get(p.cadre.id, 0) for p in progress)
    behind = [p for p in progress if p.visited < p.assigned]
    behind.sort(key=lambda p: (p.visited / p.assigned if p.assigned else 1, p.cadre.name))
    lines = [
        (texts.DIGEST_DAILY if kind == "daily" else texts.DIGEST_WEEKLY).format(date=_date_label(local.date())),
        texts.DIGEST_VISITS.format(count=in_period, done=visited, total=assigned),
    ]
    if behind:
        lines.append(texts.DIGEST_BEHIND.format(count=len(behind)))
        lines += [f"• {p.cadre.name}（{units[p.cadre.unit_id].name if p.cadre.unit_id in units else ''}）"
                  f"{p.visited}/{p.assigned}" for p in behind[:10]]
        if len(behind) > 10:
            lines.append(texts.DIGEST_MORE.format(count=len(behind) - 10))
    else:
        lines.append(texts.DIGEST_ALL_DONE)
    return "\n".join(lines)


DIGEST_WEAKEST = 5  # cadres named in a digest for weak evidence or flags


def evidence_text(rows: list[evidence.CadreEvidence], units: dict[int, Unit]) -> str:
    """The digest's evidence of visits (bot.core.evidence_views.overview_lines, as /flags gives it for
    a large scope), naming the five cadres with the weakest or flagged visits."""
    return "\n".join(evidence_views.overview_lines(rows, {u: unit.name for u, unit in units.items()},
                                                   DIGEST_WEAKEST))


def digest_chart(progress, units: dict[int, Unit], half: str) -> bytes:
    """A bar chart of visit completion (PNG), for a supervisor who would rather look: per unit for the
    work-style office, per cadre for a unit's own supervisor (one bar per unit would say nothing)."""
    from bot.charts import quick_bar_chart
    from bot.core.periods import half_label

    one_unit = len({p.cadre.unit_id for p in progress}) == 1
    totals: dict[str, list[int]] = {}
    for p in progress:
        name = p.cadre.name if one_unit else (units[p.cadre.unit_id].name if p.cadre.unit_id in units else "?")
        done, assigned = totals.setdefault(name, [0, 0])
        totals[name] = [done + p.visited, assigned + p.assigned]
    # The 15 furthest behind, the furthest at the top.
    names = sorted(totals, key=lambda n: totals[n][0] / totals[n][1] if totals[n][1] else 1)[:15]
    rates = [100 * totals[n][0] / totals[n][1] if totals[n][1] else 100 for n in names]
    what = "干部" if one_unit else "各单位"
    return quick_bar_chart(names, rates, [f"{totals[n][0]}/{totals[n][1]}" for n in names],
                           title=f"{half_label(half)} {what}联户走访完成率", xlabel="走访完成率 %",
                           colors=["#c0392b" if r < 50 else "#e67e22" if r < 100 else "#27ae60" for r in rates])


@dataclass
class BadLine:
    """One 差评 of a digest: its unit, the cadres it is about, and its line with and without the
    rater's comment (the comment is free text that may identify the rater: never shown to a subject)."""

    unit_id: int
    subjects: set[int]
    line: str
    without_comment: str

    def for_viewer(self, viewer_id: int) -> str:
        return self.line if shows_rater(viewer_id, self.subjects) else self.without_comment


@dataclass
class PeriodRatings:
    """Ratings of a period, grouped once, then cut to each supervisor's scope."""

    counts: dict[int, Counter]  # unit id -> level -> count (misuse left out)
    bad: list[BadLine]  # each 差评, newest first

    def text(self, scope: set[int] | None, viewer_id: int) -> str:
        levels = Counter()
        for unit_id, counter in self.counts.items():
            if in_scope(scope, unit_id):
                levels.update(counter)
        total = sum(levels.values())
        if not total:
            return texts.DIGEST_NO_RATINGS
        good = levels[5] + levels[4] + levels[3]
        line = texts.DIGEST_RATINGS.format(
            total=total, rate=f"{100 * good / total:.1f}",
            levels="，".join(f"{texts.RATING_LEVELS[level]} {levels[level]}" for level in (5, 4, 3, 2, 1)))
        bad = [item.for_viewer(viewer_id) for item in self.bad if in_scope(scope, item.unit_id)]
        if bad:
            line += "\n" + texts.DIGEST_BAD.format(count=len(bad)) + "\n" + "\n".join(bad[:5])
        return line


def _ratings_in(session: Session, since: datetime, until: datetime, cadre_names: dict[int, str],
                units: dict[int, Unit]) -> PeriodRatings:
    window = (Rating.rated_at > since, Rating.rated_at <= until, Rating.misuse == False,  # noqa: E712
              Rating.voided == False)  # noqa: E712  (voided on appeal: out of every statistic)
    counts: dict[int, Counter] = {}
    for unit_id, level, count in session.exec(
            select(Rating.unit_id, Rating.level, func.count()).where(*window)
            .group_by(Rating.unit_id, Rating.level)).all():
        counts.setdefault(unit_id, Counter())[level] = count
    windows = {w.id: w.name for w in session.exec(select(ServiceWindow)).all()}
    bad = []
    listed = session.exec(select(Rating).where(*window, Rating.level.in_(BAD_LEVELS))
                          .order_by(Rating.rated_at.desc()).limit(200)).all()
    states = appeals.states_of(session, [r.id for r in listed])  # 申诉复核: an appeal under review says so
    subjects = subjects_of(session, listed)  # 回避: whom each is about, who never sees its comment
    others = {r.cadre_id for r in listed if r.cadre_id and r.cadre_id not in cadre_names}  # supervisors rated
    if others:
        cadre_names = {**cadre_names, **dict(session.exec(select(Cadre.id, Cadre.name)
                                                          .where(Cadre.id.in_(sorted(others)))).all())}
    for r in listed:
        who = cadre_names.get(r.cadre_id) if r.cadre_id else windows.get(r.window_id)
        unit = units[r.unit_id].name if r.unit_id in units else ""
        comment = f"：{r.comment[:30]}" if r.comment else ""
        mark = texts.RATINGS_APPEAL_MARK.format(state=texts.APPEAL_STATES[states[r.id]]) if r.id in states else ""
        head = f"• {who or '?'}（{unit}）{texts.RATING_LEVELS[r.level]}"
        bad.append(BadLine(r.unit_id, subjects[r.id], f"{head}{comment}{mark}", f"{head}{mark}"))
    return PeriodRatings(counts, bad)


# -- call-back tasks (回访) -----------------------------------------------------------------------

def remind_callbacks(session: Session, settings: Settings, now: datetime) -> int:
    """Each morning, tells the supervisors of a unit which of its 差评 call-backs are due today or
    tomorrow, and which are overdue; overdue ones reach the work-style office too (责任追究)."""
    local = now.astimezone(settings.tz).date()
    point = latest_point([_at(local - timedelta(days=i), settings.reminder_time, settings) for i in range(3)], now,
                         _grace(settings))
    if point is None:
        return 0
    day = point.astimezone(settings.tz).date()
    key = f"callbacks:{day.isoformat()}"
    heads = supervisors(session)
    waiting = _pending(session, key, [h.id for h in heads])
    if not waiting:
        return 0
    rows = session.exec(select(CallbackTask, Problem.to_office, Rating)
                        .join(Problem, Problem.id == CallbackTask.problem_id)
                        .join(Rating, Rating.id == CallbackTask.rating_id)
                        .where(CallbackTask.status == CallbackStatus.OPEN,
                               CallbackTask.due_on <= (day + timedelta(days=1)).isoformat())
                        .order_by(CallbackTask.due_on, CallbackTask.id)).all()
    if not rows:
        return 0
    subjects = subjects_of(session, [rating for _t, _o, rating in rows])
    written = 0
    for head in heads:
        if head.id not in waiting:
            continue
        scope = unit_scope(session, head, settings)
        # 回避: an office item only for the 作风办; nobody is told of a 差评 about themselves.
        mine = [t for t, to_office, rating in rows if in_scope(scope, t.unit_id)
                and not (to_office and scope is not None) and head.id not in subjects[rating.id]]
        if not mine:
            continue
        lines = [texts.CALLBACKS_DUE.format(count=len(mine))]
        for t in mine[:20]:
            state = texts.CALLBACK_OVERDUE if t.due_on < day.isoformat() else texts.CALLBACK_DUE_ON.format(
                due=t.due_on[5:])
            lines.append(f"• #{t.problem_id} {mask(t.phone)} {state}")
        lines.append(texts.CALLBACKS_HINT)
        written += enqueue_for_cadre(session, head.id, key=key, kind="callbacks", body="\n".join(lines), now=now,
                                     settings=settings, channels=SEND_CHANNELS) is not None
    return written


# -- housekeeping ----------------------------------------------------------------------------------

def retention_rules(settings: Settings, now: datetime) -> list[tuple[str, object, object]]:
    """What each retention setting removes: (table, model, condition), children before parents.

    Kept whatever their age: the dialogue state and WeChat record of every account bound to a cadre
    (a cadre's flow in progress, their 48-hour window), pending outbox rows, and the business data
    (visits, problems, ratings, audit log), which is the campaign's record, not a cache.
    """
    from sqlalchemy import and_, exists, or_

    from storage.models import (BindingAttempt, ChatAccount, ConsoleSession, DialogueState, LoginCode,
                                OutboxAttachment, OutboxMessage, OutboxState, ProcessedInbound, WeChatUser)

    guards = now - timedelta(days=settings.prune_after_days)
    idle = now - timedelta(days=settings.retain_citizen_state_days)
    sent = now - timedelta(days=settings.retain_sent_outbox_days)
    dead = now - timedelta(days=settings.retain_dead_outbox_days)
    old_outbox = or_(and_(OutboxMessage.state == OutboxState.SENT, OutboxMessage.sent_at < sent),
                     and_(OutboxMessage.state.in_([OutboxState.DEAD, OutboxState.UNREACHABLE]),
                          OutboxMessage.created_at < dead))
    unbound_state = ~exists().where(ChatAccount.channel == DialogueState.channel,
                                    ChatAccount.external_user_id == DialogueState.external_user_id)
    unbound_wechat = ~exists().where(ChatAccount.channel == "wechat", ChatAccount.external_user_id == WeChatUser.openid)
    window = now - timedelta(minutes=settings.bind_failure_window_minutes)
    return [
        ("processed_inbound", ProcessedInbound, ProcessedInbound.created_at < guards),
        ("dialogue_state", DialogueState, and_(DialogueState.updated_at < idle, unbound_state)),
        ("wechat_user", WeChatUser, and_(WeChatUser.last_inbound_at < idle, unbound_wechat)),
        ("outbox_attachment", OutboxAttachment,
         OutboxAttachment.message_id.in_(select(OutboxMessage.id).where(old_outbox))),
        ("outbox", OutboxMessage, old_outbox),
        ("binding_attempt", BindingAttempt,
         and_(BindingAttempt.first_failed_at < window,
              or_(BindingAttempt.locked_until == None, BindingAttempt.locked_until < now))),  # noqa: E711
        # The console's one-time login codes (valid minutes) and its sessions ended or idle, after
        # PRUNE_AFTER_DAYS: the audit log keeps who logged in, when and from where.
        ("login_code", LoginCode, LoginCode.expires_at < guards),
        ("console_session", ConsoleSession, or_(ConsoleSession.ended_at < guards, ConsoleSession.last_seen_at < guards)),
    ]


def prune_counts(session: Session, settings: Settings, now: datetime, *, dry_run: bool = False) -> dict[str, int]:
    """Removes what the retention settings say, table by table; the rows removed per table (with
    ``dry_run``, the rows that would be, and nothing is removed)."""
    from sqlalchemy import delete

    counts = {}
    for table, model, condition in retention_rules(settings, now):
        if dry_run:
            counts[table] = session.execute(select(func.count()).select_from(model).where(condition)).scalar_one()
        else:
            counts[table] = session.execute(delete(model).where(condition)
                                            .execution_options(synchronize_session=False)).rowcount
    return counts


def prune(session: Session, settings: Settings, now: datetime) -> int:
    """The daily prune job: what ``prune_counts`` removes, logged per table; returns the total.

    Redelivery guards and cached webhook replies go after ``PRUNE_AFTER_DAYS`` (the platforms
    redeliver within minutes, so weeks are ample); the rest after its RETAIN_* setting."""
    counts = prune_counts(session, settings, now)
    removed = sum(counts.values())
    if removed:
        log.info("清理过期数据 prune: %s", "，".join(f"{table} {n}" for table, n in counts.items()))
    return removed
