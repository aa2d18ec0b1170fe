"""Finding a font that can draw Chinese, for printed cards and digest charts.

A configured path wins; otherwise the usual Debian locations are tried, then fontconfig. When
none is found the error names a Debian package that provides one.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from bot.errors import SettingFileError

CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",  # macOS and Windows, for an admin printing cards on a laptop
    "C:/Windows/Fonts/msyh.ttc",
)
PACKAGE_HINT = "fonts-wqy-microhei"


class FontNotFound(SettingFileError):
    """No CJK font: the message says how to install one or which setting to set."""


def covers_cjk(path: str | Path) -> bool:
    """Whether the font draws Chinese: two different characters must not come out as the same box."""
    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False
    first, second = font.getmask("评"), font.getmask("价")
    return first.getbbox() is not None and bytes(first) != bytes(second)


def _fontconfig_match() -> Path | None:
    """The font fontconfig offers for Chinese, if it claims to cover Chinese."""
    if shutil.which("fc-match"):
        try:
            found = subprocess.run(["fc-match", "-f", "%{file}", ":lang=zh-cn"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            found = ""
        if found and Path(found).is_file() and Path(found).suffix.lower() in (".ttf", ".ttc", ".otf"):
            # fc-match always answers something; accept it only if it claims Chinese coverage.
            langs = subprocess.run(["fc-query", "-f", "%{lang}", found], capture_output=True, text=True,
                                   timeout=10).stdout
            if "zh-cn" in langs:
                return Path(found)
    return None


@lru_cache(maxsize=8)
def find_cjk_font(configured: Path | None = None) -> Path:
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FontNotFound(f"CARD_FONT 指向的字体文件不存在：{path}")
        if not covers_cjk(path):
            raise FontNotFound(f"CARD_FONT 指向的字体不含中文字形：{path}。请换一个中文字体，例如 {CANDIDATES[0]}。")
        return path
    for candidate in CANDIDATES:
        if Path(candidate).is_file() and covers_cjk(candidate):
            return Path(candidate)
    found = _fontconfig_match()
    if found is not None:
        return found
    raise FontNotFound(
        f"找不到可显示中文的字体。请安装一个，例如 `apt-get install {PACKAGE_HINT}`，"
        "或在 CARD_FONT 中填写 .ttf/.ttc/.otf 字体文件的路径。")
