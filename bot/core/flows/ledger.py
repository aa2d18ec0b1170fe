"""The ledger by chat: supervisors assign (/ledger), the A and B posts work their items (/todo),
anyone reports a problem (/report) and follows what they reported (/mine).

Every change goes through ``bot.core.ledger.act``, which checks the role and the state; these
flows only offer what that table allows, and show its refusal when the world changed meanwhile.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import select

from bot import texts
from bot.core import ledger
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature
from bot.core.phones import mask, normalize_phone
from bot.core.scope import overseen_problems, problem_subjects, unit_scope
from storage import audit
from bot.core.survey import CATEGORIES
from storage.models import Cadre, Problem, ProblemSource, ProblemStatus, Role, Unit

S = ProblemStatus
HISTORY = "__history__"
DEFAULT = "__default__"
BUCKETS = {
    "new": (S.NEW,),
    "open": ledger.OPEN_STATES,
    "overdue": ledger.OPEN_STATES,
    "closed": (S.CLOSED,),
}


def _line(p: Problem) -> str:
    due = f"（限 {p.deadline.month}-{p.deadline.day:02d}）" if p.deadline else ""
    return texts.LEDGER_ITEM_LINE.format(id=p.id, category=p.category, content=_short(p.content, 24)) + due


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _names(ctx: Context, ids) -> dict[int, str]:
    ids = [i for i in ids if i]
    if not ids:
        return {}
    return dict(ctx.session.exec(select(Cadre.id, Cadre.name).where(Cadre.id.in_(ids))).all())


def details(ctx: Context, p: Problem, *, show_phone: bool) -> str:
    """What one item looks like when opened: status, who has it, by when, what happened last."""
    names = _names(ctx, [p.responsible_a_id, p.responsible_b_id])
    unit = ctx.session.get(Unit, p.responsible_unit_id) if p.responsible_unit_id else None
    lines = [texts.LEDGER_DETAIL_HEAD.format(id=p.id, status=texts.STATUS_NAMES.get(p.status, p.status),
                                             category=p.category, content=p.content)]
    about_me = ctx.cadre is not None and ctx.cadre.id in problem_subjects(ctx.session, p.id)
    if (p.raiser_name or p.raiser_phone) and not about_me:  # the person rated never sees the rater
        phone = (p.raiser_phone if show_phone else mask(p.raiser_phone)) if p.raiser_phone else ""
        if show_phone and p.raiser_phone:
            audit.record(ctx.session, at=ctx.now, actor=f"cadre:{ctx.cadre.id}" if ctx.cadre else ctx.inbound.user_id,
                         action="phone.reveal", target=f"problem:{p.id}", channel=ctx.inbound.channel)
        lines.append(texts.LEDGER_DETAIL_RAISER.format(name=p.raiser_name or "", phone=phone))
    if unit is not None and p.responsible_a_id is None:
        # Named by its source (a hotline file's 责任单位) but never assigned here: no slip, no posts.
        lines.append(texts.LEDGER_DETAIL_UNIT_UNASSIGNED.format(unit=unit.name))
    elif unit is not None:
        lines.append(texts.LEDGER_DETAIL_ASSIGNED.format(
            slip=ledger.slip_number(p), unit=unit.name, a=names.get(p.responsible_a_id, "?"),
            b=names.get(p.responsible_b_id, "?"), deadline=p.deadline.isoformat() if p.deadline else "—"))
    if ledger.is_overdue(p, ledger.local_today(ctx.settings, ctx.now)):
        lines.append(texts.LEDGER_DETAIL_OVERDUE)
    if p.result:
        lines.append(texts.LEDGER_DETAIL_RESULT.format(result=p.result))
    if p.answer:
        lines.append(texts.LEDGER_DETAIL_ANSWER.format(answer=p.answer))
    return "\n".join(lines)


def history_text(ctx: Context, problem_id: int) -> str:
    lines = [texts.LEDGER_HISTORY_HEAD.format(id=problem_id)]
    for e in ledger.history(ctx.session, problem_id):
        when = e.at.astimezone(ctx.settings.tz).strftime("%m-%d %H:%M")
        lines.append(f"• {when} {e.actor} {ledger.ACTION_NAMES.get(e.action, e.action)}"
                     f"{'：' + _short(e.note, 60) if e.note else ''}")
    return "\n".join(lines)


class _ItemFlow(Flow):
    """Shared steps: pick an item, see it and choose an action, write the note, carry it out."""

    item_prompt = ""
    empty = ""

    def __init__(self, page_size: int = 8):
        self.page_size = page_size
        self.steps = {step.key: step for step in self.build()}

    def build(self) -> list[Step]:
        return [
            Step("item", "choice", lambda c: self.item_prompt, self._on_item, options=self._item_options,
                 per_row=1, page_size=self.page_size),
            Step("action", "choice", self._action_prompt, self._on_action, options=self._action_options,
                 per_row=2),
            Step("note", "text", self._note_prompt, self._on_note, optional=False, max_len=ledger.NOTE_LIMIT),
        ]

    # what the subclasses decide
    def items(self, ctx: Context) -> list[Problem]:
        raise NotImplementedError

    def roles(self, ctx: Context, p: Problem) -> set[str]:
        return ledger.roles_of(ctx.session, p, ctx.settings, ctx.cadre, ctx.inbound.channel, ctx.inbound.user_id)

    def start(self, ctx: Context, first: str = "item", data: dict | None = None) -> None:
        if first == "item" and not self.items(ctx):
            ctx.say(self.empty)
            return
        ctx.start_flow(self.name, first, data)
        self.prompt(ctx)

    def _problem(self, ctx: Context) -> Problem:
        p = ctx.session.get(Problem, ctx.data.get("item"))
        if p is None:
            raise InputError(texts.LEDGER_NO_ITEM.format(id=ctx.data.get("item")))
        return p

    def _item_options(self, ctx: Context) -> list[tuple[Any, str]]:
        return [(p.id, _line(p)) for p in self.items(ctx)]

    def _on_item(self, ctx: Context, value: int) -> str:
        ctx.data["item"] = value
        return "action"

    def _action_prompt(self, ctx: Context) -> str:
        p = self._problem(ctx)
        return details(ctx, p, show_phone=bool(self.roles(ctx, p) & {ledger.RESPONSIBLE, ledger.SUPERVISOR}))

    def _action_options(self, ctx: Context) -> list[tuple[Any, str]]:
        p = self._problem(ctx)
        actions = ledger.allowed_actions(self.roles(ctx, p), p.status)
        return [(a, texts.LEDGER_ACTION_LABELS[a]) for a in actions] + [(HISTORY, texts.LEDGER_SHOW_HISTORY)]

    def _on_action(self, ctx: Context, value: str) -> str:
        if value == HISTORY:
            ctx.say(history_text(ctx, ctx.data["item"]))
            return "action"
        ctx.data["act"] = value
        return self.after_action(ctx, value)

    def after_action(self, ctx: Context, action: str) -> str:
        return "note"

    def _note_prompt(self, ctx: Context) -> str:
        return texts.LEDGER_NOTE_PROMPTS[ctx.data["act"]].format(limit=ledger.NOTE_LIMIT)

    def _on_note(self, ctx: Context, value: str | None) -> None:
        ctx.data["note"] = value
        return None

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        try:
            p = ledger.act(ctx.session, ctx.settings, d["item"], d["act"], now=ctx.now, actor=ctx.cadre,
                           channel=ctx.inbound.channel, user_id=ctx.inbound.user_id, note=d.get("note"),
                           unit_id=d.get("unit"), a_id=d.get("a"), b_id=d.get("b"),
                           deadline=date.fromisoformat(d["deadline"]) if d.get("deadline") else None)
        except ledger.LedgerError as exc:
            raise InputError(str(exc)) from exc
        ctx.say(texts.LEDGER_DONE.format(action=ledger.ACTION_NAMES[d["act"]], id=p.id,
                                         status=texts.STATUS_NAMES.get(p.status, p.status)))


class LedgerFlow(_ItemFlow):
    """/ledger: a supervisor's view of the items in scope, by bucket, and their assignment (交办)."""

    name = "ledger"
    item_prompt = texts.LEDGER_PICK_ITEM
    empty = texts.LEDGER_EMPTY

    def build(self) -> list[Step]:
        return [
            Step("bucket", "choice", lambda c: texts.LEDGER_PICK_BUCKET, self._on_bucket, options=self._buckets,
                 per_row=2),
            *super().build(),
            Step("unit", "choice", lambda c: texts.LEDGER_PICK_UNIT, self._on_unit, options=self._units, per_row=1,
                 page_size=self.page_size),
            Step("a", "choice", lambda c: texts.LEDGER_PICK_A, self._on_a, options=self._cadres_of_unit, per_row=2,
                 page_size=self.page_size),
            Step("b", "choice", lambda c: texts.LEDGER_PICK_B, self._on_b,
                 options=lambda c: [o for o in self._cadres_of_unit(c) if o[0] != c.data.get("a")], per_row=2,
                 page_size=self.page_size),
            Step("deadline", "text", self._deadline_prompt, self._on_deadline,
                 options=lambda c: [(DEFAULT, texts.LEDGER_DEFAULT_DEADLINE.format(date=self._default(c)))]),
            Step("confirm", "choice", self._confirm_prompt, lambda c, v: None,
                 options=lambda c: [("ok", texts.CONFIRM)]),
        ]

    def start(self, ctx: Context, first: str = "bucket", data: dict | None = None) -> None:
        super().start(ctx, first, data)

    def _scope_filter(self, ctx: Context, query):
        return overseen_problems(query, ctx.cadre, unit_scope(ctx.session, ctx.cadre, ctx.settings))

    def _bucket_query(self, ctx: Context, bucket: str):
        query = self._scope_filter(ctx, select(Problem).where(Problem.status.in_(BUCKETS[bucket])))
        if bucket == "overdue":
            query = query.where(Problem.deadline < ledger.local_today(ctx.settings, ctx.now))
        return query

    def _buckets(self, ctx: Context) -> list[tuple[Any, str]]:
        out = []
        for bucket in BUCKETS:
            count = ctx.session.exec(select(func.count()).select_from(
                self._bucket_query(ctx, bucket).subquery())).one()
            out.append((bucket, texts.LEDGER_BUCKETS[bucket].format(count=count)))
        return out

    def _on_bucket(self, ctx: Context, value: str) -> str:
        ctx.data["bucket"] = value
        if not self.items(ctx):
            raise InputError(texts.LEDGER_BUCKET_EMPTY)
        return "item"

    def items(self, ctx: Context) -> list[Problem]:
        bucket = ctx.data.get("bucket", "new")
        return list(ctx.session.exec(self._bucket_query(ctx, bucket)
                                     .order_by(Problem.deadline, Problem.created_at, Problem.id).limit(200)).all())

    def after_action(self, ctx: Context, action: str) -> str:
        return "unit" if action == ledger.ASSIGN else "note"

    def _units(self, ctx: Context) -> list[tuple[Any, str]]:
        scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
        query = select(Unit).where(Unit.active == True)  # noqa: E712
        if scope is not None:
            query = query.where(Unit.id.in_(scope))
        return [(u.id, u.name) for u in ctx.session.exec(query.order_by(Unit.name)).all()]

    def _on_unit(self, ctx: Context, value: int) -> str:
        ctx.data["unit"] = value
        if len(self._cadres_of_unit(ctx)) < 2:
            raise InputError(texts.LEDGER_UNIT_TOO_SMALL)
        return "a"

    def _cadres_of_unit(self, ctx: Context) -> list[tuple[Any, str]]:
        subjects = problem_subjects(ctx.session, ctx.data.get("item"))  # 回避: not the cadres a 差评 is about
        return [(c.id, c.name) for c in ctx.session.exec(
            select(Cadre).where(Cadre.unit_id == ctx.data.get("unit"), Cadre.active == True)  # noqa: E712
            .order_by(Cadre.name)).all() if c.id not in subjects]

    def _on_a(self, ctx: Context, value: int) -> str:
        ctx.data["a"] = value
        return "b"

    def _on_b(self, ctx: Context, value: int) -> str:
        ctx.data["b"] = value
        return "deadline"

    def _default(self, ctx: Context) -> str:
        p = self._problem(ctx)
        return ledger.default_deadline(ctx.settings, p.source, ledger.local_today(ctx.settings, ctx.now)).isoformat()

    def _deadline_prompt(self, ctx: Context) -> str:
        days = ctx.settings.ledger_deadline_days.get(self._problem(ctx).source, 10)
        return texts.LEDGER_ASK_DEADLINE.format(days=days)

    def _on_deadline(self, ctx: Context, value: str) -> str:
        today = ledger.local_today(ctx.settings, ctx.now)
        chosen = date.fromisoformat(self._default(ctx)) if value == DEFAULT else parse_date(value, today)
        if chosen is None:
            raise InputError(texts.LEDGER_BAD_DATE)
        if chosen < today:
            raise InputError(texts.LEDGER_PAST_DEADLINE.format(date=chosen.isoformat()))
        ctx.data["deadline"] = chosen.isoformat()
        return "confirm"

    def _confirm_prompt(self, ctx: Context) -> str:
        d = ctx.data
        names = _names(ctx, [d.get("a"), d.get("b")])
        unit = ctx.session.get(Unit, d.get("unit"))
        return texts.LEDGER_CONFIRM_ASSIGN.format(
            item=_line(self._problem(ctx)), unit=unit.name if unit else "?", a=names.get(d.get("a"), "?"),
            b=names.get(d.get("b"), "?"), deadline=d.get("deadline"))


class TodoFlow(_ItemFlow):
    """/todo: the items a cadre holds as A or B post, to report progress, close (销号) or record the call-back."""

    name = "todo"
    item_prompt = texts.TODO_PICK_ITEM
    empty = texts.TODO_EMPTY

    def items(self, ctx: Context) -> list[Problem]:
        me = ctx.cadre.id
        return list(ctx.session.exec(
            select(Problem).where(or_(Problem.responsible_a_id == me, Problem.responsible_b_id == me),
                                  Problem.status.in_((*ledger.OPEN_STATES, S.CLOSED)))
            .order_by(Problem.deadline, Problem.id).limit(200)).all())


class MineFlow(_ItemFlow):
    """/mine: what this chat account reported, how it stands, and a reopen when the answer is not enough."""

    name = "mine"
    requires_cadre = False
    item_prompt = texts.MINE_PICK_ITEM
    empty = texts.MINE_EMPTY

    def items(self, ctx: Context) -> list[Problem]:
        return list(ctx.session.exec(
            select(Problem).where(Problem.raiser_channel == ctx.inbound.channel,
                                  Problem.raiser_user_id == ctx.inbound.user_id)
            .order_by(Problem.created_at.desc()).limit(50)).all())

    def roles(self, ctx: Context, p: Problem) -> set[str]:
        # A citizen's view: only what they may do as the raiser, whatever else the account is.
        return ledger.roles_of(ctx.session, p, ctx.settings, None, ctx.inbound.channel, ctx.inbound.user_id)

    def _item_options(self, ctx: Context) -> list[tuple[Any, str]]:
        return [(p.id, f"{_line(p)} · {texts.STATUS_NAMES.get(p.status, p.status)}") for p in self.items(ctx)]

    def finish(self, ctx: Context) -> None:
        saved = ctx.cadre
        ctx.cadre = None  # act as the raiser, not as whatever cadre the account may also be
        try:
            super().finish(ctx)
        finally:
            ctx.cadre = saved


class ReportFlow(Flow):
    """/report: anyone reports a problem (三个一); it lands on the ledger as 待交办."""

    name = "report"
    requires_cadre = False

    def __init__(self):
        categories = list(dict.fromkeys(CATEGORIES["居"] + CATEGORIES["村"]))
        self.steps = {step.key: step for step in [
            Step("category", "choice", lambda c: texts.REPORT_ASK_CATEGORY, self._store("category", "content"),
                 options=lambda c: [(x, x) for x in categories], per_row=3),
            Step("content", "text", lambda c: texts.REPORT_ASK_CONTENT.format(limit=ledger.NOTE_LIMIT),
                 self._store("content", "phone"), max_len=ledger.NOTE_LIMIT),
            Step("phone", "text", lambda c: texts.REPORT_ASK_PHONE, self._on_phone, optional=True),
            Step("confirm", "choice", self._summary, lambda c, v: None, options=lambda c: [("ok", texts.CONFIRM)]),
        ]}

    @staticmethod
    def _store(key: str, then: str):
        def on_answer(ctx: Context, value: Any) -> str:
            ctx.data[key] = value
            return then
        return on_answer

    def start(self, ctx: Context) -> None:
        ctx.start_flow(self.name, "category")
        self.prompt(ctx)

    def _on_phone(self, ctx: Context, value: str | None) -> str:
        if value is not None:
            phone = normalize_phone(value)
            if phone is None:
                raise InputError(texts.REPORT_BAD_PHONE)
            ctx.data["phone"] = phone
        else:
            ctx.data["phone"] = None
        return "confirm"

    def _summary(self, ctx: Context) -> str:
        d = ctx.data
        return texts.REPORT_SUMMARY.format(category=d["category"], content=d["content"],
                                           phone=mask(d.get("phone")) or texts.ABSENT)

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        problem = ledger.open_problem(ctx.session, source=ProblemSource.COMPLAINT, category=d["category"],
                                      content=d["content"], now=ctx.now, actor_label=texts.RAISER_LABEL,
                                      raiser_name=(ctx.inbound.display_name or "")[:50] or None,
                                      raiser_phone=d.get("phone"), raiser_channel=ctx.inbound.channel,
                                      raiser_user_id=ctx.inbound.user_id)
        days = ctx.settings.ledger_deadline_days.get("complaint", 5)
        ctx.say(texts.REPORT_SAVED.format(id=problem.id, days=days))


def parse_date(text: str, today: date) -> date | None:
    """'2026-12-01', '12-01', '12/1' or '12月1日' (the next such day from today)."""
    text = (text or "").strip()
    match = re.fullmatch(r"(?:(\d{4})[-/年.])?(\d{1,2})[-/月.](\d{1,2})日?", text)
    if not match:
        return None
    year = int(match.group(1)) if match.group(1) else today.year
    try:
        day = date(year, int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None
    if not match.group(1) and day < today:
        try:
            day = day.replace(year=day.year + 1)
        except ValueError:
            return None
    return day


LEDGER = Feature("ledger", Role.SUPERVISOR, texts.FLOW_NAMES["ledger"], help=texts.HELP_LEDGER, words=("台账",),
                 flow=lambda settings: LedgerFlow(page_size=settings.household_page_size))
TODO = Feature("todo", Role.CADRE, texts.FLOW_NAMES["todo"], help=texts.HELP_TODO, words=("待办",),
               flow=lambda settings: TodoFlow(page_size=settings.household_page_size))
REPORT = Feature("report", None, texts.FLOW_NAMES["report"], help=texts.HELP_REPORT, words=("反映问题", "投诉"),
                 flow=lambda settings: ReportFlow())
MINE = Feature("mine", None, texts.FLOW_NAMES["mine"], help=texts.HELP_MINE, words=("我的反映",),
               flow=lambda settings: MineFlow(page_size=settings.household_page_size))
