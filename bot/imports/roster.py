"""The roster import: reads 单位/干部/联户/服务对象 (and the optional 窗口) from a workbook or a CSV
folder, checks every row, and upserts them by natural key in one transaction, or writes nothing when
any row is wrong.

Rows in the database that the file no longer lists are deactivated, never deleted: visits,
contacts and problems still point at them. A unit or cadre that the file does not list but that
its rows still refer to (a cadre's 单位, a household's 干部手机号) stays active, since deactivating
it would orphan the rows that were just imported. An import that would deactivate more than
``max_deactivate_share`` of a sheet's active rows stops with ``RosterDeactivationRefused`` and
writes nothing, unless the operator allows it (``import-roster --allow-deactivate``).

A row whose parent row is itself wrong (a household or service object assigned to a cadre whose
干部 row has an invalid mobile) is not an error of its own: the rows of one such parent are
reported once, together, pointing at the parent's error (``联户 第3–26行 干部手机号：见 干部 第5行的错误``).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import sys
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Iterable, Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from tqdm import tqdm

from bot.config import Settings
from bot.core import evidence
from bot.core.geo import BD09, GCJ02, WGS84, in_china, to_wgs84
from bot.core.phones import normalize_mobile, normalize_phone
from bot.errors import CommandInputError  # moves out with the roster import (issue 10, item 5)
from storage.db import session_scope
from storage.models import Cadre, Household, Role, ServiceObject, ServiceWindow, Unit, WindowDuty

UNITS, CADRES, HOUSEHOLDS, OBJECTS, WINDOWS = "单位", "干部", "联户", "服务对象", "窗口"
SHEETS = (UNITS, CADRES, HOUSEHOLDS, OBJECTS)
# Sheets a roster may leave out: without 窗口 the windows already imported stay as they are.
OPTIONAL_SHEETS = (WINDOWS,)
ALL_SHEETS = SHEETS + OPTIONAL_SHEETS
_DUTY_SEPARATORS = re.compile(r"[、,，;；/\s]+")

# (column, required column?, required value?). 角色 must be there but may be blank (= 干部).
COLUMNS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    UNITS: (("单位名称", True, True), ("类型", False, False)),
    CADRES: (("姓名", True, True), ("单位", True, True), ("手机号", True, True), ("角色", True, False),
             ("职务", False, False), ("职责", False, False)),
    HOUSEHOLDS: (("住址", True, True), ("姓名", True, True), ("联系电话", True, True), ("村/居", True, True),
                 ("村(社区)名称", False, False), ("干部手机号", True, True),
                 ("经度", False, False), ("纬度", False, False), ("坐标系", False, False)),
    OBJECTS: (("姓名", True, True), ("工作单位(住址)", True, True), ("联系电话", True, True),
              ("干部手机号", True, True), ("备注", False, False)),
    WINDOWS: (("窗口名称", True, True), ("单位", True, True), ("在岗干部手机号", True, False)),
}

# Length limits come from the tables themselves, so a migration that widens a column widens the check.
_LIMITS: dict[str, dict[str, tuple[type, str]]] = {
    UNITS: {"单位名称": (Unit, "name"), "类型": (Unit, "kind")},
    CADRES: {"姓名": (Cadre, "name"), "单位": (Unit, "name"), "职务": (Cadre, "post"), "职责": (Cadre, "duties")},
    HOUSEHOLDS: {"住址": (Household, "address"), "姓名": (Household, "name"),
                 "村(社区)名称": (Household, "area_name")},
    OBJECTS: {"姓名": (ServiceObject, "name"), "工作单位(住址)": (ServiceObject, "workplace"),
              "备注": (ServiceObject, "note")},
    WINDOWS: {"窗口名称": (ServiceWindow, "name"), "单位": (Unit, "name")},
}

_ROLES = {
    "干部": Role.CADRE, "cadre": Role.CADRE,
    "主管": Role.SUPERVISOR, "supervisor": Role.SUPERVISOR,
    "作风办": Role.OFFICE, "office": Role.OFFICE,  # oversees every unit by its role
    "管理员": Role.ADMIN, "admin": Role.ADMIN,
}
SUPERVISION_UNITS = ("市作风办", "作风办")  # the SUPERVISION_UNITS setting's default
_AREA_KINDS = {
    "村": "村", "村委会": "村", "行政村": "村",
    "居": "居", "社区": "居", "居委会": "居", "居委": "居",
}
# Datum names as typed into 坐标系 (lower case, without spaces, dashes, 坐标(系) or 地图). CGCS2000, the
# datum of 天地图 and of surveyors, differs from WGS-84 by centimetres.
_DATUM_NAMES = {
    "wgs84": WGS84, "gps": WGS84, "cgcs2000": WGS84, "天地图": WGS84,
    "gcj02": GCJ02, "火星": GCJ02, "国测局": GCJ02, "高德": GCJ02, "腾讯": GCJ02, "微信": GCJ02,
    "bd09": BD09, "百度": BD09,
}
SURVEYED, LEARNED = "surveyed", "learned"  # Household.coord_source
CLEAR = "clear"  # the coordinate cells are blank: surveyed coordinates go, learned ones stay
_UNIT_KINDS = {
    "市直部门": "市直部门", "市直单位": "市直部门", "部门": "市直部门",
    "镇街区": "镇街区", "镇街": "镇街区", "镇": "镇街区", "街道": "镇街区", "乡镇": "镇街区",
}


# ---------------------------------------------------------------------------------------------
# Issues


@dataclass(frozen=True)
class RosterIssue:
    """One problem in the file. ``row`` is the spreadsheet's row number (header = 1); ``sheet`` is
    empty for a problem with the file as a whole."""

    sheet: str
    row: int | None
    column: str | None
    reason: str
    rows: tuple[int, ...] = ()  # several rows reported together (``row`` is the first of them)

    def __str__(self) -> str:
        head = self.sheet
        if self.rows:
            head += f" 第{_row_ranges(self.rows)}行"
        elif self.row:
            head += f" 第{self.row}行"
        if self.column:
            head += f" {self.column}"
        head = head.strip()
        return f"{head}：{self.reason}" if head else self.reason


def _row_ranges(rows: Iterable[int]) -> str:
    """3, 4, 5, 9, 12, 13 -> "3–5、9、12–13"."""
    parts: list[str] = []
    ordered = sorted(set(rows))
    start = prev = ordered[0]
    for row in ordered[1:] + [None]:
        if row is not None and row == prev + 1:
            prev = row
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if row is not None:
            start = prev = row
    return "、".join(parts)


def _issue_order(issue: RosterIssue) -> tuple[int, int]:
    sheet = ALL_SHEETS.index(issue.sheet) + 1 if issue.sheet in ALL_SHEETS else 0
    return sheet, issue.row or 0


class RosterError(CommandInputError):
    """The file has errors; nothing was written. ``issues`` holds every one, in sheet and row order."""

    def __init__(self, issues: Iterable[RosterIssue]):
        # sorted() is stable, so issues of one row keep the column order they were found in.
        self.issues = sorted(issues, key=_issue_order)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"名册有 {len(self.issues)} 处错误，未导入任何数据："]
        lines += [str(issue) for issue in self.issues]
        return "\n".join(lines)


class RosterDeactivationRefused(Exception):
    """The file would deactivate more than the allowed share of a sheet's active rows (a workbook
    with its headers and no rows, a sheet pasted short); nothing was written. ``sheets`` holds
    (sheet, rows it would deactivate, rows active now) for each sheet over the share."""

    def __init__(self, sheets: list[tuple[str, int, int]], share: float):
        self.sheets, self.share = sheets, share
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = ["导入已停止，未写入任何数据：这份名册会停用过多在册记录——"]
        lines += [f"  {sheet}：将停用 {gone} 条，占现有在册 {active} 条的 {gone / active:.0%}"
                  for sheet, gone, active in self.sheets]
        lines.append(f"允许的上限是每张表 {self.share:.0%}（设置 ROSTER_MAX_DEACTIVATE_SHARE）。"
                     "请检查名册是否完整（是否只有表头、漏了行或工作表）；"
                     "若确要停用这些记录，请加 --allow-deactivate 重新导入。")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class UnitRow:
    row: int
    name: str
    kind: str | None  # None: the file has no 类型 column, so the stored value is kept


@dataclass(frozen=True)
class CadreRow:
    row: int
    name: str
    unit: str
    mobile: str
    role: str
    post: str | None
    duties: str | None


@dataclass(frozen=True)
class HouseholdRow:
    row: int
    address: str
    name: str
    phone: str
    area_kind: str
    area_name: str | None
    cadre_mobile: str
    longitude: str | None = None  # 经度, 纬度, 坐标系 as typed (None: the column is not there)
    latitude: str | None = None
    datum: str | None = None


@dataclass(frozen=True)
class ServiceObjectRow:
    row: int
    name: str
    workplace: str
    phone: str
    cadre_mobile: str
    note: str | None


@dataclass(frozen=True)
class WindowRow:
    row: int
    name: str
    unit: str
    duty: str  # the mobiles of the cadres on duty, separated by 、 , ; or spaces


@dataclass
class RosterData:
    """The file's rows as text (trimmed, not yet checked). Optional columns missing from the header
    read as None, blank cells as ""; ``issues`` holds what was wrong with the file's structure."""

    source: Path
    units: list[UnitRow] = field(default_factory=list)
    cadres: list[CadreRow] = field(default_factory=list)
    households: list[HouseholdRow] = field(default_factory=list)
    objects: list[ServiceObjectRow] = field(default_factory=list)
    windows: list[WindowRow] = field(default_factory=list)
    windows_listed: bool = False  # the optional 窗口 sheet is there (so unlisted windows are deactivated)
    issues: list[RosterIssue] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)  # sheets missing or missing a column

    @property
    def row_count(self) -> int:
        return len(self.units) + len(self.cadres) + len(self.households) + len(self.objects) + len(self.windows)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():  # numbers typed into Excel come back as floats
        value = int(value)
    elif isinstance(value, datetime):
        value = value.date() if value.time() == datetime.min.time() else value
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


_HEADER_TRANSLATE = str.maketrans({"（": "(", "）": ")", "／": "/", "*": None, "＊": None})


def _header_key(text: str) -> str:
    # Excel users type full-width brackets and star required columns; neither should matter.
    return re.sub(r"\s+", "", text.replace("\ufeff", "")).translate(_HEADER_TRANSLATE)


def _parse_sheet(sheet: str, rows: Iterable[Sequence[object]], data: RosterData) -> list[tuple[int, dict]]:
    """(row number, {column: text or None}) for each non-blank row; [] when the header is unusable."""
    iterator = iter(rows)
    header = next(iterator, None)
    positions: dict[str, int] = {}
    for index, cell in enumerate(header or ()):
        key = _header_key(_text(cell))
        if key:
            positions.setdefault(key, index)
    if not positions:
        data.issues.append(RosterIssue(sheet, 1, None, "表头为空：第1行应是列名"))
        data.broken.add(sheet)
        return []
    missing = [name for name, required, _ in COLUMNS[sheet] if required and _header_key(name) not in positions]
    for name in missing:
        data.issues.append(RosterIssue(sheet, 1, name, f"缺少必填列“{name}”"))
    if missing:
        data.broken.add(sheet)
        return []

    wanted = [(name, positions.get(_header_key(name))) for name, _, _ in COLUMNS[sheet]]
    out = []
    for number, values in enumerate(iterator, start=2):
        cells = {
            name: None if index is None else (_text(values[index]) if index < len(values) else "")
            for name, index in wanted
        }
        # Only our columns count: a pre-numbered 序号 column must not turn empty rows into errors.
        if any(cells.values()):
            out.append((number, cells))
    return out


def _decode_csv(raw: bytes) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8):].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Excel in China saves "CSV" in the ANSI code page, i.e. GBK; GB18030 is its superset.
        return raw.decode("gb18030")


def _sheets_from_csv(folder: Path, data: RosterData) -> dict[str, list[list[str]]]:
    sheets = {}
    for sheet in SHEETS:
        path = folder / f"{sheet}.csv"
        if not path.is_file():
            data.issues.append(RosterIssue(sheet, None, None, f"缺少文件 {sheet}.csv"))
            data.broken.add(sheet)
            continue
        try:
            text = _decode_csv(path.read_bytes())
        except UnicodeDecodeError:
            data.issues.append(RosterIssue(sheet, None, None, f"{sheet}.csv 的编码无法识别，请另存为 UTF-8 或 GBK"))
            data.broken.add(sheet)
            continue
        sheets[sheet] = list(csv.reader(io.StringIO(text, newline="")))
    for sheet in OPTIONAL_SHEETS:
        path = folder / f"{sheet}.csv"
        if path.is_file():
            try:
                sheets[sheet] = list(csv.reader(io.StringIO(_decode_csv(path.read_bytes()), newline="")))
            except UnicodeDecodeError:
                data.issues.append(RosterIssue(sheet, None, None, f"{sheet}.csv 的编码无法识别，请另存为 UTF-8 或 GBK"))
                data.broken.add(sheet)
    return sheets


def _sheets_from_workbook(path: Path, data: RosterData) -> dict[str, Iterable[Sequence[object]]]:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        data.issues.append(RosterIssue("", None, None, f"无法打开名册文件 {path.name}：{exc}"))
        data.broken.update(SHEETS)
        return {}
    try:
        by_name = {name.strip(): name for name in workbook.sheetnames}
        sheets = {}
        for sheet in SHEETS:  # other sheets, such as 说明, are ignored
            if sheet not in by_name:
                data.issues.append(RosterIssue(sheet, None, None, f"缺少工作表“{sheet}”"))
                data.broken.add(sheet)
                continue
            worksheet = workbook[by_name[sheet]]
            # Some writers record a wrong sheet size, which would cut columns off in read-only mode.
            worksheet.reset_dimensions()
            sheets[sheet] = list(worksheet.iter_rows(values_only=True))
        for sheet in OPTIONAL_SHEETS:
            if sheet in by_name:
                worksheet = workbook[by_name[sheet]]
                worksheet.reset_dimensions()
                sheets[sheet] = list(worksheet.iter_rows(values_only=True))
        return sheets
    finally:
        workbook.close()


def read_roster(path: str | Path) -> RosterData:
    """Reads an .xlsx workbook (sheets 单位, 干部, 联户, 服务对象) or a folder of 单位.csv, 干部.csv,
    联户.csv, 服务对象.csv. Problems with the file's structure go to ``issues``; nothing raises."""
    path = Path(path)
    data = RosterData(source=path)
    if path.is_dir():
        sheets = _sheets_from_csv(path, data)
    elif not path.exists():
        data.issues.append(RosterIssue("", None, None, f"找不到名册文件或文件夹：{path}"))
        data.broken.update(SHEETS)
        sheets = {}
    elif path.suffix.lower() in (".xlsx", ".xlsm"):
        sheets = _sheets_from_workbook(path, data)
    else:
        data.issues.append(RosterIssue("", None, None, (
            f"不支持的文件 {path.name}：请给出 .xlsx 工作簿，或包含 单位.csv、干部.csv、联户.csv、服务对象.csv 的文件夹"
            "（.xls 请先在 Excel 中另存为 .xlsx）")))
        data.broken.update(SHEETS)
        sheets = {}

    data.windows_listed = WINDOWS in sheets
    for sheet, rows in sheets.items():
        for number, c in _parse_sheet(sheet, rows, data):
            if sheet == UNITS:
                data.units.append(UnitRow(number, c["单位名称"], c["类型"]))
            elif sheet == CADRES:
                data.cadres.append(CadreRow(number, c["姓名"], c["单位"], c["手机号"], c["角色"], c["职务"], c["职责"]))
            elif sheet == WINDOWS:
                data.windows.append(WindowRow(number, c["窗口名称"], c["单位"], c["在岗干部手机号"] or ""))
            elif sheet == HOUSEHOLDS:
                data.households.append(HouseholdRow(number, c["住址"], c["姓名"], c["联系电话"], c["村/居"],
                                                    c["村(社区)名称"], c["干部手机号"], c["经度"], c["纬度"],
                                                    c["坐标系"]))
            else:
                data.objects.append(ServiceObjectRow(number, c["姓名"], c["工作单位(住址)"], c["联系电话"],
                                                     c["干部手机号"], c["备注"]))
    return data


# ---------------------------------------------------------------------------------------------
# Checking


@dataclass
class _Existing:
    """Every roster row already in the database, loaded with one query per table."""

    units: dict[str, Unit]
    cadres: dict[str, Cadre]
    households: dict[tuple[str, str], Household]
    objects: dict[tuple[int, str, str], ServiceObject]
    windows: dict[tuple[int, str], ServiceWindow]
    duties: dict[int, set[int]]  # window id -> the ids of its cadres on duty
    unit_names: dict[int, str]

    @classmethod
    def load(cls, session: Session) -> "_Existing":
        units = {u.name: u for u in session.exec(select(Unit)).all()}
        return cls(
            units=units,
            cadres={c.mobile: c for c in session.exec(select(Cadre)).all()},
            households={(h.address, h.name): h for h in session.exec(select(Household)).all()},
            objects={(o.unit_id, o.name, o.phone): o for o in session.exec(select(ServiceObject)).all()},
            windows={(w.unit_id, w.name): w for w in session.exec(select(ServiceWindow)).all()},
            duties=_duties(session),
            unit_names={u.id: u.name for u in units.values()},
        )


def _duties(session: Session) -> dict[int, set[int]]:
    duties: dict[int, set[int]] = defaultdict(set)
    for duty in session.exec(select(WindowDuty)).all():
        duties[duty.window_id].add(duty.cadre_id)
    return duties


@dataclass
class _Plan:
    """What the file asks for, keyed by natural key; field dicts leave out absent optional columns."""

    errors: list[RosterIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    units: dict[str, dict] = field(default_factory=dict)
    cadres: dict[str, dict] = field(default_factory=dict)  # by mobile; "unit" is the unit's name
    households: dict[tuple[str, str], dict] = field(default_factory=dict)
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (unit name, name, phone)
    windows: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (unit name, name) -> duty mobiles
    kept_units: set[str] = field(default_factory=set)  # not listed, but a listed cadre belongs to it
    kept_cadres: set[str] = field(default_factory=set)  # not listed, but a listed row is assigned to them
    windows_listed: bool = False

    @property
    def row_count(self) -> int:
        return len(self.units) + len(self.cadres) + len(self.households) + len(self.objects) + len(self.windows)


def _optional(value: str | None) -> str | None:
    return value or None


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: a mobile with a digit dropped, added or mistyped is 1 away."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _datum(text: str) -> str | None:
    """WGS-84, GCJ-02, BD-09 as people write them (also 高德, 百度地图, 火星坐标, CGCS2000...); None if unknown."""
    key = re.sub(r"[\s_\-]", "", text.lower())
    for suffix in ("坐标系", "坐标", "地图"):
        key = key.removesuffix(suffix)
    return _DATUM_NAMES.get(key)


def _degrees(text: str) -> float | None:
    """Decimal degrees; None for anything else (degrees-minutes-seconds, a comma, NaN)."""
    try:
        value = float(text.replace("°", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class _Checker:
    def __init__(self, data: RosterData, existing: _Existing, minimum: int, bar: tqdm,
                 supervision_units: tuple[str, ...] = SUPERVISION_UNITS, datum: str = ""):
        self.data, self.existing, self.minimum, self.bar = data, existing, minimum, bar
        self.datum = datum  # ROSTER_COORD_DATUM: for rows whose 坐标系 is blank
        self.supervision_units = tuple(supervision_units)
        self.plan = _Plan(errors=list(data.issues))
        self.cadre_units: dict[str, str] = {}  # cadre mobile -> unit name, for the per-unit check
        self.listed_cadres: set[str] = set()
        self.bad_cadres: list[tuple[int, str]] = []  # (row, digits) of 干部 rows whose mobile is invalid
        # Rows pointing at such a row, reported once per (sheet, column, parent row, value): their rows.
        self.follow_on: dict[tuple[str, str, int, str], list[int]] = defaultdict(list)

    def error(self, sheet: str, row: int, column: str | None, reason: str) -> None:
        self.plan.errors.append(RosterIssue(sheet, row, column, reason))

    def required(self, sheet: str, row: int, values: dict[str, str | None]) -> bool:
        ok = True
        for column, value in values.items():
            if not value:
                self.error(sheet, row, column, "必填，不能为空")
                ok = False
        return ok

    def lengths(self, sheet: str, row: int, values: dict[str, str | None]) -> None:
        for column, value in values.items():
            model, attr = _LIMITS[sheet][column]
            limit = model.__table__.c[attr].type.length
            if value and len(value) > limit:
                self.error(sheet, row, column, f"内容过长：{len(value)} 字，最多 {limit} 字")

    def phone(self, sheet: str, row: int, column: str, raw: str) -> str | None:
        if not raw:
            return None
        phone = normalize_phone(raw)
        if phone is None:
            self.error(sheet, row, column, f"号码格式不正确（“{raw}”）")
        return phone

    def cadre_ref(self, sheet: str, row: int, raw: str, column: str = "干部手机号") -> str | None:
        """The cadre a household or object is assigned to, by mobile; None (and an error) if unknown."""
        if not raw:
            return None
        mobile = normalize_mobile(raw)
        if mobile is None:
            if not self.after_bad_parent(sheet, row, column, raw):
                self.error(sheet, row, column, f"不是有效的手机号（“{raw}”）")
            return None
        if mobile in self.listed_cadres:
            return mobile
        if CADRES in self.data.broken:
            return None  # the 干部 sheet could not be read; "unknown cadre" on every row would be noise
        cadre = self.existing.cadres.get(mobile)
        if cadre is not None and cadre.active:
            unit_name = self.existing.unit_names[cadre.unit_id]
            self.plan.kept_cadres.add(mobile)
            self.plan.kept_units.add(unit_name)
            self.cadre_units[mobile] = unit_name
            return mobile
        if not self.after_bad_parent(sheet, row, column, mobile):
            self.error(sheet, row, column, f"找不到手机号为 {mobile} 的干部：“干部”表中没有，系统里也没有在册的")
        return None

    def after_bad_parent(self, sheet: str, row: int, column: str, value: str) -> bool:
        """A cadre reference that resolves to nothing, while a 干部 row's mobile is invalid and (within
        two digits) this one: kept to be reported with that row's error, once. False if no such row."""
        digits = re.sub(r"\D", "", value)
        if not digits or not self.bad_cadres:
            return False
        distance, parent = min((_edit_distance(digits, bad), parent) for parent, bad in self.bad_cadres)
        if distance > 2:
            return False
        self.follow_on[(sheet, column, parent, value)].append(row)
        return True

    def report_follow_on(self) -> None:
        for (sheet, column, parent, value), rows in self.follow_on.items():
            self.plan.errors.append(RosterIssue(
                sheet, rows[0], column, f"见 干部 第{parent}行的错误（“{value}”）",
                rows=tuple(rows) if len(rows) > 1 else ()))

    def run(self) -> _Plan:
        self.check_units()
        self.check_cadres()
        households_of = self.check_households()
        object_counts = self.check_objects(households_of)
        self.check_windows()
        self.report_follow_on()
        self.warn_minimum(object_counts)
        self.warn_oversight()
        return self.plan

    def check_units(self) -> None:
        seen: dict[str, int] = {}
        for r in self.data.units:
            self.bar.update()
            if not self.required(UNITS, r.row, {"单位名称": r.name}):
                continue
            self.lengths(UNITS, r.row, {"单位名称": r.name, "类型": r.kind})
            fields = {}
            if r.kind is not None:
                kind = _UNIT_KINDS.get(r.kind) if r.kind else None
                if r.kind and kind is None:
                    self.error(UNITS, r.row, "类型", f"只能填 市直部门 或 镇街区（“{r.kind}”）")
                fields["kind"] = kind
            if r.name in seen:
                self.error(UNITS, r.row, "单位名称", f"与第{seen[r.name]}行重复（“{r.name}”）")
                continue
            seen[r.name] = r.row
            self.plan.units[r.name] = fields

    def check_cadres(self) -> None:
        seen: dict[str, int] = {}
        all_listed_units = {u.name for u in self.data.units}
        for r in self.data.cadres:
            self.bar.update()
            self.required(CADRES, r.row, {"姓名": r.name, "单位": r.unit, "手机号": r.mobile})
            self.lengths(CADRES, r.row, {"姓名": r.name, "单位": r.unit, "职务": r.post, "职责": r.duties})
            mobile = normalize_mobile(r.mobile) if r.mobile else None
            if r.mobile and mobile is None:
                self.error(CADRES, r.row, "手机号", f"不是有效的手机号（“{r.mobile}”）")
                self.bad_cadres.append((r.row, re.sub(r"\D", "", r.mobile)))
            role = _ROLES.get(r.role.lower()) if r.role else Role.CADRE
            if role is None:
                self.error(CADRES, r.row, "角色", f"只能填 干部、主管、作风办 或 管理员（“{r.role}”）")
            if r.unit and r.unit not in self.plan.units and UNITS not in self.data.broken:
                if r.unit in self.existing.units:
                    self.plan.kept_units.add(r.unit)
                elif r.unit not in all_listed_units:  # a bad 单位 row is reported there
                    self.error(CADRES, r.row, "单位", f"单位“{r.unit}”不在“单位”表中，系统里也没有")
            if mobile is None:
                continue
            if mobile in seen:
                self.error(CADRES, r.row, "手机号", f"与第{seen[mobile]}行重复（{mobile}）")
                continue
            seen[mobile] = r.row
            self.listed_cadres.add(mobile)
            self.cadre_units[mobile] = r.unit
            fields = {"name": r.name, "unit": r.unit, "role": role}
            if r.post is not None:
                fields["post"] = _optional(r.post)
            if r.duties is not None:
                fields["duties"] = _optional(r.duties)
            self.plan.cadres[mobile] = fields

    def check_households(self) -> dict[str, dict[tuple[str, str], int]]:
        """Also returns, per cadre, (name, phone) and (name, address) -> row, for the overlap check."""
        seen: dict[tuple[str, str], int] = {}
        households_of: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for r in self.data.households:
            self.bar.update()
            self.required(HOUSEHOLDS, r.row, {"住址": r.address, "姓名": r.name, "联系电话": r.phone,
                                              "村/居": r.area_kind, "干部手机号": r.cadre_mobile})
            self.lengths(HOUSEHOLDS, r.row, {"住址": r.address, "姓名": r.name, "村(社区)名称": r.area_name})
            phone = self.phone(HOUSEHOLDS, r.row, "联系电话", r.phone)
            area_kind = _AREA_KINDS.get(r.area_kind) if r.area_kind else None
            if r.area_kind and area_kind is None:
                self.error(HOUSEHOLDS, r.row, "村/居", f"只能填 村 或 居（社区也可）（“{r.area_kind}”）")
            cadre = self.cadre_ref(HOUSEHOLDS, r.row, r.cadre_mobile)
            if not (r.address and r.name):
                continue
            key = (r.address, r.name)
            if key in seen:
                self.error(HOUSEHOLDS, r.row, "住址", f"与第{seen[key]}行重复（同一住址、同一户主：{r.name}）")
                continue
            seen[key] = r.row
            if cadre:
                if phone:
                    households_of[cadre].setdefault((r.name, phone), r.row)
                households_of[cadre].setdefault((r.name, "@" + r.address), r.row)
            fields = {"phone": phone, "area_kind": area_kind, "cadre": cadre}
            if r.area_name is not None:
                fields["area_name"] = _optional(r.area_name)
            coords = self.coordinates(r)
            if coords is not None:
                fields["coords"] = coords
            self.plan.households[key] = fields
        return households_of

    def coordinates(self, r: HouseholdRow) -> tuple[float, float] | str | None:
        """The household's surveyed coordinates in WGS-84 as (latitude, longitude); CLEAR when the
        columns are there and both cells blank; None when the columns are missing or the row is wrong
        (reported)."""
        if r.longitude is None and r.latitude is None:
            return None
        if (r.longitude is None) != (r.latitude is None):
            if r is self.data.households[0]:  # a header problem, reported once
                have, lack = ("经度", "纬度") if r.latitude is None else ("纬度", "经度")
                self.error(HOUSEHOLDS, 1, lack, f"有“{have}”列时也须有“{lack}”列")
            return None
        if not r.longitude and not r.latitude:
            return CLEAR
        ok = True
        for column, text, other in (("经度", r.longitude, "纬度"), ("纬度", r.latitude, "经度")):
            if not text:
                self.error(HOUSEHOLDS, r.row, column, f"填写了{other}，也须填写{column}（两者都空则不记坐标）")
                ok = False
            elif _degrees(text) is None:
                self.error(HOUSEHOLDS, r.row, column, f"不是以度为单位的数字（“{text}”），例如 121.4737")
                ok = False
        datum = _datum(r.datum) if r.datum else (self.datum or None)
        if r.datum and datum is None:
            self.error(HOUSEHOLDS, r.row, "坐标系", f"只能填 WGS-84、GCJ-02 或 BD-09（“{r.datum}”）")
            ok = False
        elif datum is None and ok:
            self.error(HOUSEHOLDS, r.row, "坐标系", "有经纬度时须注明坐标系：WGS-84（GPS、天地图）、GCJ-02（高德、腾讯、"
                                                  "微信地图）或 BD-09（百度地图）；也可用设置 ROSTER_COORD_DATUM 统一指定")
            ok = False
        if not ok:
            return None
        longitude, latitude = _degrees(r.longitude), _degrees(r.latitude)
        if not in_china(latitude, longitude):
            if in_china(longitude, latitude):
                reason = f"经度、纬度可能填反了（经度 {r.longitude}，纬度 {r.latitude}）：国内经度约 73–135，纬度约 4–54"
            else:
                reason = f"坐标不在中国境内（经度 {r.longitude}，纬度 {r.latitude}）"
            self.error(HOUSEHOLDS, r.row, "经度", reason)
            return None
        point = to_wgs84(latitude, longitude, datum)
        return point.latitude, point.longitude

    def check_objects(self, households_of: dict[str, dict[tuple[str, str], int]]) -> dict[str, int]:
        seen: dict[tuple[str, str, str], int] = {}
        counts: dict[str, int] = defaultdict(int)
        for r in self.data.objects:
            self.bar.update()
            self.required(OBJECTS, r.row, {"姓名": r.name, "工作单位(住址)": r.workplace, "联系电话": r.phone,
                                           "干部手机号": r.cadre_mobile})
            self.lengths(OBJECTS, r.row, {"姓名": r.name, "工作单位(住址)": r.workplace, "备注": r.note})
            phone = self.phone(OBJECTS, r.row, "联系电话", r.phone)
            cadre = self.cadre_ref(OBJECTS, r.row, r.cadre_mobile)
            if not (cadre and phone and r.name):
                continue
            own = households_of.get(cadre, {})
            overlap = own.get((r.name, phone)) or (r.workplace and own.get((r.name, "@" + r.workplace)))
            if overlap:
                self.error(OBJECTS, r.row, "姓名",
                           f"“{r.name}”已是该干部的联户（联户 第{overlap}行），服务对象不能与联户重复")
            # The seed forbids listing one object twice within a unit, not just twice per cadre.
            unit = self.cadre_units.get(cadre, "")
            key = (unit, r.name, phone)
            if key in seen:
                self.error(OBJECTS, r.row, "姓名",
                           f"同一单位（{unit}）内重复：与第{seen[key]}行是同一服务对象（{r.name}，{phone}）")
                continue
            seen[key] = r.row
            counts[cadre] += 1
            fields = {"workplace": r.workplace, "cadre": cadre}
            if r.note is not None:
                fields["note"] = _optional(r.note)
            self.plan.objects[key] = fields
        return counts

    def check_windows(self) -> None:
        seen: dict[tuple[str, str], int] = {}
        for r in self.data.windows:
            self.bar.update()
            if not self.required(WINDOWS, r.row, {"窗口名称": r.name, "单位": r.unit}):
                continue
            self.lengths(WINDOWS, r.row, {"窗口名称": r.name, "单位": r.unit})
            if r.unit not in self.plan.units and UNITS not in self.data.broken:
                if r.unit in self.existing.units:
                    self.plan.kept_units.add(r.unit)
                else:
                    self.error(WINDOWS, r.row, "单位", f"单位“{r.unit}”不在“单位”表中，系统里也没有")
            duty = []
            for raw in (part for part in _DUTY_SEPARATORS.split(r.duty) if part):
                mobile = self.cadre_ref(WINDOWS, r.row, raw, "在岗干部手机号")
                if mobile and mobile not in duty:
                    duty.append(mobile)
            key = (r.unit, r.name)
            if key in seen:
                self.error(WINDOWS, r.row, "窗口名称", f"与第{seen[key]}行重复（{r.unit} {r.name}）")
                continue
            seen[key] = r.row
            self.plan.windows[key] = duty

    def warn_minimum(self, counts: dict[str, int]) -> None:
        if self.minimum <= 0:
            return
        people = [(m, f["name"], f["role"]) for m, f in self.plan.cadres.items()]
        people += [(m, self.existing.cadres[m].name, self.existing.cadres[m].role)
                   for m in sorted(self.plan.kept_cadres)]
        for mobile, name, role in people:
            # Supervisors and admins keep no service objects of their own.
            if role == Role.CADRE and counts.get(mobile, 0) < self.minimum:
                self.plan.warnings.append(
                    f"干部 {name}（{mobile}）服务对象 {counts.get(mobile, 0)} 名，少于 {self.minimum} 名")


    def warn_oversight(self) -> None:
        """Warns when nobody could oversee every unit: no 作风办 and no supervisor in a unit named in
        SUPERVISION_UNITS. A 差评 about a supervisor would then reach nobody."""
        people = [(f["role"], f["unit"]) for f in self.plan.cadres.values()]
        people += [(self.existing.cadres[m].role, self.existing.unit_names[self.existing.cadres[m].unit_id])
                   for m in self.plan.kept_cadres]
        if not people:
            return
        if not any(role == Role.OFFICE or (role == Role.SUPERVISOR and unit in self.supervision_units)
                   for role, unit in people):
            self.plan.warnings.append(
                "名册中没有能查看全部单位的人员：请在“干部”表的“角色”列为作风办人员填写“作风办”，"
                "否则涉及主管的差评无人受理，全部单位的评价、排名无人查看。")


def _bar(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="行", file=sys.stderr, disable=not progress, leave=False)


def validate(data: RosterData, session: Session, *, minimum: int = 10, progress: bool = False,
             datum: str = "") -> tuple[list[RosterIssue], list[str]]:
    """Every error (sorted by sheet, then row) and every warning, checked against the database."""
    existing = _Existing.load(session)
    with _bar(data.row_count, "校验名册", progress) as bar:
        plan = _Checker(data, existing, minimum, bar, datum=datum).run()
    return sorted(plan.errors, key=_issue_order), plan.warnings


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class KindCounts:
    created: int = 0
    updated: int = 0  # reactivated rows count here too
    unchanged: int = 0
    deactivated: int = 0


@dataclass
class ImportReport:
    source: str
    units: KindCounts = field(default_factory=KindCounts)
    cadres: KindCounts = field(default_factory=KindCounts)
    households: KindCounts = field(default_factory=KindCounts)
    service_objects: KindCounts = field(default_factory=KindCounts)
    windows: KindCounts = field(default_factory=KindCounts)
    warnings: list[str] = field(default_factory=list)
    relocated: int = 0  # visits whose evidence was checked again against their household's new coordinates

    @property
    def by_sheet(self) -> dict[str, KindCounts]:
        return {UNITS: self.units, CADRES: self.cadres, HOUSEHOLDS: self.households, OBJECTS: self.service_objects,
                WINDOWS: self.windows}

    @property
    def changed(self) -> bool:
        return any(c.created or c.updated or c.deactivated for c in self.by_sheet.values())

    def summary(self, max_warnings: int = 10) -> str:
        lines = [f"名册导入完成：{self.source}" if self.changed else f"名册导入完成（无变化）：{self.source}"]
        for sheet, c in self.by_sheet.items():
            lines.append(f"{sheet}：新增 {c.created}，更新 {c.updated}，未变 {c.unchanged}，停用 {c.deactivated}")
        if self.relocated:
            lines.append(f"住户坐标有变：已按新坐标重新核对 {self.relocated} 次走访的位置凭证")
        if self.warnings:
            lines.append(f"提醒 {len(self.warnings)} 条：")
            lines += [f"  {w}" for w in self.warnings[:max_warnings]]
            if len(self.warnings) > max_warnings:
                lines.append(f"  ……另有 {len(self.warnings) - max_warnings} 条")
        return "\n".join(lines)


def _apply(row, fields: dict) -> bool:
    changed = False
    for name, value in fields.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


def _upsert(session: Session, existing: dict, key, model, key_fields: dict, fields: dict, counts: KindCounts):
    row = existing.get(key)
    if row is None:
        row = model(**key_fields, **fields, active=True)
        session.add(row)
        existing[key] = row
        counts.created += 1
    elif _apply(row, {**fields, "active": True}):
        counts.updated += 1
    else:
        counts.unchanged += 1
    return row


def _deactivate(existing: dict, present: set, counts: KindCounts) -> None:
    for key, row in existing.items():
        if key not in present and row.active:
            row.active = False
            counts.deactivated += 1


def _write(session: Session, plan: _Plan, existing: _Existing, report: ImportReport, bar: tqdm,
           settings: Settings) -> None:
    moved: list[int] = []
    for name, fields in plan.units.items():
        _upsert(session, existing.units, name, Unit, {"name": name}, fields, report.units)
        bar.update()
    for name in plan.kept_units - plan.units.keys():
        if _apply(existing.units[name], {"active": True}):
            report.units.updated += 1
    _deactivate(existing.units, plan.units.keys() | plan.kept_units, report.units)
    session.flush()  # new units need their ids before cadres can point at them
    unit_ids = {name: unit.id for name, unit in existing.units.items()}

    for mobile, fields in plan.cadres.items():
        values = {k: v for k, v in fields.items() if k != "unit"}
        values["unit_id"] = unit_ids[fields["unit"]]
        _upsert(session, existing.cadres, mobile, Cadre, {"mobile": mobile}, values, report.cadres)
        bar.update()
    _deactivate(existing.cadres, plan.cadres.keys() | plan.kept_cadres, report.cadres)
    session.flush()
    cadre_ids = {mobile: cadre.id for mobile, cadre in existing.cadres.items()}

    for (address, name), fields in plan.households.items():
        values = {k: v for k, v in fields.items() if k not in ("cadre", "coords")}
        values["cadre_id"] = cadre_ids[fields["cadre"]]
        before = existing.households.get((address, name))
        where = None if before is None else (before.latitude, before.longitude)
        coords = fields.get("coords")
        if coords == CLEAR:  # the roster takes back its own coordinates, not those learned from visits
            if before is not None and before.coord_source == SURVEYED:
                values.update(latitude=None, longitude=None, coord_source=None)
        elif coords is not None:  # surveyed coordinates replace learned ones, and older surveyed ones
            values.update(latitude=coords[0], longitude=coords[1], coord_source=SURVEYED)
        row = _upsert(session, existing.households, (address, name), Household, {"address": address, "name": name},
                      values, report.households)
        if where is not None and where != (row.latitude, row.longitude):
            moved.append(row.id)
        bar.update()
    _deactivate(existing.households, plan.households.keys(), report.households)
    if moved:  # the visits of a household whose coordinates changed: distance and evidence again
        session.flush()
        report.relocated = evidence.relocate(session, moved, settings)

    present = set()
    for (unit_name, name, phone), fields in plan.objects.items():
        key = (unit_ids[unit_name], name, phone)
        present.add(key)
        values = {k: v for k, v in fields.items() if k != "cadre"}
        values["cadre_id"] = cadre_ids[fields["cadre"]]
        _upsert(session, existing.objects, key, ServiceObject,
                {"unit_id": key[0], "name": name, "phone": phone}, values, report.service_objects)
        bar.update()
    _deactivate(existing.objects, present, report.service_objects)
    session.flush()
    if plan.windows_listed:
        _write_windows(session, plan, existing, unit_ids, cadre_ids, report, bar)


def _write_windows(session: Session, plan: _Plan, existing: _Existing, unit_ids: dict[str, int],
                   cadre_ids: dict[str, int], report: ImportReport, bar: tqdm) -> None:
    """Windows by (unit, name); each window's cadres on duty become exactly the listed ones."""
    present = set()
    for (unit_name, name), mobiles in plan.windows.items():
        key = (unit_ids[unit_name], name)
        present.add(key)
        counts = report.windows
        before = (counts.created, counts.updated)
        window = _upsert(session, existing.windows, key, ServiceWindow, {"unit_id": key[0], "name": name}, {}, counts)
        session.flush()
        wanted = {cadre_ids[m] for m in mobiles}
        current = existing.duties.get(window.id, set())
        if wanted != current:
            for cadre_id in current - wanted:
                session.delete(session.get(WindowDuty, (window.id, cadre_id)))
            session.add_all([WindowDuty(window_id=window.id, cadre_id=c) for c in wanted - current])
            if (counts.created, counts.updated) == before:  # counted unchanged, but its staff changed
                counts.unchanged, counts.updated = counts.unchanged - 1, counts.updated + 1
        bar.update()
    _deactivate(existing.windows, present, report.windows)
    session.flush()


def _active_counts(existing: _Existing) -> dict[str, int]:
    return {sheet: sum(1 for row in rows.values() if row.active) for sheet, rows in (
        (UNITS, existing.units), (CADRES, existing.cadres), (HOUSEHOLDS, existing.households),
        (OBJECTS, existing.objects), (WINDOWS, existing.windows))}


def import_roster(engine: Engine, path: str | Path, *, minimum: int = 10, progress: bool = False,
                  max_deactivate_share: float | None = 0.5,
                  supervision_units: tuple[str, ...] = SUPERVISION_UNITS,
                  settings: Settings | None = None) -> ImportReport:
    """Reads, checks and imports the roster in one transaction. Raises ``RosterError`` listing every
    problem, having written nothing, when the file has any error; ``RosterDeactivationRefused``,
    having written nothing, when it would deactivate more than ``max_deactivate_share`` of a sheet's
    active rows (None: any share, the operator confirmed). ``settings`` gives the datum of
    coordinates whose 坐标系 is blank (ROSTER_COORD_DATUM) and the evidence radius (the defaults when
    None)."""
    data = read_roster(path)
    with session_scope(engine) as session:
        return import_into(session, data, str(path), minimum=minimum, progress=progress,
                           max_deactivate_share=max_deactivate_share, supervision_units=supervision_units,
                           settings=settings)


def import_into(session: Session, data: RosterData, source: str, *, minimum: int = 10, progress: bool = False,
                max_deactivate_share: float | None = 0.5,
                supervision_units: tuple[str, ...] = SUPERVISION_UNITS,
                settings: Settings | None = None) -> ImportReport:
    """Checks and imports roster data in the caller's transaction (the console's upload runs it in the
    core's session); ``RosterError`` with every problem, having written nothing, when there is any;
    ``RosterDeactivationRefused`` when it would deactivate more than ``max_deactivate_share`` of a
    sheet's active rows (the caller's transaction must then roll back)."""
    settings = settings or Settings.model_construct()  # the defaults, without reading the environment
    report = ImportReport(source=source)
    existing = _Existing.load(session)
    active_before = _active_counts(existing)
    with _bar(data.row_count, "校验名册", progress) as bar:
        plan = _Checker(data, existing, minimum, bar, supervision_units, settings.roster_coord_datum).run()
    if plan.errors:
        raise RosterError(plan.errors)
    plan.windows_listed = data.windows_listed
    with _bar(plan.row_count, "写入数据库", progress) as bar:
        _write(session, plan, existing, report, bar, settings)
    if max_deactivate_share is not None:
        over = [(sheet, counts.deactivated, active_before[sheet]) for sheet, counts in report.by_sheet.items()
                if counts.deactivated and counts.deactivated > max_deactivate_share * active_before[sheet]]
        if over:
            raise RosterDeactivationRefused(over, max_deactivate_share)  # rolls the writes back
    report.warnings = plan.warnings
    return report
