"""What writing every text cell as text costs the report exports: ``python -m bench.export_text``.

Issue 15 item 7: a cell an export writes from user or roster text is never a formula, so every
string cell of 附件1–5 goes through ``forms.as_text`` (data type "s", and Excel's quote prefix
for text that starts like a formula). This times ``forms.workbook`` on a city's worth of rows:
附件3 with 20,000 service objects (4 columns) and 附件2 with 5,000 problems (6 columns), a tenth
of the values starting with "=", "+", "-" or "@". The floor is the same workbook written in the
same run with ``as_text`` switched off (what the export did before), alternating run by run so
that whatever else runs on the machine slows both alike. Median of --reps runs each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bot.config import Settings
from bot.reports import forms
from storage.models import Unit


def rows(count: int, width: int, seed: int) -> list[tuple[str, ...]]:
    rnd = random.Random(seed)
    starts = ["=", "+", "-", "@"]
    out = []
    for n in range(count):
        values = [f"对象{n}", f"某街道{n % 97}号", f"1370{n:07d}", "城建", f"问题内容{n}" * 3, "备注"][:width]
        if rnd.random() < 0.1:
            values[rnd.randrange(width)] = rnd.choice(starts) + "HYPERLINK(\"http://x\"&A1,\"点此查看\")"
        out.append(tuple(values))
    return out


def timed(form: int, data, settings: Settings, text_cells: bool) -> float:
    real = forms.as_text
    if not text_cells:
        forms.as_text = lambda cell, value: None
    try:
        started = time.perf_counter()
        forms.workbook(form, "2026H2", [forms.Sheet(Unit(id=1, name="市住建局"), "", data)], settings)
        return time.perf_counter() - started
    finally:
        forms.as_text = real


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.export_text", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5, help="timed runs of each (default 5)")
    args = p.parse_args(argv)
    settings = Settings(environment="test", load_example_roster=False)
    print("export with text cells vs. the floor (the same workbook, as_text off), median of", args.reps)
    for form, count, width in ((3, 20_000, 4), (2, 5_000, 6)):
        data = rows(count, width, seed=form)
        timed(form, data, settings, True)  # warm-up: imports, openpyxl's first workbook
        floor, text = [], []
        for _ in range(args.reps):
            floor.append(timed(form, data, settings, False))
            text.append(timed(form, data, settings, True))
        f, t = statistics.median(floor), statistics.median(text)
        print(f"附件{form} {count:>6} rows x {width}: text cells {t:6.3f} s, floor {f:6.3f} s, "
              f"ratio {t / f:4.2f} (+{(t - f) * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
