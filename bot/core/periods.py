"""Half-years (上半年 / 下半年): the period every visit round and report form belongs to."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo


def half_of(moment: datetime, tz: ZoneInfo) -> str:
    """The half-year of an aware time in the local zone, as '2026H2'."""
    local = moment.astimezone(tz)
    return f"{local.year}H{1 if local.month <= 6 else 2}"


def half_label(half: str) -> str:
    """'2026H2' -> '2026年下半年'."""
    year, part = half.split("H")
    return f"{year}年{'上' if part == '1' else '下'}半年"


def parse_half(text: str) -> str | None:
    """'2026H2', '2026h2', '2026年下半年' or '2026-2' -> '2026H2'; None when it is not a half-year."""
    text = (text or "").strip()
    match = re.fullmatch(r"(\d{4})\s*(?:[Hh]|-|年)?\s*([12上下])(?:半年)?", text)
    if not match:
        return None
    part = {"上": "1", "下": "2"}.get(match.group(2), match.group(2))
    return f"{match.group(1)}H{part}"


def half_bounds(half: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The first instant of the half-year and of the next one, aware, in the local zone."""
    year, part = (int(x) for x in half.split("H"))
    start = datetime(year, 1 if part == 1 else 7, 1, tzinfo=tz)
    end = datetime(year, 7, 1, tzinfo=tz) if part == 1 else datetime(year + 1, 1, 1, tzinfo=tz)
    return start, end
