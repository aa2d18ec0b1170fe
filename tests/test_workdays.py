"""Working days around 国庆 and 春节, with make-up days, and the fallback for a year not yet published."""

from __future__ import annotations

from datetime import date

import pytest

from bot.core.workdays import HolidayFileError, WorkCalendar


@pytest.mark.parametrize("start, days, expected", [
    # 春节 2026: 2-15..2-23 off; Saturday 2-14 and Saturday 2-28 are make-up working days.
    (date(2026, 2, 12), 1, date(2026, 2, 13)),
    (date(2026, 2, 13), 1, date(2026, 2, 14)),  # the make-up Saturday counts
    (date(2026, 2, 14), 1, date(2026, 2, 24)),  # the whole holiday is skipped
    (date(2026, 2, 24), 4, date(2026, 2, 28)),  # ... and so is the second make-up Saturday counted
    # 中秋 2026-09-25 and 国庆 10-1..10-7 off; Saturday 10-10 is a make-up working day.
    (date(2026, 9, 24), 1, date(2026, 9, 28)),
    (date(2026, 9, 30), 1, date(2026, 10, 8)),
    (date(2026, 9, 30), 3, date(2026, 10, 10)),
    (date(2026, 9, 30), 5, date(2026, 10, 13)),
    (date(2026, 11, 20), 5, date(2026, 11, 27)),  # an ordinary week
])
def test_official_calendar(start, days, expected):
    assert WorkCalendar().add_working_days(start, days) == expected


def test_known_days():
    cal = WorkCalendar()
    assert cal.is_workday(date(2026, 2, 14)) and cal.is_workday(date(2026, 2, 28))
    assert not cal.is_workday(date(2026, 2, 17)) and not cal.is_workday(date(2026, 10, 1))
    assert cal.working_days_between(date(2026, 2, 13), date(2026, 2, 24)) == 2
    assert cal.warnings == []


def test_fallback_year_uses_weekends_and_the_holiday_file(tmp_path):
    year = 2099
    cal = WorkCalendar()
    assert not cal.covered(year)
    assert cal.add_working_days(date(year, 1, 1), 1) == date(year, 1, 2)  # a Friday, weekends only
    assert cal.warnings and "2099" in cal.warnings[0]
    holidays = tmp_path / "holidays.txt"
    holidays.write_text("# 2099 安排\n2099-01-02 休\n2099-01-03 班  # 周六补班\n", encoding="utf-8")
    cal = WorkCalendar(holidays)
    assert cal.add_working_days(date(year, 1, 1), 1) == date(year, 1, 3)
    assert cal.add_working_days(date(year, 1, 1), 2) == date(year, 1, 5)


def test_a_broken_holiday_file_names_the_line(tmp_path):
    bad = tmp_path / "holidays.txt"
    bad.write_text("2099-01-02 休\n2099-13-01 休\n", encoding="utf-8")
    with pytest.raises(HolidayFileError, match="第2行"):
        WorkCalendar(bad)
