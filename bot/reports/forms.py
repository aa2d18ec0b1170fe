"""The report forms 附件1–5 of seed 004 as XLSX workbooks, in the seed's layout.

One workbook per form; in it one sheet per unit (附件1–2: one for the unit's village households
(村民) and one for its community households (居民); 附件4: one for 行业领域 and one for 公共方面
problems). Each sheet is the unit's complete form: the title, the subtitle where the seed has one,
the line "单位(公章)：<unit>", the header row with the seed's columns, the data rows, the note.
A unit's supervisor gets a workbook with only their unit's sheets, which is the form they print,
stamp and hand in; the work-style office gets every unit in one file per form, which is what it
needs to compile (分类汇总) and assign, instead of a hundred attachments, with a first sheet 汇总
counting each unit's rows (who reported what, and who nothing).

What goes into each form, for a half-year:
  附件1  the households visited (集中入户走访) by the unit's cadres; 备注: who visited, when, the
         strongest evidence of the household's visits and their flags (走过场), and the visiting
         cadre's share of visits at each level of evidence in the half-year: all as stored when each
         visit was confirmed (bot/core/evidence.py), counted here, never worked out again.
  附件2  problems raised by households (visits, everyday contacts) that are not 行业领域, taken in
         by the unit; 备注: the item's state on the ledger, and its own 备注.
  附件3  the unit's active service objects (a roster, not a half-year's events); 备注: the object's
         own note and the cadre who keeps the contact.
  附件4  problems raised by the unit's service objects: 行业领域 on one sheet, everything else
         (公共方面, or not yet classified) on the other; 备注 as 附件2.
  附件5  hotline items (12345/89000) whose responsible unit is the unit; 办理情况 is the ledger's
         result once the item is closed, else what the hotline file said.
Problems belong to the half-year they were recorded in (created_at, local time).

Phones are written in full: these are official reports to the work-style office.
"""

from __future__ import annotations

import io
import re
from copy import copy
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import case, func, or_, select
from sqlmodel import Session

from bot import texts
from bot.config import Settings
from bot.core import evidence
from bot.core.periods import half_bounds, half_label
from bot.core.types import File
from bot.imports.hotline import handling
from storage.models import AreaKind, Cadre, Household, Problem, ProblemSource, ServiceObject, Unit, Visit, VisitFlag

FORMS = (1, 2, 3, 4, 5)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
INDUSTRY, PUBLIC = "行业领域", "公共方面"
# Sheets per unit: the household's area kind for 附件1–2, the problem's remit for 附件4.
PARTS: dict[int, tuple[str, ...]] = {1: (AreaKind.VILLAGE, AreaKind.COMMUNITY), 2: (AreaKind.VILLAGE, AreaKind.COMMUNITY),
                                     3: ("",), 4: (INDUSTRY, PUBLIC), 5: ("",)}
DEADLINES = {1: "deadline_form12", 2: "deadline_form12", 3: "deadline_form34", 4: "deadline_form34",
             5: "deadline_form5"}
# Column widths in characters, per form (the content columns wide, phones fit 0571-87654321).
WIDTHS = {1: (36, 14, 16, 48), 2: (12, 30, 16, 10, 48, 20), 3: (16, 34, 16, 30), 4: (16, 30, 16, 10, 48, 20),
          5: (12, 16, 48, 30, 18, 20)}

Row = tuple[str, ...]


@dataclass(frozen=True)
class Sheet:
    """One unit's form (or one part of it): what a printed page of the seed's form would hold."""

    unit: Unit
    part: str  # 村 / 居 / 行业领域 / 公共方面, or "" for forms with one sheet per unit
    rows: list[Row]


def title(form: int) -> str:
    return texts.REPORT_FORMS[form]["title"]


def columns(form: int) -> tuple[str, ...]:
    return texts.REPORT_FORMS[form]["columns"]


def note(form: int, settings: Settings) -> str:
    dates = "、".join(texts.REPORT_DATE.format(month=int(md[:2]), day=int(md[3:]))
                      for md in getattr(settings, DEADLINES[form]))
    return texts.REPORT_FORMS[form]["note"].format(dates=dates, phone=settings.report_contact_phone)


def subtitle(form: int, part: str) -> str | None:
    template = texts.REPORT_FORMS[form]["subtitle"]
    return template.format(part=texts.REPORT_PARTS.get(part, part)) if template else None


def parse_forms(text: str) -> list[int] | None:
    """'1' -> [1]; 'all', '全部' or '' -> all five; '1,2' or '12' -> [1, 2]; None when unreadable."""
    text = (text or "").strip().lower().replace("附件", "")
    if text in ("", "all", "全部", "所有"):
        return list(FORMS)
    digits = re.sub(r"[\s,，、]+", "", text)
    if not digits.isdigit() or any(d not in "12345" for d in digits):
        return None
    return sorted({int(d) for d in digits})


# ---------------------------------------------------------------------------------------------
# The rows, one query per form for every unit asked for


def _local_date(moment: datetime, settings: Settings) -> str:
    local = moment.astimezone(settings.tz)
    return texts.REPORT_DATE.format(month=local.month, day=local.day)


def _remark(*parts: str | None) -> str:
    return "；".join(p for p in parts if p)


def _status_remark(status: str, note: str | None) -> str:
    return _remark(texts.STATUS_NAMES.get(status, status), note)


def _in_units(column, unit_ids: Sequence[int]):
    return column.in_(list(unit_ids))


def form_rows(session: Session, form: int, half: str, unit_ids: Sequence[int],
              settings: Settings) -> dict[tuple[int, str], list[Row]]:
    """The data rows of one form for the given units: (unit id, part) -> rows, in the form's order."""
    start, end = half_bounds(half, settings.tz)
    out: dict[tuple[int, str], list[Row]] = defaultdict(list)
    if not unit_ids:
        return out
    if form == 1:
        counted = (Visit.half == half, _in_units(Cadre.unit_id, unit_ids),
                   Visit.disputed_at.is_(None))  # a visit its household denied is not reported
        strongest = func.min(case({level: n for n, level in enumerate(evidence.LEVELS)}, value=Visit.evidence,
                                  else_=len(evidence.LEVELS) - 1))
        query = (select(Cadre.unit_id, Household.area_kind, Household.address, Household.name, Household.phone,
                        func.min(Visit.visited_at), func.min(Cadre.name), func.min(Visit.cadre_id), strongest,
                        Household.id)
                 .join(Household, Household.id == Visit.household_id).join(Cadre, Cadre.id == Visit.cadre_id)
                 .where(*counted)
                 .group_by(Cadre.unit_id, Household.id, Household.area_kind, Household.address, Household.name,
                           Household.phone)
                 .order_by(Cadre.unit_id, Household.address, Household.name))
        flagged: dict[int, set[str]] = defaultdict(set)
        for household_id, kind in session.execute(
                select(Visit.household_id, VisitFlag.kind).join(Visit, Visit.id == VisitFlag.visit_id)
                .join(Cadre, Cadre.id == Visit.cadre_id).where(*counted).distinct()):
            flagged[household_id].add(kind)
        shares = {row.cadre_id: row for row in evidence.summary(session, half, list(unit_ids))}
        for unit_id, kind, address, name, phone, first, cadre, cadre_id, rank, household_id in session.execute(query):
            visited = texts.REPORT_VISITED_BY.format(cadre=cadre, date=_local_date(first, settings))
            proof = texts.REPORT_EVIDENCE.format(level=texts.EVIDENCE_NAMES[evidence.LEVELS[rank]])
            flags = flagged.get(household_id)
            warn = texts.REPORT_FLAGGED.format(kinds="、".join(texts.FLAG_NAMES.get(k, k) for k in sorted(flags))) \
                if flags else None
            mine = shares.get(cadre_id)
            share = texts.REPORT_CADRE_EVIDENCE.format(
                cadre=mine.name, shares=mine.percentages(),
                flagged=texts.REPORT_CADRE_FLAGGED.format(count=mine.flags) if mine.flags else "") if mine else None
            out[(unit_id, _kind(kind))].append((address, name, phone, _remark(visited, proof, warn, share)))
    elif form == 2:
        query = (select(Problem.unit_id, Household.area_kind, func.coalesce(Problem.raiser_name, Household.name),
                        Household.address, func.coalesce(Problem.raiser_phone, Household.phone), Problem.category,
                        Problem.content, Problem.status, Problem.note)
                 .join(Household, Household.id == Problem.household_id)
                 .where(Problem.created_at >= start, Problem.created_at < end, Problem.service_object_id.is_(None),
                        or_(Problem.remit.is_(None), Problem.remit != INDUSTRY), _in_units(Problem.unit_id, unit_ids))
                 .order_by(Problem.unit_id, Problem.created_at, Problem.id))
        for unit_id, kind, name, address, phone, category, content, status, remark in session.execute(query):
            out[(unit_id, _kind(kind))].append((name, address, phone, category, content,
                                                _status_remark(status, remark)))
    elif form == 3:
        query = (select(ServiceObject.unit_id, ServiceObject.name, ServiceObject.workplace, ServiceObject.phone,
                        ServiceObject.note, Cadre.name)
                 .join(Cadre, Cadre.id == ServiceObject.cadre_id)
                 .where(ServiceObject.active == True, _in_units(ServiceObject.unit_id, unit_ids))  # noqa: E712
                 .order_by(ServiceObject.unit_id, Cadre.name, Cadre.id, ServiceObject.name, ServiceObject.id))
        for unit_id, name, workplace, phone, remark, cadre in session.execute(query):
            out[(unit_id, "")].append((name, workplace, phone,
                                       _remark(remark, texts.REPORT_CONTACT_CADRE.format(cadre=cadre))))
    elif form == 4:
        query = (select(ServiceObject.unit_id, Problem.remit, ServiceObject.name, ServiceObject.workplace,
                        func.coalesce(Problem.raiser_phone, ServiceObject.phone), Problem.category, Problem.content,
                        Problem.status, Problem.note)
                 .join(ServiceObject, ServiceObject.id == Problem.service_object_id)
                 .where(Problem.created_at >= start, Problem.created_at < end,
                        _in_units(ServiceObject.unit_id, unit_ids))
                 .order_by(ServiceObject.unit_id, Problem.created_at, Problem.id))
        for unit_id, remit, name, workplace, phone, category, content, status, remark in session.execute(query):
            out[(unit_id, INDUSTRY if remit == INDUSTRY else PUBLIC)].append(
                (name, workplace, phone, category, content, _status_remark(status, remark)))
    elif form == 5:
        query = (select(Problem.responsible_unit_id, Problem.raiser_name, Problem.raiser_phone, Problem.content,
                        Problem.status, Problem.result, Problem.hotline_status, Unit.name, Problem.note)
                 .join(Unit, Unit.id == Problem.responsible_unit_id)
                 .where(Problem.source == ProblemSource.HOTLINE, Problem.created_at >= start,
                        Problem.created_at < end, _in_units(Problem.responsible_unit_id, unit_ids))
                 .order_by(Problem.responsible_unit_id, Problem.created_at, Problem.id))
        for unit_id, name, phone, content, status, result, hotline_status, unit, remark in session.execute(query):
            out[(unit_id, "")].append((name or "", phone or "", content, handling(status, result, hotline_status),
                                       unit, remark or ""))
    else:
        raise ValueError(f"no form {form}")
    return out


def _kind(area_kind: str) -> str:
    return AreaKind.VILLAGE if area_kind == AreaKind.VILLAGE else AreaKind.COMMUNITY


def _area_kinds(session: Session, unit_ids: Sequence[int]) -> dict[int, set[str]]:
    """The area kinds (村/居) of each unit's active households, for leaving out sheets a unit cannot fill."""
    out: dict[int, set[str]] = defaultdict(set)
    query = (select(Cadre.unit_id, Household.area_kind).join(Cadre, Cadre.id == Household.cadre_id)
             .where(Household.active == True, _in_units(Cadre.unit_id, unit_ids))  # noqa: E712
             .group_by(Cadre.unit_id, Household.area_kind))
    for unit_id, kind in session.execute(query):
        out[unit_id].add(_kind(kind))
    return out


def sheets(session: Session, form: int, half: str, units: Sequence[Unit], settings: Settings) -> list[Sheet]:
    """Every sheet of one form for these units. A single unit gets all its parts, empty or not; in a
    workbook of several units, a 村民 or 居民 sheet is left out for a unit that has no such households
    and nothing to report in it."""
    rows = form_rows(session, form, half, [u.id for u in units], settings)
    kinds = _area_kinds(session, [u.id for u in units]) if form in (1, 2) and len(units) > 1 else {}
    out = []
    for unit in units:
        for part in PARTS[form]:
            data = rows.get((unit.id, part), [])
            if kinds and not data and part not in kinds.get(unit.id, ()) and kinds.get(unit.id):
                continue
            out.append(Sheet(unit, part, data))
    return out


# ---------------------------------------------------------------------------------------------
# Writing


class _Styles:
    """The few styles every sheet uses, each as a prototype cell whose style array is copied.

    Copying a prototype's style is about twice as fast as assigning font, border and alignment
    to every cell, which is what decides the export time of a city's 20,000 service objects.
    """

    def __init__(self, ws):
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.styles import Alignment, Border, Font, PatternFill, Side

        thin = Side(style="thin", color="000000")
        border = Border(left=thin, right=thin, top=thin, bottom=thin)
        body = Font(name="宋体", size=11)
        self._protos = {}
        for name, font, align, extra in (
                ("title", Font(name="宋体", size=16, bold=True), Alignment(horizontal="center", vertical="center"), {}),
                ("subtitle", Font(name="宋体", size=12, bold=True), Alignment(horizontal="center", vertical="center"),
                 {}),
                ("unit", body, Alignment(horizontal="left", vertical="center"), {}),
                ("half", body, Alignment(horizontal="right", vertical="center"), {}),
                ("header", Font(name="宋体", size=11, bold=True),
                 Alignment(horizontal="center", vertical="center", wrap_text=True),
                 {"border": border, "fill": PatternFill("solid", fgColor="F2F2F2")}),
                ("body", body, Alignment(vertical="center", wrap_text=True), {"border": border}),
                ("note", body, Alignment(vertical="top", wrap_text=True), {})):
            proto = WriteOnlyCell(ws)
            proto.font, proto.alignment = font, align
            for attr, value in extra.items():
                setattr(proto, attr, value)
            self._protos[name] = proto._style

    def cell(self, ws, value, style: str):
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(ws, value=value)
        cell._style = copy(self._protos[style])
        if isinstance(value, str):
            as_text(cell, value)
        return cell


# What a spreadsheet may take for the start of a formula (OWASP's CSV injection list): a cell written
# from user or roster text that starts with one of these is written as text, never as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value):
    """A CSV field that no spreadsheet opens as a formula: text starting like one gets a leading '."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def as_text(cell, value: str) -> None:
    """Makes a cell just given ``value`` a text cell: openpyxl takes a string starting with "=" for a
    formula and "#N/A" for an error; a text cell is neither, and Excel shows it as typed. A value that
    looks like a formula also gets the quote prefix (Excel's leading '), so that editing the cell in
    Excel keeps it text instead of turning it into the formula."""
    cell.data_type = "s"
    if value.startswith(FORMULA_STARTS):
        cell._style.quotePrefix = 1
    elif cell._style.quotePrefix:
        cell._style.quotePrefix = 0


_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def sheet_title(unit: str, part: str, taken: set[str]) -> str:
    """A sheet name Excel accepts (31 characters, none of []:*?/\\), unique in the workbook."""
    suffix = f"-{texts.REPORT_PARTS[part]}" if part else ""
    base = _BAD_SHEET_CHARS.sub("_", unit)
    name = base[:31 - len(suffix)] + suffix
    n = 2
    while name in taken:
        tail = f"{suffix}{n}"
        name = base[:31 - len(tail)] + tail
        n += 1
    taken.add(name)
    return name


def _write_sheet(ws, form: int, sheet: Sheet, half: str, note_text: str, styles: _Styles) -> None:
    """Writes one sheet row by row (a write-only sheet: sizes and merges are set before the rows)."""
    from openpyxl.utils import get_column_letter

    cols = columns(form)
    width = len(cols)
    last = get_column_letter(width)
    sub = subtitle(form, sheet.part)
    header_row = 4 if sub else 3
    note_row = header_row + len(sheet.rows) + 1

    for index, chars in enumerate(WIDTHS[form], start=1):
        ws.column_dimensions[get_column_letter(index)].width = chars
    ws.row_dimensions[1].height = 30
    if sub:
        ws.row_dimensions[2].height = 20
    ws.row_dimensions[header_row].height = 22
    ws.row_dimensions[note_row].height = 16 * (1 + len(note_text) * 2 // sum(WIDTHS[form]))
    for row in ([1, 2] if sub else [1]) + [note_row]:  # title, subtitle, note span the table
        ws.merged_cells.add(f"A{row}:{last}{row}")
    ws.merged_cells.add(f"A{header_row - 1}:{get_column_letter(width - 1)}{header_row - 1}")
    ws.freeze_panes = f"A{header_row + 1}"
    ws.print_title_rows = f"{header_row}:{header_row}"
    ws.page_setup.orientation = "landscape" if width > 4 else "portrait"
    ws.page_setup.paperSize = 9  # A4
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True

    cell = styles.cell
    ws.append([cell(ws, title(form), "title")])
    if sub:
        ws.append([cell(ws, sub, "subtitle")])
    tail = half_label(half) + (f" · {texts.REPORT_PARTS[sheet.part]}" if sheet.part else "")
    ws.append([cell(ws, texts.REPORT_UNIT_LINE.format(unit=sheet.unit.name), "unit")] + [None] * (width - 2)
              + [cell(ws, tail, "half")])
    ws.append([cell(ws, name, "header") for name in cols])
    # One styled cell per column, refilled for every row: a write-only sheet writes a row out the
    # moment it is appended, so the cells can be reused, and making 20,000 x 4 cells is what costs.
    body = [cell(ws, None, "body") for _ in cols]
    for values in sheet.rows:
        for target, value in zip(body, values):
            target.value = value
            if value.__class__ is str:  # every column is text: names, addresses, phones, what was typed
                as_text(target, value)
        ws.append(body)
    ws.append([cell(ws, note_text, "note")])


def _write_summary(ws, form: int, half: str, form_sheets: list[Sheet], styles: _Styles) -> None:
    """The first sheet of a workbook of several units: how many rows each unit's sheets hold, so the
    office sees at a glance who reported what (and who nothing)."""
    from openpyxl.utils import get_column_letter

    parts = [part for part in PARTS[form] if part]
    counts: dict[str, dict[str, int]] = {}
    for sheet in form_sheets:
        counts.setdefault(sheet.unit.name, {})[sheet.part] = len(sheet.rows)
    header = [texts.REPORT_SUMMARY_UNIT] + [texts.REPORT_PARTS[p] for p in parts] + [texts.REPORT_SUMMARY_TOTAL]
    ws.column_dimensions["A"].width = 30
    for index in range(2, len(header) + 1):
        ws.column_dimensions[get_column_letter(index)].width = 12
    ws.merged_cells.add(f"A1:{get_column_letter(len(header))}1")
    ws.row_dimensions[1].height = 30
    ws.freeze_panes = "A4"
    cell = styles.cell
    ws.append([cell(ws, texts.REPORT_SUMMARY_TITLE.format(form=form, title=title(form)), "title")])
    ws.append([cell(ws, half_label(half), "unit")])
    ws.append([cell(ws, name, "header") for name in header])
    totals = [0] * (len(parts) + 1)
    for unit, by_part in counts.items():
        values = [by_part.get(p, 0) for p in parts] + [sum(by_part.values())]
        totals = [a + b for a, b in zip(totals, values)]
        ws.append([cell(ws, unit, "body")] + [cell(ws, v, "body") for v in values])
    ws.append([cell(ws, texts.REPORT_SUMMARY_ALL, "header")] + [cell(ws, v, "header") for v in totals])


def workbook(form: int, half: str, form_sheets: Iterable[Sheet], settings: Settings) -> bytes:
    """The XLSX bytes of one form with the given sheets (an empty list still gives one empty sheet)."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    note_text = note(form, settings)
    taken: set[str] = set()
    styles = None
    form_sheets = list(form_sheets) or [Sheet(Unit(name=""), "", [])]  # no unit at all: still a valid form
    if len({sheet.unit.name for sheet in form_sheets}) > 1:
        taken.add(texts.REPORT_SUMMARY_SHEET)
        ws = wb.create_sheet(texts.REPORT_SUMMARY_SHEET)
        styles = _Styles(ws)
        _write_summary(ws, form, half, form_sheets, styles)
    for sheet in form_sheets:
        ws = wb.create_sheet(sheet_title(sheet.unit.name, sheet.part, taken) if sheet.unit.name else title(form)[:31])
        styles = styles or _Styles(ws)
        _write_sheet(ws, form, sheet, half, note_text, styles)
    wb.properties.title = f"附件{form} {title(form)} {half_label(half)}"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def filename(form: int, half: str, unit: Unit | None = None) -> str:
    name = f"附件{form}_{title(form)}_{half}"
    if unit is not None:
        name += "_" + re.sub(r"[\\/:*?\"<>|\s]+", "_", unit.name)
    return name + ".xlsx"


def export(session: Session, forms: Sequence[int], half: str, units: Sequence[Unit], settings: Settings) -> list[File]:
    """One XLSX file per form, with a sheet per unit (and part); named after the unit when there is one."""
    files = []
    for form in forms:
        content = workbook(form, half, sheets(session, form, half, units, settings), settings)
        files.append(File(filename(form, half, units[0] if len(units) == 1 else None), XLSX, content))
    return files


def units_for(session: Session, scope: set[int] | None, unit_name: str | None = None) -> list[Unit] | None:
    """The active units to export: one named unit (None if unknown), else every unit of the scope,
    departments (市直部门) before townships, then by name."""
    query = select(Unit)
    if unit_name:
        unit = session.execute(query.where(Unit.name == unit_name.strip())).scalar_one_or_none()
        return None if unit is None else [unit]
    query = query.where(Unit.active == True)  # noqa: E712
    if scope is not None:
        query = query.where(Unit.id.in_(list(scope)))
    units = list(session.execute(query).scalars())
    return sorted(units, key=lambda u: (u.kind != "市直部门", u.kind or "", u.name))
