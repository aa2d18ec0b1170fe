"""The operator's side of the supervisors' tools: ``python -m bot import-hotline | export | ranking |
spot-check``. Registered by ``add_commands`` from bot.cli; exit code 1 for bad input (a bad file,
an unknown unit), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.config import Settings
from bot.errors import CommandInputError


class CommandRefused(CommandInputError):
    """Bad input on the command line: the message is printed, the exit code is 1."""


_Refused = CommandRefused  # the name it had


def _refusing(command):
    """Turns ``_Refused`` into its message on stderr and exit code 1."""
    def run(args, settings: Settings) -> int:
        try:
            return command(args, settings)
        except _Refused as exc:
            print(str(exc), file=sys.stderr)
            return 1

    run.__doc__ = command.__doc__
    return run


def _engine(settings: Settings):
    from bot.cli import _engine as migrated_engine

    return migrated_engine(settings)


def _now():
    from storage.db import utcnow as system_clock

    return system_clock()


def _half(args, settings: Settings) -> str:
    from bot.core.periods import half_of, parse_half

    if not args.half:
        return half_of(_now(), settings.tz)
    half = parse_half(args.half)
    if half is None:
        raise _Refused(f"半年度“{args.half}”格式不对，例如 2026H2（下半年）或 2026H1（上半年）。")
    return half


def _unit(session, name: str | None):
    """The unit named by --unit, None without one."""
    from bot.reports import forms

    if not name:
        return None
    units = forms.units_for(session, None, name)
    if units is None:
        raise _Refused(f"没有名为“{name}”的单位。")
    return units[0]


@_refusing
def cmd_import_hotline(args, settings: Settings) -> int:
    """Imports 12345/89000 hotline items (附件5 layout) onto the ledger, all or nothing."""
    from bot.imports.hotline import HotlineError, import_hotline

    engine = _engine(settings)
    try:
        report = import_hotline(engine, Path(args.file), progress=not args.quiet)
    except HotlineError as exc:
        raise _Refused(f"导入失败，未写入任何数据。共 {len(exc.issues)} 处问题：\n{exc}") from exc
    print(report.summary())
    return 0


@_refusing
def cmd_export(args, settings: Settings) -> int:
    """Writes the report forms 附件1–5 of a half-year as XLSX files, one per form."""
    from bot.reports import forms
    from storage.db import session_scope

    chosen = forms.parse_forms(args.form)
    if chosen is None:
        raise _Refused(f"--form 只能是 1 到 5 或 all（“{args.form}”）。")
    half = _half(args, settings)
    with session_scope(_engine(settings)) as session:
        unit = _unit(session, args.unit)
        units = [unit] if unit else forms.units_for(session, None)
        files = forms.export(session, chosen, half, units, settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        (out / file.filename).write_bytes(file.content)
        print(out / file.filename)
    print(f"已导出 {len(files)} 个文件（{len(units)} 个单位，联系电话未打码）。", file=sys.stderr)
    return 0


@_refusing
def cmd_ranking(args, settings: Settings) -> int:
    """Prints the rankings (and writes the chart) of the whole city or of one unit's cadres."""
    from bot import texts
    from bot.reports import rankings
    from bot.reports.commands import ranking_report
    from storage.db import session_scope

    metrics = rankings.METRICS if args.by in ("all", "全部") else (rankings.parse_metric(args.by),)
    if None in metrics:
        raise _Refused(texts.RANKING_USAGE)
    half = _half(args, settings)
    today = _now().astimezone(settings.tz).date()
    with session_scope(_engine(settings)) as session:
        unit = _unit(session, args.unit)
        for index, metric in enumerate(metrics):
            text, png = ranking_report(session, settings, metric, half, {unit.id} if unit else None, today,
                                       own_unit_id=unit.id if unit else None, limit=None, chart=bool(args.chart))
            print(("\n" if index else "") + text)
            if png:
                path = Path(args.chart)
                if len(metrics) > 1:
                    path = path.with_name(f"{path.stem}-{metric}{path.suffix or '.png'}")
                path.write_bytes(png)
                print(f"（图表：{path}）", file=sys.stderr)
    return 0


@_refusing
def cmd_spot_check(args, settings: Settings) -> int:
    """Draws visits for a phone check and lists them with full phones, or reports the outcomes."""
    from bot import texts
    from bot.core.flows.spotcheck import summary_lines
    from bot.reports import spotcheck
    from storage.db import session_scope

    share = args.share if args.share is not None else settings.spot_check_share
    if not 0 < share <= 1:
        raise _Refused(f"--share 应在 0 和 1 之间（“{share}”）。")
    half = _half(args, settings)
    with session_scope(_engine(settings)) as session:
        unit = _unit(session, args.unit)
        unit_ids = [unit.id] if unit else None
        if args.report:
            print("\n".join(summary_lines(spotcheck.summary(session, half, unit_ids), half)))
            return 0
        result = spotcheck.draw(session, half, share, _now(), seed=args.seed, unit_ids=unit_ids)
        drawn = spotcheck.items(session, half, unit_ids=unit_ids, visit_ids=result.drawn)
    # Printed after the commit: a list cut short (a closed pipe) must not undo the draw.
    if not result.drawn:
        print(texts.SPOT_NOTHING_TO_DRAW)
        return 0
    again = texts.SPOT_DRAWN_AGAIN.format(count=result.again) if result.again else ""
    print(texts.SPOT_DRAWN.format(new=result.new, seed=result.seed, again=again) + result.reasons_text())
    print(texts.SPOT_LIST_HEADER.format(count=len(drawn)))
    for item in drawn:
        outcome = "" if item.outcome == spotcheck.PENDING else f"（{texts.SPOT_OUTCOMES[item.outcome]}）"
        print(texts.SPOT_LIST_LINE.format(
            id=item.id, cadre=item.cadre, unit=item.unit, household=item.household, address=item.address,
            phone=item.phone, date=item.visited_at.astimezone(settings.tz).strftime("%Y-%m-%d"), outcome=outcome,
            why=item.why))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds the four commands to ``python -m bot``'s parser."""
    p = sub.add_parser("import-hotline", help="import 12345/89000 hotline items (附件5 layout) onto the ledger")
    p.add_argument("file", help="an .xlsx workbook (or .csv) with 反映人姓名 联系电话 问题内容 办理情况 责任单位 备注")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import_hotline)

    p = sub.add_parser("export", help="write the report forms 附件1-5 of a half-year as XLSX (phones unmasked)")
    p.add_argument("--form", default="all", help="1, 2, 3, 4, 5 or all (default all)")
    p.add_argument("--half", help="the half-year, e.g. 2026H2 (default: the current one)")
    p.add_argument("--unit", help="only this unit (单位名称); default every unit, one sheet each")
    p.add_argument("--out", default="exports", help="output folder (default: exports)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ranking", help="rank units and cadres by satisfaction, visits or timeliness; 末位 named")
    p.add_argument("--by", default="all", help="满意度, 走访, 时效 or all (default all)")
    p.add_argument("--half", help="the half-year, e.g. 2026H2 (default: the current one)")
    p.add_argument("--unit", help="rank this unit's cadres (default: every unit and every cadre)")
    p.add_argument("--chart", metavar="FILE.png", help="also write the chart (one per metric with --by all)")
    p.set_defaults(func=cmd_ranking)

    p = sub.add_parser("spot-check", help="电话随机访问: draw visits per cadre for a phone check, or --report")
    p.add_argument("--share", type=float, help="share of each cadre's visits to draw, at least one "
                                               "(default SPOT_CHECK_SHARE)")
    p.add_argument("--seed", type=int, help="random seed: the same seed on the same data draws the same visits")
    p.add_argument("--half", help="the half-year, e.g. 2026H2 (default: the current one)")
    p.add_argument("--unit", help="only this unit's cadres")
    p.add_argument("--report", action="store_true", help="per cadre: visits denied or never verified")
    p.set_defaults(func=cmd_spot_check)
