"""Chinese working days (工作日) for ledger deadlines: public holidays skipped, make-up days (调休) counted.

The official calendar comes from the ``chinesecalendar`` package, which knows each year once the
State Council has published it. For a year the package does not cover yet, the calendar falls
back to weekends plus an admin-supplied holiday file (HOLIDAY_FILE), and says so in ``warnings``.

The holiday file has one date per line, ``YYYY-MM-DD 休`` (a holiday) or ``YYYY-MM-DD 班`` (a
make-up working day); ``#`` starts a comment.
"""

from __future__ import annotations

import logging
import re
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import chinese_calendar

from bot.errors import SettingFileError

log = logging.getLogger(__name__)

_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s+(休|班)\s*$")


class HolidayFileError(SettingFileError, ValueError):
    """The holiday file has a line that is not ``YYYY-MM-DD 休|班``; the message names the line."""


def read_holiday_file(path: Path) -> tuple[set[date], set[date]]:
    """(holidays, make-up working days) from the admin's file."""
    holidays: set[date] = set()
    workdays: set[date] = set()
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        try:
            day = date.fromisoformat(match.group(1)) if match else None
        except ValueError:
            day = None
        if day is None:
            raise HolidayFileError(f"{path} 第{number}行：应为“YYYY-MM-DD 休”或“YYYY-MM-DD 班”，实为“{raw.strip()}”")
        (holidays if match.group(2) == "休" else workdays).add(day)
    return holidays, workdays


class WorkCalendar:
    """Answers whether a day is a working day, and counts working days forward."""

    def __init__(self, holiday_file: Path | None = None):
        self.holidays, self.workdays = read_holiday_file(holiday_file) if holiday_file else (set(), set())
        self.warnings: list[str] = []
        self._warned: set[int] = set()

    def covered(self, year: int) -> bool:
        try:
            chinese_calendar.is_workday(date(year, 6, 1))
            return True
        except NotImplementedError:
            return False

    def is_workday(self, day: date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:
            if day.year not in self._warned:
                self._warned.add(day.year)
                message = (f"{day.year} 年的法定节假日安排尚未收录，按周末{'和 HOLIDAY_FILE ' if self.holidays or self.workdays else ''}"
                           f"计算工作日；请升级 chinesecalendar 或在 HOLIDAY_FILE 中补充。")
                self.warnings.append(message)
                log.warning(message)
            return day.weekday() < 5

    def add_working_days(self, start: date, days: int) -> date:
        """The date ``days`` working days after ``start`` (start itself not counted)."""
        current = start
        while days > 0:
            current += timedelta(days=1)
            if self.is_workday(current):
                days -= 1
        return current

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (negative when end is before start)."""
        if end < start:
            return -self.working_days_between(end, start)
        return sum(1 for i in range(1, (end - start).days + 1) if self.is_workday(start + timedelta(days=i)))


@lru_cache(maxsize=4)
def work_calendar(holiday_file: Path | None = None) -> WorkCalendar:
    """The process's calendar for a holiday file (read once)."""
    return WorkCalendar(holiday_file)
