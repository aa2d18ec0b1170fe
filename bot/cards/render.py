"""Drawing one evaluation card, as a PNG at print resolution.

The layout follows the 亮牌 badges on service counters: a title band in the official red (a black
band reads as mourning), the name large, unit and post, duties, then the QR code and the one-line
instruction (我的服务 on a cadre's card, 本窗口 on a window's), and at the foot the issuing body and
the supervision phone (ISSUER_NAME, SUPERVISION_PHONE) an office hangs its cards up with. The QR
code uses error correction H (30% of it may be scratched or covered) and the standard quiet zone of four modules; its modules
are whole pixels (no resampling blur), so printers and phone cameras see sharp edges.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.constants import ERROR_CORRECT_H

from bot import texts

DPI = 200
CARD_MM = (90, 130)  # four to an A4 sheet
INK, PAPER, FAINT = (0, 0, 0), (255, 255, 255), (150, 150, 150)
BAND = (200, 22, 30)  # 中国红 #C8161E, the red of official notices
DUTY = (60, 60, 60)


def mm(value: float) -> int:
    return round(value / 25.4 * DPI)


CARD_PX = (mm(CARD_MM[0]), mm(CARD_MM[1]))


@dataclass(frozen=True)
class CardSpec:
    """What one card shows and encodes; ``filename`` is its PNG's name in the output folder."""

    filename: str
    payload: str  # what the QR code encodes: the rating page URL or the Telegram deep link
    kind: str  # "cadre" or "window"
    name: str
    unit: str
    post: str | None = None
    duties: str | None = None
    serial: str = ""  # code id and version, so an admin can tell a reissued card from the lost one
    issuer: str = ""  # 发布单位, e.g. 青山县作风办
    supervision_phone: str = ""  # 监督电话, e.g. 12345


@lru_cache(maxsize=32)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def qr_matrix(payload: str) -> list[list[bool]]:
    """The QR modules for ``payload`` with the quiet zone, error correction H."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_H, border=4)
    code.add_data(payload)
    code.make(fit=True)
    return code.get_matrix()


def qr_image(payload: str, max_px: int) -> Image.Image:
    matrix = qr_matrix(payload)
    n = len(matrix)
    module = max(1, max_px // n)
    raw = bytes(0 if dark else 255 for row in matrix for dark in row)
    return Image.frombytes("L", (n, n), raw).resize((n * module, n * module), Image.NEAREST)


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int) -> list[str]:
    """Lines of at most ``width`` pixels, broken anywhere (Chinese has no spaces), the last one elided."""
    lines, line = [], ""
    for ch in text:
        if font.getlength(line + ch) > width:
            lines.append(line)
            line = ch.lstrip()
        else:
            line += ch
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last + "…"]
    return lines


def _centered(draw: ImageDraw.ImageDraw, y: int, text: str, font, fill=INK) -> int:
    """Draws ``text`` centred at height ``y``; returns the y below it."""
    width = font.getlength(text)
    draw.text(((CARD_PX[0] - width) / 2, y), text, font=font, fill=fill)
    ascent, descent = font.getmetrics()
    return y + ascent + descent


def instruction(spec: CardSpec) -> str:
    """我的服务 only on a cadre's own card; a window's card names the window."""
    return texts.CARD_INSTRUCTION_WINDOW if spec.kind == "window" else texts.CARD_INSTRUCTION


def draw_card(spec: CardSpec, font_path: str) -> Image.Image:
    width, height = CARD_PX
    card = Image.new("RGB", CARD_PX, PAPER)
    draw = ImageDraw.Draw(card)
    margin = mm(6)
    band = mm(15)
    draw.rectangle((0, 0, width, band), fill=BAND)
    title = texts.CARD_TITLE_WINDOW if spec.kind == "window" else texts.CARD_TITLE_CADRE
    title_font = _font(font_path, mm(5.5))
    ascent, descent = title_font.getmetrics()
    _centered(draw, (band - ascent - descent) // 2, title, title_font, fill=PAPER)

    y = band + mm(5)
    name_font = _font(font_path, mm(9) if len(spec.name) <= 8 else mm(6))
    for line in _wrap(spec.name, name_font, width - 2 * margin, 2):
        y = _centered(draw, y, line, name_font)
    y += mm(1.5)
    small = _font(font_path, mm(3.8))
    unit_line = spec.unit + (f" · {spec.post}" if spec.post else "")
    for line in _wrap(unit_line, small, width - 2 * margin, 2):
        y = _centered(draw, y, line, small)
    if spec.duties:
        y += mm(1)
        duty_font = _font(font_path, mm(3.2))
        label = texts.CARD_ON_DUTY if spec.kind == "window" else texts.CARD_DUTIES
        for line in _wrap(label + spec.duties, duty_font, width - 2 * margin, 3):
            y = _centered(draw, y, line, duty_font, fill=DUTY)

    footer_font = _font(font_path, mm(2.6))
    issuer_font = _font(font_path, mm(3.2))
    instruction_font = _font(font_path, mm(5.2))
    issuer_line = " · ".join(part for part in (
        spec.issuer, texts.SUPERVISION_PHONE.format(phone=spec.supervision_phone) if spec.supervision_phone else "")
        if part)
    issuer_height = sum(issuer_font.getmetrics()) + mm(1) if issuer_line else 0
    bottom = (height - mm(5) - sum(footer_font.getmetrics()) - sum(instruction_font.getmetrics()) - mm(2)
              - issuer_height)
    room = bottom - y - mm(3)
    qr = qr_image(spec.payload, min(mm(62), room, width - 2 * margin))
    qr_y = y + mm(1.5) + (room - qr.height) // 2
    card.paste(qr, ((width - qr.width) // 2, qr_y))
    y = _centered(draw, qr_y + qr.height + mm(1.5), instruction(spec), instruction_font)
    if issuer_line:
        _centered(draw, y + mm(1), issuer_line, issuer_font, fill=BAND)
    footer = texts.CARD_FOOTER + (f"  {spec.serial}" if spec.serial else "")
    _centered(draw, height - mm(4) - sum(footer_font.getmetrics()), footer, footer_font, fill=FAINT)
    draw.rectangle((0, 0, width - 1, height - 1), outline=FAINT, width=2)  # the cutting line
    return card


def render_card(spec: CardSpec, font_path: str) -> bytes:
    """The card as PNG bytes (RGB for the red band, 200 dpi)."""
    buffer = io.BytesIO()
    draw_card(spec, font_path).save(buffer, "PNG", compress_level=1, dpi=(DPI, DPI))
    return buffer.getvalue()
