"""Finding a font that has Chinese glyphs: CARD_FONT if set, else the usual system places."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

# Debian/Ubuntu packages first (fonts-wqy-microhei is what CI installs), then macOS and Windows.
CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)
FONT_PACKAGE = "fonts-wqy-microhei"


class CardFontError(RuntimeError):
    """No usable CJK font; the message names the setting and a package that provides one."""


def covers_cjk(path: str | Path) -> bool:
    """Whether the font draws Chinese: two different characters must not come out as the same box."""
    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False
    first, second = font.getmask("评"), font.getmask("价")
    return first.getbbox() is not None and bytes(first) != bytes(second)


def _fontconfig_candidates() -> list[str]:
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())


@lru_cache(maxsize=4)
def find_cjk_font(configured: Path | None = None) -> Path:
    """The font cards are drawn with; raises ``CardFontError`` saying how to get one."""
    if configured is not None:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise CardFontError(f"CARD_FONT={configured} 不存在：请填写 .ttf/.ttc/.otf 字体文件的路径，或留空自动查找。")
        if not covers_cjk(path):
            raise CardFontError(f"CARD_FONT={configured} 不含中文字形：请换一个中文字体，例如 {CANDIDATES[0]}。")
        return path
    for candidate in (*CANDIDATES, *_fontconfig_candidates()):
        if Path(candidate).is_file() and covers_cjk(candidate):
            return Path(candidate)
    raise CardFontError(
        f"找不到中文字体，无法印制评价卡。请安装 {FONT_PACKAGE}（sudo apt-get install {FONT_PACKAGE}），"
        "或在 CARD_FONT 中填写中文字体文件（.ttf/.ttc/.otf）的路径。")
