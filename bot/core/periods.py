"""Half-years (上半年 / 下半年): the period every visit round and report form belongs to."""

from __future__ import annotations

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
