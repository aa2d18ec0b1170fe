"""The supervisors' one-shot commands: /export (the forms 附件1–5 as documents) and /ranking (text and
a chart). Both keep to the supervisor's scope (bot.core.scope): a unit's supervisor sees their
unit, the work-style office and admins every unit.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from bot import texts
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.periods import half_label, parse_half
from bot.core.scope import unit_scope
from bot.core.types import File
from bot.fonts import FontNotFound
from bot.reports import forms, rankings
from storage.models import Role, Unit

log = logging.getLogger(__name__)
CHART_ROWS = 15


def _take_half(ctx: Context, words: list[str]) -> str:
    """The half-year named among the words (removed from them), else the current one."""
    for word in list(words):
        half = parse_half(word)
        if half:
            words.remove(word)
            return half
    return ctx.half


def cmd_export(ctx: Context) -> None:
    """Sends the report forms (附件1–5) of the supervisor's units as Excel workbooks."""
    words = ctx.inbound.args.split()
    half = _take_half(ctx, words)
    chosen = forms.parse_forms(words[0] if words else "")
    if chosen is not None:
        words = words[1:]
    elif words[0].isascii():  # "7", "x": a form that does not exist
        return ctx.say(texts.EXPORT_USAGE)
    else:
        chosen = list(forms.FORMS)  # the words are a unit's name
    unit_name = " ".join(words)[:100]
    scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
    units = forms.units_for(ctx.session, scope, unit_name or None)
    if units is None:
        return ctx.say(texts.EXPORT_UNKNOWN_UNIT.format(unit=unit_name))
    if unit_name and scope is not None and units[0].id not in scope:
        return ctx.say(texts.EXPORT_FORBIDDEN_UNIT)
    files = forms.export(ctx.session, chosen, half, units, ctx.settings)
    who = units[0].name if len(units) == 1 else texts.EXPORT_ALL_UNITS.format(count=len(units))
    ctx.say(texts.EXPORT_READY.format(half_label=half_label(half), forms="、".join(f"附件{n}" for n in chosen),
                                      units=who), files=files)


def cmd_ranking(ctx: Context) -> None:
    """Ranks the units (work-style office) or the unit's cadres by satisfaction, visits or timeliness."""
    words = ctx.inbound.args.split()
    half = _take_half(ctx, words)
    metric = rankings.parse_metric(" ".join(words))
    if metric is None:
        return ctx.say(texts.RANKING_USAGE)
    text, png = ranking_report(ctx.session, ctx.settings, metric, half, unit_scope(ctx.session, ctx.cadre, ctx.settings),
                               ctx.now.astimezone(ctx.settings.tz).date(), own_unit_id=ctx.cadre.unit_id)
    files = [File(f"ranking-{metric}-{half}.png", "image/png", png)] if png else []
    ctx.say(text, files=files)


def ranking_report(session, settings, metric: str, half: str, scope: set[int] | None, today, *,
                   own_unit_id: int | None = None, limit: int | None = 10, chart: bool = True) -> tuple[str, bytes | None]:
    """The ranking text and chart for a scope: every unit and the bottom cadres for the whole city
    (scope None), or one unit's cadres and the unit's place among all units."""
    minimum = settings.ranking_min_ratings
    if scope is None:
        units = rankings.ranking(session, metric, rankings.UNITS, half, settings, today)
        cadres = rankings.ranking(session, metric, rankings.CADRES, half, settings, today)
        lines = rankings.lines(units, who=texts.RANKING_UNITS, limit=limit, minimum=minimum)
        lines += [""] + rankings.lines(cadres, who=texts.RANKING_CADRES, limit=3 if limit else None, minimum=minimum)
        shown, who, with_unit = units, texts.RANKING_UNITS, False
    else:
        names = dict(session.execute(select(Unit.id, Unit.name).where(Unit.id.in_(list(scope)))).all())
        who = texts.RANKING_CADRES_OF.format(unit="、".join(names[u] for u in sorted(names)))
        cadres = rankings.ranking(session, metric, rankings.CADRES, half, settings, today, unit_ids=sorted(scope))
        lines = rankings.lines(cadres, who=who, limit=limit, with_unit=len(scope) > 1, minimum=minimum)
        units = rankings.ranking(session, metric, rankings.UNITS, half, settings, today)
        own = units.position(own_unit_id) if own_unit_id in scope else None
        if own is not None:
            lines.append(texts.RANKING_OWN_UNIT.format(total=len(units.ranked), rank=own.rank,
                                                       rate=rankings.percent(own)))
        shown, with_unit = cadres, len(scope) > 1
    lines.append(texts.RANKING_NOTES[metric])
    png = None
    if chart:
        try:
            png = rankings.chart(shown, who=who, count=CHART_ROWS, with_unit=with_unit)
        except FontNotFound as exc:  # the text still goes out; the operator sees why the chart did not
            log.warning("ranking chart left out: %s", exc)
    return "\n".join(lines), png


EXPORT = Feature("export", Role.SUPERVISOR, "导出报表", help=texts.HELP_EXPORT, words=("导出", "报表"), run=cmd_export,
                 long=True, reads_only=True)
RANKING = Feature("ranking", Role.SUPERVISOR, "排名", help=texts.HELP_RANKING, words=("排名",), run=cmd_ranking,
                  long=True, reads_only=True)
