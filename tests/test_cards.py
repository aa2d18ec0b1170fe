"""Evaluation cards as an admin prints them: `python -m bot qr-cards`, read back by a real QR decoder
(zxing-cpp) from the PNGs and from the PDF rendered to pixels (PyMuPDF), filters, the font
search, the parallel batch, and a revoked card refused by the page and by the bot."""

from __future__ import annotations

import httpx
import pymupdf
import pytest
import zxingcpp
from PIL import Image

from bot import fonts, texts
from bot.app import create_app
from bot.cards import CardSpec, write_cards
from bot.cli import main as cli_main
from bot.config import get_settings
from bot.core import evaluation
from bot.core.engine import Engine
from storage.db import session_scope
from storage.models import TargetKind
from tests.standins.server import ServedApp
from tests.utils import Chat, make_roster, make_window

pytestmark = pytest.mark.roster()  # the roster fixture below: a window with the cadre, the supervisor and the admin on duty

BASE = "https://pingjia.example.gov.cn"


def qr_texts(image: Image.Image) -> list[str]:
    return sorted(result.text for result in zxingcpp.read_barcodes(image))


def pdf_qr_texts(path) -> tuple[int, list[str]]:
    """Every QR code on every page of the PDF, rendered at 150 dpi as a printer or scanner would see it."""
    found = []
    with pymupdf.open(path) as pdf:
        for page in pdf:
            pixmap = page.get_pixmap(dpi=150)
            found += qr_texts(Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples))
        return pdf.page_count, sorted(found)


def cli(monkeypatch, database_url, *argv, **env) -> int:
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return cli_main(list(argv))
    finally:
        get_settings.cache_clear()


@pytest.fixture
def roster(db):
    roster = make_roster(db)
    # The admin also serves at the window: since issue #11 only people who serve the public get a card
    # (tests/test_haochaping.py checks that an admin who does not is left out).
    make_window(db, roster, on_duty=[roster.cadre, roster.supervisor, roster.admin])
    return roster


def test_cards_decode_to_the_rating_page_of_each_target(db, roster, settings, database_url, monkeypatch, tmp_path,
                                                        capsys):
    out = tmp_path / "cards"
    assert cli(monkeypatch, database_url, "qr-cards", "--out", str(out), "--quiet", PUBLIC_BASE_URL=BASE) == 0
    assert "已印制 4 张评价卡" in capsys.readouterr().out

    pngs = sorted(out.glob("*.png"))
    assert [p.name.split("-", 2)[::2] for p in pngs] == [
        ["干部", "李明.png"], ["干部", "王芳.png"], ["干部", "赵强.png"], ["窗口", "不动产登记窗口.png"]]
    decoded = {}
    for png in pngs:
        [url] = qr_texts(Image.open(png))
        assert url.startswith(f"{BASE}/r/") and len(url.rsplit("/", 1)[1]) <= 64
        decoded[png.name] = url
    with session_scope(db) as s:
        targets = {name: evaluation.resolve(s, settings.evaluation_key, url.rsplit("/", 1)[1])
                   for name, url in decoded.items()}
    assert {t.name for t in targets.values()} == {"李明", "王芳", "赵强", "不动产登记窗口"}
    assert {t.kind for t in targets.values()} == {TargetKind.CADRE, TargetKind.WINDOW}

    pages, on_paper = pdf_qr_texts(out / "评价卡-A4.pdf")
    assert pages == 1 and on_paper == sorted(decoded.values())

    # Printing again gives the same codes: cards are reprinted, not reissued.
    assert cli(monkeypatch, database_url, "qr-cards", "--out", str(tmp_path / "again"), "--quiet",
               PUBLIC_BASE_URL=BASE) == 0
    assert {qr_texts(Image.open(p))[0] for p in (tmp_path / "again").glob("*.png")} == set(decoded.values())


def test_filters_and_the_telegram_deep_link(db, roster, settings, database_url, monkeypatch, tmp_path, core):
    def printed(*args, **env) -> list[str]:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert cli(monkeypatch, database_url, "qr-cards", "--out", str(out), "--quiet", *args, **env) == 0
        return sorted(p.name.split("-", 2)[2] for p in out.glob("*.png"))

    assert printed("--cadre", "13800000003") == ["李明.png"]
    assert printed("--cadre", "王芳") == ["王芳.png"]
    assert printed("--window", "不动产登记窗口") == ["不动产登记窗口.png"]
    assert len(printed("--unit", "市住建局")) == 4
    assert cli(monkeypatch, database_url, "qr-cards", "--unit", "没有这个局") == 1
    assert cli(monkeypatch, database_url, "qr-cards", "--encode", "telegram") == 1  # no bot username

    out = tmp_path / "tg"
    assert cli(monkeypatch, database_url, "qr-cards", "--cadre", "李明", "--encode", "telegram", "--out", str(out),
               "--quiet", TELEGRAM_BOT_USERNAME="zuofeng_test_bot") == 0
    [link] = qr_texts(Image.open(next(out.glob("*.png"))))
    assert link.startswith("https://t.me/zuofeng_test_bot?start=r")
    citizen = Chat(core, "citizen")
    assert "您正在评价：李明（市住建局）" in citizen.say("/start " + link.split("start=", 1)[1])


def test_a_revoked_card_is_refused_by_the_page_and_the_bot(db, roster, settings, database_url, monkeypatch, tmp_path,
                                                           clock):
    served = ServedApp(None)
    base = f"http://127.0.0.1:{served.bind()}"
    served.app = create_app(settings, Engine(db, settings, clock=clock), with_worker=False)
    with served:
        out = tmp_path / "old"
        assert cli(monkeypatch, database_url, "qr-cards", "--cadre", "李明", "--out", str(out), "--quiet",
                   PUBLIC_BASE_URL=base) == 0
        [old_url] = qr_texts(Image.open(next(out.glob("*.png"))))
        assert httpx.get(old_url).status_code == 200

        assert cli(monkeypatch, database_url, "revoke-card", "--cadre", "13800000003") == 0
        refused = httpx.get(old_url)
        assert refused.status_code == 404 and texts.RATING_CODE_INVALID in refused.text
        old_token = old_url.rsplit("/", 1)[1]
        assert Chat(Engine(db, settings, clock=clock), "citizen").say(f"/start {old_token}") == texts.RATING_CODE_INVALID

        new = tmp_path / "new"
        assert cli(monkeypatch, database_url, "qr-cards", "--cadre", "李明", "--out", str(new), "--quiet",
                   PUBLIC_BASE_URL=base) == 0
        [new_url] = qr_texts(Image.open(next(new.glob("*.png"))))
        assert new_url != old_url and httpx.get(new_url).status_code == 200


def test_large_batches_run_in_parallel_and_keep_their_order(tmp_path):
    font = fonts.find_cjk_font(None)
    specs = [CardSpec(f"c{i:03d}.png", f"{BASE}/r/card-{i}", "cadre", f"干部{i}", "市住建局", "科员",
                      "联系东门社区", f"No.{i}-1") for i in range(50)]
    written = write_cards(specs, tmp_path, font, progress=False, workers=2)
    assert written.pages == 13 and len(written.pngs) == 50
    assert qr_texts(Image.open(tmp_path / "c049.png")) == [f"{BASE}/r/card-49"]
    with pymupdf.open(written.pdf) as pdf:
        last = pdf[-1].get_pixmap(dpi=150)
        first = pdf[0].get_pixmap(dpi=150)
    assert qr_texts(Image.frombytes("RGB", (last.width, last.height), last.samples)) == sorted(
        [f"{BASE}/r/card-48", f"{BASE}/r/card-49"])
    assert qr_texts(Image.frombytes("RGB", (first.width, first.height), first.samples)) == sorted(
        f"{BASE}/r/card-{i}" for i in range(4))


def test_no_cjk_font_fails_with_the_package_to_install(db, roster, database_url, monkeypatch, capsys):
    fonts.find_cjk_font.cache_clear()
    monkeypatch.setattr(fonts, "CANDIDATES", ("/nowhere/font.ttc",))
    monkeypatch.setattr(fonts, "_fontconfig_match", lambda: None)
    try:
        assert cli(monkeypatch, database_url, "qr-cards") == 2
        assert "fonts-wqy-microhei" in capsys.readouterr().err
        # A configured font that has no Chinese glyphs is named as the problem.
        latin = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
        assert cli(monkeypatch, database_url, "qr-cards", CARD_FONT=latin) == 2
        assert "CARD_FONT" in capsys.readouterr().err
    finally:
        fonts.find_cjk_font.cache_clear()
