"""One-shot commands: help, binding, progress views and the admin's binding codes.

Each command is a function of the context and its ``Feature`` declaration at the end of this module
(the least role that may use it, its words, help line and menu place); the router enforces the role,
so a command here never checks it again.
"""

from __future__ import annotations

from sqlmodel import select

from bot import texts
from bot.core import binding, evaluation, evidence, service_qr
from bot.core.dialogue import Context
from bot.core.feature import RANK, Feature, Menu, rank
from bot.core.flows import rating
from bot.core.periods import half_label
from bot.core.phones import normalize_mobile
from bot.core.progress import cadre_progress, households_with_status, progress_bar, unit_progress
from bot.core.scope import unit_scope
from storage.models import Cadre, Role, Unit

__all__ = ["RANK", "rank", "help_text"]


def help_text(cadre) -> str:
    """What this user may do: derived from the list of features."""
    from bot.core.features import REGISTRY  # the list imports this module

    return REGISTRY.help_text(cadre)


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
    """Greets the user; a payload (deep link, or a WeChat QR scene) may carry a binding code, a card's
    evaluation code or a one-time service ticket (一事一评)."""
    payload = ctx.inbound.args.strip()
    if payload.startswith(binding.START_PREFIX):
        return _bind_with(ctx, payload[len(binding.START_PREFIX):])
    if evaluation.looks_like_token(payload) or service_qr.looks_like_token(payload):
        return rating.FLOW.start(ctx, payload)
    if ctx.cadre is None:
        ctx.say(texts.WELCOME_UNBOUND if ctx.inbound.share_contact else texts.WELCOME_UNBOUND_TYPED,
                request_contact=True)
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
    try:
        cadre = binding.redeem_code(ctx.session, code, ctx.inbound.channel, ctx.inbound.user_id, ctx.now,
                                    ctx.settings)
    except binding.BindingLocked as locked:
        ctx.say(texts.BIND_LOCKED.format(minutes=locked.minutes_left))
        return
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
    ctx.cadre = binding.BoundCadre.of(cadre)
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
    proof = {row.cadre_id: row for row in evidence.summary(ctx.session, ctx.half, scope)}
    for p in progress:
        behind = p.visited < p.assigned or p.service_objects < minimum
        lines.append(texts.UNIT_PROGRESS_LINE.format(name=p.cadre.name, done=p.visited, total=p.assigned,
                                                     objects=p.service_objects,
                                                     flag=texts.UNIT_BEHIND if behind else ""))
        if p.cadre.id in proof:  # how well the visits are evidenced (住户确认 · 位置相符 · 照片 · 无凭证)
            row = proof[p.cadre.id]
            lines.append(texts.UNIT_EVIDENCE.format(shares=row.shares())
                         + (texts.FLAGS_FLAGGED.format(count=row.flags) if row.flags else ""))
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


def _cancel_or_resume(ctx: Context) -> None:  # pragma: no cover - the router carries these out
    raise AssertionError("cancel and resume are carried out by the router")


START = Feature("start", None, "开始", words=("开始",), run=cmd_start)
BIND = Feature("bind", None, "绑定干部身份", help=texts.HELP_BIND, words=("绑定",), run=cmd_bind, unbound_only=True)
PROGRESS = Feature("progress", Role.CADRE, "我的进度", help=texts.HELP_PROGRESS, words=("进度", "我的进度"),
                   run=cmd_progress, menu=Menu(texts.WECHAT_MENU["progress"]))
UNIT = Feature("unit", Role.SUPERVISOR, "单位进度", help=texts.HELP_UNIT, words=("单位进度",), run=cmd_unit,
               long=True, reads_only=True)
MUTE = Feature("mute", Role.CADRE, "暂停简报", help=texts.HELP_MUTE, run=cmd_mute)
UNMUTE = Feature("unmute", Role.CADRE, "恢复简报", run=cmd_unmute)
BINDCODE = Feature("bindcode", Role.ADMIN, "生成绑定码", help=texts.HELP_ADMIN, run=cmd_bindcode)
CANCEL = Feature("cancel", None, "取消当前操作", help=texts.HELP_CANCEL, words=("取消",), run=_cancel_or_resume)
RESUME = Feature("resume", None, "继续未完成的操作", words=("继续",), run=_cancel_or_resume)
HELP = Feature("help", None, "帮助", help=texts.HELP_HELP, words=("帮助", "菜单"), run=cmd_help,
               menu=Menu(texts.WECHAT_MENU["help"]))
