"""``python -m bench.cards``: evaluation cards per second against raw QR matrix generation.

For the same 1,000 payloads (rating-page URLs with real signed tokens), in the same run:
  raw    the QR matrix alone (qrcode, error correction H, fit to the smallest version), in one
         process: the floor any card generator pays;
  cards  the whole ``qr-cards`` batch: each card drawn and written as a PNG, over the cores, and
         the A4 PDF of them all.
Prints both rates and the ratio of the times (target: cards at most 2x raw), and the serial card
rate for reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from bot.cards import CardSpec, write_cards
from bot.cards.render import qr_matrix
from bot.core.evaluation import make_token
from bot.fonts import find_cjk_font

TARGET_RATIO = 2.0
BASE = "https://pingjia.example.gov.cn"
KEY = b"bench-only-evaluation-secret-0123456789"
_NAMES = ["王立新", "陈静", "刘海涛", "赵敏", "欧阳晓东", "不动产登记窗口", "便民服务中心综合窗口"]
_UNITS = ["市住建局", "城关街道", "市市场监督管理局", "市人力资源和社会保障局"]
_DUTIES = ["联系东门社区、东岭村；城建、物业问题", "社会保险登记、待遇核定", "个体工商户登记、食品经营许可"]


def specs(count: int) -> list[CardSpec]:
    out = []
    for i in range(count):
        name = _NAMES[i % len(_NAMES)]
        kind = "window" if name.endswith("窗口") else "cadre"
        out.append(CardSpec(f"card-{i:05d}.png", f"{BASE}/r/{make_token(KEY, i + 1, 1)}", kind, name,
                            _UNITS[i % len(_UNITS)], None if kind == "window" else "科员",
                            "王立新、陈静" if kind == "window" else _DUTIES[i % len(_DUTIES)], f"No.{i + 1}-1"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cards", description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1000)
    parser.add_argument("--serial-sample", type=int, default=100, help="cards drawn in one process, for reference")
    args = parser.parse_args(argv)
    font = find_cjk_font(None)
    batch = specs(args.cards)

    started = time.perf_counter()
    for spec in batch:
        qr_matrix(spec.payload)
    raw = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        written = write_cards(batch, folder, font, progress=False)
        cards = time.perf_counter() - started
        pdf_mb = os.path.getsize(written.pdf) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        sample = batch[:args.serial_sample]
        started = time.perf_counter()
        write_cards(sample, folder, font, progress=False, workers=1)
        serial = (time.perf_counter() - started) / len(sample)

    ratio = cards / raw
    print(f"{args.cards} cards on {os.cpu_count()} cores (font {font.name})")
    print(f"raw QR matrices : {args.cards / raw:8.1f} /s   ({raw:.2f} s, one process)")
    print(f"cards, PNG + PDF: {args.cards / cards:8.1f} /s   ({cards:.2f} s, {written.pages} A4 pages, {pdf_mb:.1f} MB PDF)")
    print(f"one card, serial: {serial * 1000:8.1f} ms")
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"card time / raw time = {ratio:.2f}x  ({verdict} the target of at most {TARGET_RATIO:.0f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
