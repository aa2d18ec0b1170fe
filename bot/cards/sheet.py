"""The A4 PDF of cards for cutting: four cards a page, with cut marks.

Each card goes into the PDF as the very PNG written beside it: a PNG's IDAT data is a zlib
stream with per-row filters, which PDF reads as FlateDecode with the PNG predictor, so nothing is
decoded, resampled or compressed again (lossless, and fast for a thousand cards).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bot.cards.render import CARD_MM

A4_MM = (210, 297)
COLUMNS, ROWS = 2, 2
PER_PAGE = COLUMNS * ROWS
_PT_PER_MM = 72 / 25.4
_CUT_MARK_MM = 4


@dataclass(frozen=True)
class PngImage:
    width: int
    height: int
    colors: int  # 1 grayscale, 3 RGB
    idat: bytes


def read_png(data: bytes) -> PngImage:
    """The size and compressed pixel data of an 8-bit, non-interlaced grayscale or RGB PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    width, height, depth, color_type, _, _, interlace = header
    if depth != 8 or color_type not in (0, 2) or interlace:
        raise ValueError("only 8-bit non-interlaced grayscale or RGB PNGs are laid out")
    return PngImage(width, height, 1 if color_type == 0 else 3, b"".join(idat))


def _slots() -> list[tuple[float, float]]:
    """Lower-left corners (in points) of the cards on a page, reading order."""
    card_w, card_h = CARD_MM
    left = (A4_MM[0] - COLUMNS * card_w) / 2
    bottom = (A4_MM[1] - ROWS * card_h) / 2
    return [((left + c * card_w) * _PT_PER_MM, (bottom + (ROWS - 1 - r) * card_h) * _PT_PER_MM)
            for r in range(ROWS) for c in range(COLUMNS)]


def _cut_marks() -> bytes:
    """Short lines in the margins on every card edge, so a guillotine or scissors can line up."""
    card_w, card_h = (v * _PT_PER_MM for v in CARD_MM)
    (x0, _), (_, y0) = _slots()[0], _slots()[-1]
    xs = [x0 + i * card_w for i in range(COLUMNS + 1)]
    ys = [y0 + i * card_h for i in range(ROWS + 1)]
    mark = _CUT_MARK_MM * _PT_PER_MM
    lines = [b"0.5 G 0.4 w"]
    for x in xs:
        lines.append(b"%.2f %.2f m %.2f %.2f l S" % (x, ys[0] - mark - 2, x, ys[0] - 2))
        lines.append(b"%.2f %.2f m %.2f %.2f l S" % (x, ys[-1] + 2, x, ys[-1] + mark + 2))
    for y in ys:
        lines.append(b"%.2f %.2f m %.2f %.2f l S" % (xs[0] - mark - 2, y, xs[0] - 2, y))
        lines.append(b"%.2f %.2f m %.2f %.2f l S" % (xs[-1] + 2, y, xs[-1] + mark + 2, y))
    return b"\n".join(lines)


class _PdfWriter:
    def __init__(self):
        self.objects: list[bytes] = []

    def reserve(self) -> int:
        self.objects.append(b"")
        return len(self.objects)

    def set(self, number: int, body: bytes) -> None:
        self.objects[number - 1] = body

    def add(self, body: bytes) -> int:
        self.objects.append(body)
        return len(self.objects)

    def stream(self, header: bytes, data: bytes) -> int:
        return self.add(b"<< " + header + b" /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")

    def write(self, path: Path, root: int) -> None:
        with open(path, "wb") as out:
            out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
            offsets = []
            for number, body in enumerate(self.objects, 1):
                offsets.append(out.tell())
                out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
            xref = out.tell()
            out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(self.objects) + 1))
            out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
            out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
                      % (len(self.objects) + 1, root, xref))


def write_sheets(pngs: Iterable[bytes], path: str | Path) -> int:
    """Writes the cards, four to an A4 page, to the PDF at ``path``; returns the number of pages."""
    pdf = _PdfWriter()
    catalog, pages = pdf.reserve(), pdf.reserve()
    page_ids: list[int] = []
    card_w, card_h = (v * _PT_PER_MM for v in CARD_MM)
    page_w, page_h = (v * _PT_PER_MM for v in A4_MM)
    marks = _cut_marks()
    slots = _slots()
    batch: list[PngImage] = []

    def flush() -> None:
        names, content = [], [marks]
        for index, image in enumerate(batch):
            space = b"/DeviceGray" if image.colors == 1 else b"/DeviceRGB"
            xobject = pdf.stream(
                b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s /BitsPerComponent 8 "
                b"/Filter /FlateDecode /DecodeParms << /Predictor 15 /Colors %d /BitsPerComponent 8 /Columns %d >>"
                % (image.width, image.height, space, image.colors, image.width), image.idat)
            names.append(b"/C%d %d 0 R" % (index, xobject))
            x, y = slots[index]
            content.append(b"q %.3f 0 0 %.3f %.3f %.3f cm /C%d Do Q" % (card_w, card_h, x, y, index))
        data = zlib.compress(b"\n".join(content))
        stream = pdf.stream(b"/Filter /FlateDecode", data)
        page_ids.append(pdf.add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %.3f %.3f] /Resources << /XObject << %s >> >> "
            b"/Contents %d 0 R >>" % (pages, page_w, page_h, b" ".join(names), stream)))
        batch.clear()

    for png in pngs:
        batch.append(read_png(png))
        if len(batch) == PER_PAGE:
            flush()
    if batch or not page_ids:
        flush()
    pdf.set(catalog, b"<< /Type /Catalog /Pages %d 0 R >>" % pages)
    pdf.set(pages, b"<< /Type /Pages /Kids [%s] /Count %d >>"
            % (b" ".join(b"%d 0 R" % p for p in page_ids), len(page_ids)))
    pdf.write(Path(path), catalog)
    return len(page_ids)
