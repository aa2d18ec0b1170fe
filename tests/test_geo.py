"""The datum conversion against published reference points, and distances."""

import pytest

from bot.core.geo import BD09, GCJ02, WGS84, Point, distance_m, in_china, to_gcj02, to_wgs84

# eviltransform's reference points: WGS-84 and the GCJ-02 that Chinese maps show for it.
REFERENCE = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # 上海
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # 深圳
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # 北京
]


@pytest.mark.parametrize("wlat, wlng, glat, glng", REFERENCE)
def test_gcj02_both_ways(wlat, wlng, glat, glng):
    assert to_gcj02(Point(wlat, wlng)) == pytest.approx((glat, glng), abs=1e-7)
    back = to_wgs84(glat, glng, GCJ02)
    assert distance_m(back, Point(wlat, wlng)) < 0.05  # the inverse is iterative: centimetres
    assert 300 < distance_m(to_wgs84(glat, glng, WGS84), Point(wlat, wlng)) < 800  # what ignoring the datum costs


def test_distances():
    tiananmen, qianmen = Point(39.9087, 116.3975), Point(39.8995, 116.3976)
    assert distance_m(tiananmen, qianmen) == pytest.approx(1023, rel=0.01)
    assert distance_m(tiananmen, tiananmen) == 0
    with pytest.raises(ValueError):
        to_wgs84(1, 2, "cgcs2000")


def test_bd09_of_baidus_map_picker():
    """BD-09 (百度坐标) is GCJ-02 with Baidu's own offset: coordtransform's reference point (BD-09
    116.404, 39.915 is GCJ-02 116.39762729119315, 39.90865673957631), then GCJ-02 to WGS-84."""
    gcj = to_wgs84(39.90865673957631, 116.39762729119315, GCJ02)
    assert distance_m(to_wgs84(39.915, 116.404, BD09), gcj) < 0.05
    assert 800 < distance_m(to_wgs84(39.915, 116.404, WGS84), gcj) < 1500  # what ignoring BD-09 costs


def test_in_china():
    assert in_china(31.23, 121.47) and in_china(45.75, 126.65) and in_china(18.25, 109.5)
    assert not in_china(121.47, 31.23)  # latitude and longitude swapped
    assert not in_china(48.85, 2.35) and not in_china(0, 0)
