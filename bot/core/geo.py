"""Coordinates: one datum stored (WGS-84), distances, and the GCJ-02 (火星坐标) of Chinese maps.

Telegram and GPS give WGS-84; WeChat, WeCom and every map app in mainland China give GCJ-02, an
obfuscated datum offset by up to several hundred metres; Baidu's maps add their own offset on top
(BD-09), which a roster typed from Baidu's map picker carries. A point is stored in WGS-84; a GCJ-02
or BD-09 one is converted on the way in with coord-convert (the published formulas; its results
agree with the reference test points of eviltransform to the last digit, tests/test_geo.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from coord_convert.transform import bd2wgs, gcj2wgs, outOfChina, wgs2gcj

WGS84, GCJ02, BD09 = "wgs84", "gcj02", "bd09"
DATUMS = (WGS84, GCJ02, BD09)
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Point:
    """A point in WGS-84, degrees."""

    latitude: float
    longitude: float


def to_wgs84(latitude: float, longitude: float, datum: str) -> Point:
    """The point in WGS-84; ``datum`` is what the source gave (``wgs84`` or ``gcj02``)."""
    if datum == GCJ02:
        lng, lat = gcj2wgs(longitude, latitude)
        return Point(lat, lng)
    if datum == BD09:
        lng, lat = bd2wgs(longitude, latitude)
        return Point(lat, lng)
    if datum != WGS84:
        raise ValueError(f"unknown datum {datum!r}")
    return Point(latitude, longitude)


def in_china(latitude: float, longitude: float) -> bool:
    """Within the rectangle around China where GCJ-02 applies (coord-convert's own bounds): a
    household's coordinates outside it are a typing error (or latitude and longitude swapped)."""
    return not outOfChina(longitude, latitude)


def to_gcj02(point: Point) -> tuple[float, float]:
    """(latitude, longitude) in GCJ-02, for a link to a Chinese map."""
    lng, lat = wgs2gcj(point.longitude, point.latitude)
    return lat, lng


def distance_m(a: Point, b: Point) -> float:
    """The great-circle distance in metres (haversine; ample for a doorstep and a county)."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat, dlon = lat2 - lat1, math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def describe(meters: float) -> str:
    """约 40 米 / 约 2.0 公里."""
    return f"{meters:.0f} 米" if meters < 1000 else f"{meters / 1000:.1f} 公里"
