"""Writes tests/data/form_headers.json from seed 004, the campaign document that draws 附件1–5.

The seed is a text file with each form drawn as a box table; this reads, for each form, its title,
the line under it, and the header row's columns (cells of the drawn table, a header cell broken over
two lines joined again). The JSON is committed so that tests/test_reports.py compares the exported
forms with the seed's in a fresh clone too; run this again only if the seed changes:

    python tests/data/extract_form_headers.py /work/shared/seeds/004_16e282e6bc6f5dc2.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "form_headers.json"


def extract(seed: Path) -> dict[str, dict]:
    lines = seed.read_text(encoding="utf-8").splitlines()
    out = {}
    for n in range(1, 6):
        start = lines.index(f"附件{n}")
        top = next(i for i in range(start, len(lines)) if lines[i].startswith("┌"))
        columns: list[str] = []
        for line in lines[top + 1:]:
            if line.startswith("├"):
                break
            cells = [c.strip() for c in line.split("│")[1:-1]]
            columns = cells if not columns else [a + b for a, b in zip(columns, cells)]
        out[str(n)] = {"title": lines[start + 1], "next": lines[start + 2], "columns": columns}
    return out


def main(seed: str) -> None:
    path = Path(seed)
    document = {
        "source": f"seed 004, 《关于进一步加强全市干部作风建设的意见》（海办发〔2016〕9号）, its forms 附件1–5; "
                  f"read from {path.name} in the project's shared seeds by tests/data/extract_form_headers.py",
        "forms": extract(path),
    }
    OUT.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
