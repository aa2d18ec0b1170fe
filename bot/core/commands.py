"""One-shot commands: help, binding, progress views and the admin's binding codes.

Each command is a function of the context plus one entry in ``COMMANDS`` with the least role
that may use it; the engine enforces the role, so a command here never checks it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlmodel import select

from bot import texts
from bot.core import appeals, binding, evaluation, rating_views, service_qr
from bot.core.dialogue import Context
from bot.core.flows import rating
from bot.core.periods import half_label
from bot.core.phones import normalize_mobile
from bot.core.progress import cadre_progress, households_with_status, progress_bar, unit_progress
from bot.core.scope import unit_scope
from bot.reports import commands as reports
from storage.models import Cadre, Role, Unit

# Least rank needed; a bound account of any role has rank >= 1.
RANK = {None: 0, Role.CADRE: 1, Role.SUPERVISOR: 2, Role.OFFICE: 2, Role.ADMIN: 3}


@dataclass(frozen=True)
class Command:
    run: Callable[[Context], None]
    role: str | None  # None: anyone, bound or not
    long: bool = False  # reads a unit's or the city's data, draws charts or writes files: never inline


def rank(cadre: Cadre | None) -> int:
    return RANK.get(cadre.role, 1) if cadre else 0


def help_text(cadre: Cadre | None) -> str:
    if cadre is None:
        return texts.HELP_HEADER + "\n" + texts.HELP_UNBOUND + "\n" + texts.HELP_CITIZEN
    parts = [texts.HELP_HEADER, texts.HELP_CADRE, texts.HELP_OBJECT, texts.HELP_LEDGER_CADRE, texts.HELP_CITIZEN]
    if rank(cadre) >= RANK[Role.SUPERVISOR]:
        parts.append(texts.HELP_SUPERVISOR)
        parts.append(texts.HELP_LEDGER_SUPERVISOR)
        parts.append(texts.HELP_RATINGS)
        parts.append(texts.HELP_REPORTS)
    if rank(cadre) >= RANK[Role.ADMIN]:
        parts.append(texts.HELP_ADMIN)
    parts.append(texts.HELP_FOOTER)
    return "\n".join(parts)


def unit_name(ctx: Context, cadre: Cadre) -> str:
    unit = ctx.session.get(Unit, cadre.unit_id)
    return unit.name if unit else ""


def cmd_help(ctx: Context) -> None:
    """Lists what this user may do."""
    if ctx.cadre is None:
        ctx.say(help_text(None), request_contact=True)
    else:
        ctx.say(help_text(ctx.cadre))


def cmd_start(ctx: Context) -> None:
    """Greets the user; a payload (deep link) may carry a binding code or an evaluation code."""
    payload = ctx.inbound.args.strip()
    if payload.startswith(binding.START_PREFIX):
        return _bind_with(ctx, payload[len(binding.START_PREFIX):])
    if evaluation.looks_like_token(payload):
        return rating.FLOW.start(ctx, payload)
    if ctx.cadre is None:
        ctx.say(texts.WELCOME_UNBOUND, request_contact=True)
        return
    ctx.say(texts.WELCOME_BOUND.format(name=ctx.cadre.name, unit=unit_name(ctx, ctx.cadre)) + "\n"
            + help_text(ctx.cadre))


def cmd_bind(ctx: Context) -> None:
    """Binds the account with a code typed after /bind."""
    code = ctx.inbound.args.strip()
    if not code:
        ctx.say(texts.BIND_USAGE)
        return
    _bind_with(ctx, code)


def _bind_with(ctx: Context, code: str) -> None:
    if ctx.cadre is not None:
        ctx.say(texts.ALREADY_BOUND.format(name=ctx.cadre.name, unit=unit_name(ctx, ctx.cadre)))
        return
    cadre = binding.redeem_code(ctx.session, code, ctx.inbound.channel, ctx.inbound.user_id, ctx.now)
    if cadre is None:
        ctx.say(texts.BIND_CODE_INVALID)
        return
    ctx.cadre = cadre
    ctx.say(texts.BOUND_OK.format(name=cadre.name, unit=unit_name(ctx, cadre)))


def bind_by_contact(ctx: Context) -> None:
    """Binds the account to the cadre whose mobile the user shared, if the card is the user's own."""
    contact = ctx.inbound.contact
    if ctx.cadre is not None:
        ctx.say(texts.ALREADY_BOUND.format(name=ctx.cadre.name, unit=unit_name(ctx, ctx.cadre)))
        return
    if contact.user_id is None or contact.user_id != ctx.inbound.user_id:
        ctx.say(texts.CONTACT_NOT_OWN, request_contact=True)
        return
    cadre = binding.cadre_by_mobile(ctx.session, contact.phone)
    if cadre is None:
        ctx.say(texts.CONTACT_UNKNOWN.format(phone=contact.phone[:20]))
        return
    binding.bind(ctx.session, cadre, ctx.inbound.channel, ctx.inbound.user_id, "contact", ctx.now)
    ctx.cadre = cadre
    ctx.say(texts.BOUND_OK.format(name=cadre.name, unit=unit_name(ctx, cadre)))


def cmd_progress(ctx: Context) -> None:
    """Shows visited N of M households this half-year, which remain, and the service objects."""
    p = cadre_progress(ctx.db, ctx.cadre, ctx.half)
    lines = [texts.PROGRESS.format(half_label=half_label(ctx.half), done=p.visited, total=p.assigned,
                                   bar=progress_bar(p.visited, p.assigned), contacts=p.contacts,
                                   objects=p.service_objects)]
    remaining = [item for item in households_with_status(ctx.db, ctx.cadre.id, ctx.half) if not item.visited]
    if remaining:
        lines.append(texts.PROGRESS_REMAINING)
        lines += [f"• {h.name} · {h.address}" for h in remaining]
    elif p.assigned:
        lines.append(texts.PROGRESS_ALL_DONE)
    if p.service_objects < ctx.settings.service_object_minimum:
        lines.append(texts.PROGRESS_OBJECTS_LOW.format(minimum=ctx.settings.service_object_minimum))
    ctx.say("\n".join(lines))


def cmd_unit(ctx: Context) -> None:
    """Shows the supervisor's unit cadre by cadre, or, for the work-style office, every unit in a line."""
    scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
    query = select(Cadre).where(Cadre.active == True)  # noqa: E712
    if scope is not None:
        query = query.where(Cadre.unit_id.in_(scope))
    cadres = ctx.session.exec(query.order_by(Cadre.unit_id, Cadre.name)).all()
    minimum = ctx.settings.service_object_minimum
    progress = [p for p in unit_progress(ctx.session, list(cadres), ctx.half)
                if p.assigned or p.cadre.role == Role.CADRE]
    if scope is None:
        units = {u.id: u.name for u in ctx.session.exec(select(Unit)).all()}
        lines = [texts.ALL_UNITS_HEADER.format(half_label=half_label(ctx.half))]
        by_unit: dict[int, list] = {}
        for p in progress:
            by_unit.setdefault(p.cadre.unit_id, []).append(p)
        for unit_id, items in sorted(by_unit.items(), key=lambda kv: units.get(kv[0], "")):
            behind = sum(1 for p in items if p.visited < p.assigned or p.service_objects < minimum)
            lines.append(texts.ALL_UNITS_LINE.format(
                unit=units.get(unit_id, "?"), done=sum(p.visited for p in items),
                total=sum(p.assigned for p in items), cadres=len(items),
                flag=texts.ALL_UNITS_BEHIND.format(count=behind) if behind else ""))
        return ctx.say("\n".join(lines))
    lines = [texts.UNIT_PROGRESS_HEADER.format(unit=unit_name(ctx, ctx.cadre), half_label=half_label(ctx.half))]
    for p in progress:
        behind = p.visited < p.assigned or p.service_objects < minimum
        lines.append(texts.UNIT_PROGRESS_LINE.format(name=p.cadre.name, done=p.visited, total=p.assigned,
                                                     objects=p.service_objects,
                                                     flag=texts.UNIT_BEHIND if behind else ""))
    ctx.say("\n".join(lines))


def cmd_bindcode(ctx: Context) -> None:
    """Issues a one-time binding code for the cadre with the given mobile."""
    mobile = normalize_mobile(ctx.inbound.args)
    if mobile is None:
        ctx.say(texts.BINDCODE_USAGE)
        return
    cadre = binding.cadre_by_mobile(ctx.session, mobile)
    if cadre is None:
        ctx.say(texts.BINDCODE_UNKNOWN.format(mobile=mobile))
        return
    code, expires = binding.issue_code(ctx.session, cadre, ctx.now, ctx.settings)
    link = binding.telegram_link(ctx.settings, code)
    local = expires.astimezone(ctx.settings.tz)
    ctx.say(texts.BINDCODE_ISSUED.format(name=cadre.name, unit=unit_name(ctx, cadre), code=code,
                                         expires=local.strftime("%Y-%m-%d %H:%M"),
                                         link=texts.BINDCODE_LINK.format(link=link) if link else ""))


def _set_muted(ctx: Context, muted: bool) -> None:
    cadre = ctx.session.get(Cadre, ctx.cadre.id)
    cadre.digests_muted = muted
    ctx.session.add(cadre)
    ctx.say(texts.MUTED if muted else texts.UNMUTED)


def cmd_mute(ctx: Context) -> None:
    """Stops the daily and weekly digests for this user (deadline reminders still come)."""
    _set_muted(ctx, True)


def cmd_unmute(ctx: Context) -> None:
    """Resumes the digests."""
    _set_muted(ctx, False)


COMMANDS: dict[str, Command] = {
    "start": Command(cmd_start, None),
    "help": Command(cmd_help, None),
    "bind": Command(cmd_bind, None),
    "progress": Command(cmd_progress, Role.CADRE),
    "unit": Command(cmd_unit, Role.SUPERVISOR, long=True),
    "bindcode": Command(cmd_bindcode, Role.ADMIN),
    "mute": Command(cmd_mute, Role.CADRE),
    "unmute": Command(cmd_unmute, Role.CADRE),
    "ratings": Command(rating_views.cmd_ratings, Role.SUPERVISOR, long=True),
    # Not long: it writes an audit row for every phone it shows, and lists only open tasks.
    "callbacks": Command(rating_views.cmd_callbacks, Role.SUPERVISOR),
    "export": Command(reports.cmd_export, Role.SUPERVISOR, long=True),
    "ranking": Command(reports.cmd_ranking, Role.SUPERVISOR, long=True),
    "serviceqr": Command(service_qr.cmd_serviceqr, Role.CADRE),  # 一事一评 (issue #11)
    "status": Command(evaluation.cmd_status, None),  # 评价编号 -> where the follow-up stands (issue #11)
    "appeal": Command(appeals.cmd_appeal, Role.CADRE),  # 申诉 (issue #11)
    "appeals": Command(appeals.cmd_appeals, Role.SUPERVISOR),  # 复核, by the 作风办 (issue #11)
}

# Words that act as commands when typed outside a flow (channels without a command menu).
KEYWORDS = {
    "帮助": "help", "菜单": "help", "开始": "start", "绑定": "bind",
    "走访": "visit", "入户走访": "visit", "开始走访": "visit",
    "日常走访": "contact", "日常": "contact", "进度": "progress", "我的进度": "progress",
    "单位进度": "unit", "反映问题": "report", "服务对象": "object", "投诉": "report", "我的反映": "mine", "台账": "ledger", "待办": "todo", "评价": "ratings", "评价统计": "ratings", "回访": "callbacks", "取消": "cancel", "继续": "resume",
}
# The supervisors' tools (bot.reports).
KEYWORDS.update({"服务评价码": "serviceqr", "一事一评": "serviceqr", "申诉": "appeal", "复核": "appeals", "查询进度": "status", "评价进度": "status"})
KEYWORDS.update({"导出": "export", "报表": "export", "排名": "ranking", "抽查": "spotcheck", "电话抽查": "spotcheck"})
