"""The hotline import: 12345/89000 items in the 附件5 layout (反映人姓名, 联系电话, 问题内容, 办理情况,
责任单位, 备注) become problems on the ledger (source "hotline"), all or nothing.

The file is an .xlsx workbook (every sheet whose header row carries the 附件5 columns is read,
so a 附件5 exported by ``python -m bot export --form 5`` reads back) or one .csv file. The header
row is found among the first rows, below a title or a "单位(公章)" line if there is one; the
note row that closes the seed's form ("注:…") ends the data. Checked like the roster: every bad
row is reported as sheet / row / column / reason, and nothing is written when there is any.

Each item is matched by its natural key, (联系电话, 反映人姓名, 问题内容) as stored (trimmed, inner
whitespace collapsed): importing the same file again changes nothing; an edited 办理情况 or 备注
updates the item in place. The responsible unit (责任单位) must be a unit in the database, by its
exact name; it changes on a re-import only while the item is still 待交办 (after that the
ledger owns it). Items are filed under the category "热线" (the hotline's own classification
is not in the form, and guessing one from the text would only mislead the 分类汇总). An item
whose 办理情况 says it was completed (已办结, 已解决, 已完成, 已答复…) is entered as closed
(已办结) with that text as its result; every other one as new (待交办), to be assigned with a
deadline on the ledger. Items missing from a later file are left alone: a hotline file is a
batch, not the whole list.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from tqdm import tqdm

from bot import texts
from bot.core.ledger import open_problem
from bot.core.phones import normalize_phone
from storage import crypto
from storage.db import session_scope, utcnow
from bot.imports.roster import RosterError, RosterIssue, _decode_csv, _header_key, _text
from storage.models import Problem, ProblemSource, ProblemStatus, Unit

NAME, PHONE, CONTENT, HANDLED, UNIT, NOTE = texts.REPORT_FORMS[5]["columns"]
REQUIRED = (PHONE, CONTENT, UNIT)  # a caller may stay anonymous; the number is how they hear back
LIMITS = {NAME: "raiser_name", PHONE: "raiser_phone", CONTENT: "content", HANDLED: "hotline_status", NOTE: "note"}
HEADER_SEARCH_ROWS = 10
_DONE = re.compile(r"^\s*(已办结|已解决|已完成|已答复|已回复|已处理|办结)")
_NOTE_ROW = re.compile(r"^\s*注\s*[:：]")
_SPACES = re.compile(r"\s+")


class HotlineError(RosterError):
    """The hotline file has errors; nothing was written. ``issues`` holds every one, in file order."""

    def __init__(self, issues: Iterable[RosterIssue], sheets: Sequence[str] = ()):
        order = {name: index for index, name in enumerate(sheets, start=1)}
        Exception.__init__(self)
        self.issues = sorted(issues, key=lambda i: (order.get(i.sheet, 0), i.row or 0))

    def __str__(self) -> str:
        return "\n".join([texts.HOTLINE_ERRORS.format(count=len(self.issues))] + [str(i) for i in self.issues])


@dataclass(frozen=True)
class HotlineRow:
    sheet: str
    row: int
    name: str
    phone: str
    content: str
    handled: str
    unit: str
    note: str


@dataclass
class HotlineReport:
    source: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.created or self.updated:
            head = texts.HOTLINE_REPORT.format(source=self.source, created=self.created, updated=self.updated,
                                               unchanged=self.unchanged)
        else:
            head = texts.HOTLINE_REPORT_SAME.format(source=self.source, unchanged=self.unchanged)
        return "\n".join([head] + self.warnings)


def handling(status: str, result: str | None, hotline_status: str | None) -> str:
    """办理情况 as 附件5 shows it: the ledger's result once closed, else what the hotline said, else
    the ledger's state. A file that shows exactly this for an item changes nothing on re-import."""
    if status in (ProblemStatus.CLOSED, ProblemStatus.ANSWERED) and result:
        return result
    return hotline_status or texts.STATUS_NAMES.get(status, status)


def clean(value: str) -> str:
    """A cell as stored and compared: trimmed, inner runs of whitespace made one space."""
    return _SPACES.sub(" ", value).strip()


# ---------------------------------------------------------------------------------------------
# Reading


def _rows_of(sheet: str, rows: Iterable[Sequence[object]], issues: list[RosterIssue]) -> list[HotlineRow] | None:
    """The data rows of one sheet, or None when the sheet has no 附件5 header (not a hotline sheet)."""
    rows = list(rows)
    names = (NAME, PHONE, CONTENT, HANDLED, UNIT, NOTE)
    for header_index, header in enumerate(rows[:HEADER_SEARCH_ROWS]):
        positions: dict[str, int] = {}
        for index, cell in enumerate(header):
            positions.setdefault(_header_key(_text(cell)), index)
        if _header_key(CONTENT) in positions:
            break
    else:
        return None
    missing = [name for name in names if name != NOTE and _header_key(name) not in positions]
    for name in missing:
        issues.append(RosterIssue(sheet, header_index + 1, name,
                                  f"缺少列“{name}”（附件5 的列：{'、'.join(texts.REPORT_FORMS[5]['columns'])}）"))
    if missing:
        return []
    wanted = [positions.get(_header_key(name)) for name in names]
    out = []
    for number, values in enumerate(rows[header_index + 1:], start=header_index + 2):
        cells = [_text(values[i]) if i is not None and i < len(values) else "" for i in wanted]
        if not any(cells):
            continue
        if _NOTE_ROW.match(cells[0]) and not any(cells[1:]):
            break  # the form's closing note
        out.append(HotlineRow(sheet, number, *cells))
    return out


def read_hotline(path: str | Path) -> tuple[list[HotlineRow], list[RosterIssue], list[str]]:
    """(rows, problems with the file itself, the sheet names in order); nothing raises."""
    path = Path(path)
    issues: list[RosterIssue] = []
    if not path.is_file():
        return [], [RosterIssue("", None, None, f"找不到文件：{path}")], []
    suffix = path.suffix.lower()
    sheets: dict[str, list[Sequence[object]]] = {}
    if suffix == ".csv":
        try:
            text = _decode_csv(path.read_bytes())
        except UnicodeDecodeError:
            return [], [RosterIssue("", None, None, f"{path.name} 的编码无法识别，请另存为 UTF-8 或 GBK")], []
        sheets[path.stem] = list(csv.reader(io.StringIO(text, newline="")))
    elif suffix in (".xlsx", ".xlsm"):
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            return [], [RosterIssue("", None, None, f"无法打开文件 {path.name}：{exc}")], []
        try:
            for worksheet in workbook.worksheets:
                worksheet.reset_dimensions()
                sheets[worksheet.title] = list(worksheet.iter_rows(values_only=True))
        finally:
            workbook.close()
    else:
        return [], [RosterIssue("", None, None, f"不支持的文件 {path.name}：请给出 .xlsx 工作簿或 .csv 文件"
                                                "（.xls 请先在 Excel 中另存为 .xlsx）")], []
    rows: list[HotlineRow] = []
    found = False
    for sheet, sheet_rows in sheets.items():
        got = _rows_of(sheet, sheet_rows, issues)
        if got is not None:
            found = True
            rows += got
    if not found:
        issues.append(RosterIssue("", None, None, f"{path.name} 中没有附件5格式的表：需要表头 "
                                                  f"{'、'.join(texts.REPORT_FORMS[5]['columns'])}"))
    return rows, issues, list(sheets)


# ---------------------------------------------------------------------------------------------
# Checking and writing


def _key(name: str | None, phone: str | None, content: str) -> tuple[str, str, str]:
    """The natural key; ``phone`` is the number in the file's check, its keyed hash when matching stored items."""
    return (phone or "", name or "", content)


@dataclass(frozen=True)
class _Item:
    row: HotlineRow
    name: str | None
    phone: str
    content: str
    handled: str | None
    unit_id: int
    note: str | None


def _check(rows: list[HotlineRow], units: dict[str, Unit], issues: list[RosterIssue], bar: tqdm) -> list[_Item]:
    items: list[_Item] = []
    seen: dict[tuple, int] = {}
    columns = Problem.__table__.c
    for r in rows:
        bar.update()
        before = len(issues)
        values = {NAME: clean(r.name), PHONE: clean(r.phone), CONTENT: clean(r.content), HANDLED: clean(r.handled),
                  UNIT: clean(r.unit), NOTE: clean(r.note)}
        for column in REQUIRED:
            if not values[column]:
                issues.append(RosterIssue(r.sheet, r.row, column, "必填，不能为空"))
        for column, attr in LIMITS.items():
            limit = columns[attr].type.length
            if column != PHONE and len(values[column]) > limit:
                issues.append(RosterIssue(r.sheet, r.row, column, f"内容过长：{len(values[column])} 字，最多 {limit} 字"))
        phone = normalize_phone(values[PHONE]) if values[PHONE] else None
        if values[PHONE] and phone is None:
            issues.append(RosterIssue(r.sheet, r.row, PHONE, f"号码格式不正确（“{values[PHONE]}”）"))
        unit = units.get(values[UNIT]) if values[UNIT] else None
        if values[UNIT] and unit is None:
            issues.append(RosterIssue(r.sheet, r.row, UNIT, f"没有名为“{values[UNIT]}”的单位：请填写系统中单位的全称"))
        if len(issues) > before:
            continue
        key = _key(values[NAME], phone, values[CONTENT])
        if key in seen:
            issues.append(RosterIssue(r.sheet, r.row, CONTENT, f"与第{seen[key]}行重复（同一反映人、同一问题）"))
            continue
        seen[key] = r.row
        items.append(_Item(r, values[NAME] or None, phone, values[CONTENT], values[HANDLED] or None, unit.id,
                           values[NOTE] or None))
    return items


def _write(session: Session, items: list[_Item], report: HotlineReport, now: datetime, bar: tqdm) -> None:
    # Matched on the number's keyed hash (the stored number is encrypted), under every configured key
    # while a key rotation is under way.
    keys = crypto.keyring()
    existing = {_key(p.raiser_name, p.raiser_phone_hash, p.content): p
                for p in session.exec(select(Problem).where(Problem.source == ProblemSource.HOTLINE)).all()}
    unit_names = {u.id: u.name for u in session.exec(select(Unit)).all()}
    for item in items:
        bar.update()
        problem = next((existing[key] for key in (_key(item.name, h, item.content) for h in keys.hashes(item.phone))
                        if key in existing), None)
        if problem is None:
            done = bool(item.handled and _DONE.match(item.handled))
            problem = open_problem(session, source=ProblemSource.HOTLINE, category=texts.HOTLINE_CATEGORY,
                                   content=item.content, now=now, actor_label=texts.HOTLINE_IMPORT_ACTOR,
                                   status=ProblemStatus.CLOSED if done else ProblemStatus.NEW, note=item.handled,
                                   raiser_name=item.name, raiser_phone=item.phone,
                                   responsible_unit_id=item.unit_id, hotline_status=item.handled,
                                   result=item.handled if done else None, item_note=item.note)
            existing[_key(item.name, keys.hash(item.phone), item.content)] = problem
            report.created += 1
            continue
        changed = False
        handled = item.handled
        if handled == handling(problem.status, problem.result, problem.hotline_status):
            handled = problem.hotline_status  # the file shows what we would show: nothing new
        for attr, value in (("hotline_status", handled), ("note", item.note)):
            if getattr(problem, attr) != value:
                setattr(problem, attr, value)
                changed = True
        if problem.responsible_unit_id != item.unit_id:
            if problem.status == ProblemStatus.NEW:
                problem.responsible_unit_id = item.unit_id
                changed = True
            else:
                report.warnings.append(
                    f"{item.row.sheet} 第{item.row.row}行 {UNIT}：问题 #{problem.id} 已交办给"
                    f"“{unit_names.get(problem.responsible_unit_id, '?')}”，责任单位未改")
        if changed:
            problem.updated_at = now
            session.add(problem)
            report.updated += 1
        else:
            report.unchanged += 1


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="行", file=sys.stderr, disable=not progress, leave=False)


def import_hotline(engine: Engine, path: str | Path, *, progress: bool = False,
                   now: datetime | None = None) -> HotlineReport:
    """Reads, checks and imports a hotline file in one transaction. Raises ``HotlineError`` listing
    every problem, having written nothing, when any row is wrong."""
    rows, issues, sheets = read_hotline(path)
    report = HotlineReport(source=str(path))
    now = now or utcnow()
    with session_scope(engine) as session:
        units = {u.name: u for u in session.exec(select(Unit)).all()}
        with _bar(len(rows), "校验热线", progress) as bar:
            items = _check(rows, units, issues, bar)
        if issues:
            raise HotlineError(issues, sheets)
        with _bar(len(items), "写入数据库", progress) as bar:
            _write(session, items, report, now, bar)
    return report
