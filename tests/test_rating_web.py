"""The rating page end to end: the production app under uvicorn on loopback, a card printed for it and
read back by a QR decoder, a real headless Chromium (Debian's, driven by Playwright) on a phone-sized
viewport, with and without JavaScript; then every kind of refused submission, over real HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image

from bot import texts
from bot.app import create_app
from bot.cards import card_specs, write_cards
from bot.core import evaluation
from bot.core.engine import Engine
from bot.fonts import find_cjk_font
from storage.db import session_scope
from storage.models import CallbackTask, Problem, ProblemSource, Rating, TargetKind
from tests.standins.server import ServedApp
from tests.utils import rows, token_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# WeChat's in-app browser on an iPhone: the page must work there as in any phone browser.
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
             "Mobile/15E148 MicroMessenger/8.0.50(0x1800323a) NetType/WIFI Language/zh_CN")


@pytest.fixture
def served(db, settings, clock):
    served = ServedApp(None)
    served.bind()
    settings = settings.model_copy(update={"public_base_url": f"http://127.0.0.1:{served.port}",
                                           "rating_rate_limit": 8, "rating_burst_count": 3})
    served.app = create_app(settings, Engine(db, settings, clock=clock), with_worker=False)
    served.settings = settings
    with served:
        yield served


def card_url(db, settings, clock, tmp_path, mobile: str) -> str:
    """Prints the cadre's card as `qr-cards` does and reads the URL back off the PNG."""
    with session_scope(db) as s:
        specs = card_specs(s, settings, clock(), cadre=mobile)
    written = write_cards(specs, tmp_path / "cards", find_cjk_font(None), progress=False)
    [url] = [r.text for r in zxingcpp.read_barcodes(Image.open(written.pngs[0]))]
    return url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `bash scripts/test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_citizen_rates_from_a_phone_and_the_bad_rating_reaches_the_ledger(
        browser, served, db, roster, clock, tmp_path, javascript):
    url = card_url(db, served.settings, clock, tmp_path, "13800000003")
    assert url.startswith(served.url + "/r/")
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, user_agent=WECHAT_UA, locale="zh-CN", java_script_enabled=javascript)
    try:
        context.set_default_timeout(10_000)
        page = context.new_page()
        response = page.goto(url)
        assert response.status == 200
        assert page.locator(".who").inner_text() == "李明"
        assert page.get_by_text(texts.PAGE_BAD_SECTION).is_hidden()  # shown only for 差评, by CSS alone
        page.get_by_label(re.compile(r"(^|\s)不满意$")).check()  # 🙁 不满意, not 😣 非常不满意
        assert page.get_by_text(texts.PAGE_BAD_SECTION).is_visible()
        page.get_by_label("办事拖拉").check()
        page.locator("textarea[name=comment]").fill("材料齐全却让我跑了三趟")
        page.locator("input[name=phone]").fill("139 1234 5678")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"rating-page-{'js' if javascript else 'no-js'}.png"), full_page=True)
        page.get_by_role("button", name=texts.PAGE_SUBMIT).click()
        page.wait_for_load_state()
        body = page.locator("main").inner_text()
        assert texts.PAGE_THANKS_TITLE in body
        assert texts.RATING_FOLLOW_UP_CALL.format(days=served.settings.rating_follow_up_days) in body
        page.screenshot(path=str(ARTIFACTS / f"rating-thanks-{'js' if javascript else 'no-js'}.png"))
    finally:
        context.close()

    [rating] = rows(db, Rating)
    [problem] = rows(db, Problem)
    [task] = rows(db, CallbackTask)
    assert (rating.level, rating.reasons, rating.comment, rating.phone, rating.channel) == (
        2, ["办事拖拉"], "材料齐全却让我跑了三趟", "13912345678", "web")
    assert rating.cadre_id == roster.cadre.id and rating.problem_id == problem.id and not rating.misuse
    assert (problem.source, problem.unit_id, problem.category) == (ProblemSource.RATING, roster.unit.id, "干部作风")
    assert (task.phone, task.problem_id, task.status) == ("13912345678", problem.id, "open")


class Rater:
    """A phone browser without a browser: keeps its cookie, reads the form's CSRF token, posts."""

    def __init__(self, served, token: str, address: str = "198.51.100.7", rotate: bool = False):
        # uvicorn trusts X-Forwarded-For from loopback (as behind a reverse proxy): one address per rater,
        # or a new one for every post (``rotate``) where the rate limit is not what is tested.
        self.client = httpx.Client(base_url=served.url, headers={"X-Forwarded-For": address})
        self.token, self.rotate, self.posts = token, rotate, 0

    def open(self) -> str:
        page = self.client.get(f"/r/{self.token}")
        assert page.status_code == 200
        return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)

    def post(self, **fields) -> httpx.Response:
        self.posts += 1
        headers = {"X-Forwarded-For": f"192.0.2.{self.posts}"} if self.rotate else {}
        return self.client.post(f"/r/{self.token}", data=fields, headers=headers)


def test_a_second_rating_the_same_day_replaces_the_first(served, db, roster):
    rater = Rater(served, token_for(db, served.settings, TargetKind.CADRE, roster.cadre.id))
    assert rater.post(csrf=rater.open(), level="3").status_code == 200
    again = rater.post(csrf=rater.open(), level="5")
    assert again.status_code == 200 and "已替换之前的评价" in again.text
    assert [r.level for r in rows(db, Rating)] == [5]


def test_burst_is_flagged_and_the_rate_limit_refuses_more(served, db, roster, core):
    token = token_for(db, served.settings, TargetKind.CADRE, roster.cadre.id)
    # Three "different people" (fresh cookies) from one address within minutes: kept, flagged as misuse.
    for _ in range(3):
        rater = Rater(served, token, address="203.0.113.50")
        assert rater.post(csrf=rater.open(), level="5").status_code == 200
    assert [r.misuse for r in rows(db, Rating)] == [True, True, True]
    # Out of the statistics by default.
    from tests.utils import bind

    bind(db, roster.supervisor, "test", "boss", core.clock())
    from tests.utils import Chat

    report = Chat(core, "boss").say("/ratings")
    assert "市住建局：0 条" in report and "另有 3 条疑似刷评" in report
    # The address has now posted 3 times; up to the limit of 8 it may go on, then it is refused.
    rater = Rater(served, token, address="203.0.113.50")
    csrf = rater.open()
    for _ in range(5):
        assert rater.post(csrf=csrf, level="4").status_code == 200
    refused = rater.post(csrf=csrf, level="1")
    assert refused.status_code == 429 and texts.PAGE_TOO_MANY in refused.text
    assert len(rows(db, Rating)) == 4 and 1 not in [r.level for r in rows(db, Rating)]


def test_forged_token_csrf_less_and_oversized_submissions_store_nothing(served, db, roster):
    token = token_for(db, served.settings, TargetKind.CADRE, roster.cadre.id)
    rater = Rater(served, token, rotate=True)
    csrf = rater.open()

    forged = evaluation.make_token(b"an attacker's own secret, not ours", 1, 1)
    page = rater.client.get(f"/r/{forged}")
    assert page.status_code == 404 and texts.RATING_CODE_INVALID in page.text
    assert rater.client.post(f"/r/{forged}", data={"csrf": csrf, "level": "1"},
                             headers={"X-Forwarded-For": "192.0.2.202"}).status_code == 403
    assert rater.client.get("/r/not-even-a-token").status_code == 404

    no_csrf = rater.post(level="1")
    assert no_csrf.status_code == 403 and texts.PAGE_EXPIRED in no_csrf.text
    other = Rater(served, token, address="192.0.2.201")
    assert other.post(csrf=csrf, level="1").status_code == 403  # a token made for another cookie
    assert rater.post(csrf="1.deadbeef", level="1").status_code == 403

    long_comment = rater.post(csrf=csrf, level="1", comment="太" * 301)
    assert long_comment.status_code == 400 and "“情况说明”过长" in long_comment.text
    huge = rater.post(csrf=csrf, level="1", comment="x" * 20_000)
    assert huge.status_code == 413 and texts.PAGE_TOO_LARGE in huge.text
    assert rater.post(csrf=csrf, level="1", evil="1").status_code == 400  # a field the form does not have
    assert rater.post(csrf=csrf, level="9").status_code == 400
    assert rater.post(csrf=csrf, level="1", reason="随便写的原因").status_code == 400
    bad_phone = rater.post(csrf=csrf, level="1", phone="12345")
    assert bad_phone.status_code == 400 and texts.RATING_BAD_PHONE in bad_phone.text
    as_json = rater.client.post(f"/r/{token}", json={"csrf": csrf, "level": "1"},
                                headers={"X-Forwarded-For": "192.0.2.200"})
    assert as_json.status_code == 400

    assert rows(db, Rating) == [] and rows(db, Problem) == [] and rows(db, CallbackTask) == []
    assert rater.post(csrf=csrf, level="4").status_code == 200  # the same rater, a proper form: accepted


def test_page_headers_forbid_scripts_and_referrer_leaks(served, db, roster):
    token = token_for(db, served.settings, TargetKind.CADRE, roster.cadre.id)
    page = httpx.get(f"{served.url}/r/{token}")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "httponly" in page.headers["set-cookie"].lower() and "<script" not in page.text


def test_run_without_telegram_serves_the_rating_page_beside_the_console(db, roster, database_url, monkeypatch,
                                                                         capsys):
    import socket

    from bot.cli import main as cli_main
    from bot.config import get_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("HTTP_PORT", str(port))
    monkeypatch.setenv("SCHEDULER_IN_RUN", "false")
    fetched = {}

    def console(core, mobile=None):
        """The console in the foreground: while it runs, the page answers over HTTP."""
        url = re.search(r"评价页（示例：李明）：(\S+)", capsys.readouterr().err).group(1)
        fetched["status"] = httpx.get(url).status_code
        return 0

    monkeypatch.setattr("handlers.console.run_console", console)
    get_settings.cache_clear()
    try:
        assert cli_main(["run"]) == 0
    finally:
        get_settings.cache_clear()
    assert fetched == {"status": 200}
