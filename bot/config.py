"""Settings: read once from the environment and .env, checked before anything starts.

Every setting is named in .env.example with a comment. Secrets are SecretStr; a secret that is
missing where it is needed, or still holds a placeholder, stops the program at start with the
setting's name and how to fix it (``SettingsError``, in the error tree of bot/errors.py).

Every file a setting names is loaded and checked by ``check`` too, before anything starts:
SURVEY_FILE (the survey is parsed), HOLIDAY_FILE (every line read), CARD_FONT (the font opened
and tried on Chinese), and the SQLite file of DATABASE_URL (a file, readable and writable, or its
folder writable; that it is a SQLite database is checked when it is opened, still before anything
runs, by ``bot.cli._engine``). A file that is missing, unreadable or malformed stops the program with the setting's
name, the file, where in it, and the fix (``SettingFileError``), not with a traceback later when
the first cadre starts a visit or the first deadline is counted.
"""

from __future__ import annotations

import os
import re
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.errors import SettingFileError, SettingsError

if TYPE_CHECKING:
    from storage.crypto import Keyring

__all__ = ["Settings", "SettingsError", "SettingFileError", "get_settings", "DEVELOPMENT_EVALUATION_KEY"]

_PLACEHOLDER = re.compile(r"^(|changeme|change-me|xxx+|todo|<.*>|your[-_ ].*|.*placeholder.*)$", re.I)
# Signs evaluation codes when EVALUATION_SECRET is unset outside production: it is public, so cards
# made with it can be forged; fine for trying the bot out, never for printed cards.
DEVELOPMENT_EVALUATION_KEY = b"development-only-evaluation-key-do-not-print-cards"
_TELEGRAM_TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{30,}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite:///./data/bot.db"
    # PostgreSQL: the web process's chat events on the event loop through asyncpg instead of worker
    # threads through psycopg (measured in bench/README.md; deploy/ turns it on).
    database_async_events: bool = False
    timezone: str = "Asia/Shanghai"
    log_level: str = "INFO"

    # Roster and campaign
    load_example_roster: bool = True
    service_object_minimum: int = Field(default=10, ge=0)
    # An import that would deactivate more than this share of a sheet's active rows stops (exit 2)
    # unless run with --allow-deactivate: a workbook with headers and no rows is a mistake, not a purge.
    roster_max_deactivate_share: float = Field(default=0.5, ge=0.0, le=1.0)
    bind_code_ttl_hours: int = Field(default=72, ge=1)
    survey_file: Path | None = None
    household_page_size: int = Field(default=8, ge=3, le=20)

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_bot_username: str | None = None
    telegram_api_base_url: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None

    # WeChat Official Account (公众号). WECHAT_TOKEN set enables the channel; WECHAT_AES_KEY set means
    # safe (AES) mode, else plain mode, as chosen in the account's 服务器配置.
    wechat_token: SecretStr | None = None
    wechat_aes_key: SecretStr | None = None  # EncodingAESKey, 43 characters
    wechat_app_id: str | None = None  # AppID, wx + 16 hex digits
    wechat_app_secret: SecretStr | None = None  # AppSecret: access tokens for the customer-service, template, QR, menu APIs
    wechat_api_base_url: str = "https://api.weixin.qq.com"
    wechat_webhook_path: str = "/wechat"
    wechat_timestamp_tolerance_seconds: int = Field(default=300, ge=10)  # older or newer requests are refused
    wechat_reply_deadline_seconds: float = Field(default=4.0, gt=0, le=4.5)  # then "success", and the reply by API
    wechat_template_ids: dict[str, str] = {}  # message kind -> template id; "default" for the fallback
    # Template field -> what fills it: title (first line), body (the rest), text (all), kind, date.
    wechat_template_fields: dict[str, str] = {"first": "title", "keyword1": "kind", "keyword2": "date",
                                              "remark": "body"}
    wechat_outside_window: Literal["wait", "template", "drop"] = "wait"  # 48 h after the user's last message
    wechat_window_wait_hours: int = Field(default=72, ge=1)  # "wait": then the row is given up (dead)
    wechat_window_recheck_minutes: int = Field(default=30, ge=1)  # "wait": how often the row looks again
    wechat_rate_global: float = Field(default=20.0, gt=0)  # API calls per second, all users
    wechat_qr_limit: int = Field(default=100_000, ge=1, le=100_000)  # permanent QR codes per account

    @field_validator("wechat_token", "wechat_aes_key", "wechat_app_id", "wechat_app_secret", mode="before")
    @classmethod
    def _wechat_empty_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    # Scheduler and outbox (reminders, digests)
    scheduler_in_run: bool = True  # `run` also runs the scheduler and senders; else use `worker`
    quiet_hours_start: time = time(22, 0)
    quiet_hours_end: time = time(8, 0)
    reminder_time: time = time(9, 0)  # local time of the report-deadline reminders
    reminder_days_before: list[int] = [7, 3, 1, 0]
    # Report deadlines per half-year as MM-DD: 附件5 (hotline items), 附件3-4 (service objects),
    # 附件1-2 (households visited and their problems).
    deadline_form5: list[str] = ["06-01", "12-01"]
    deadline_form34: list[str] = ["06-05", "12-05"]
    deadline_form12: list[str] = ["06-10", "12-10"]
    digest_daily_time: time | None = time(18, 0)  # empty: no daily digest
    digest_weekly_day: int | None = Field(default=0, ge=0, le=6)  # 0 = Monday; empty: no weekly digest
    digest_weekly_time: time = time(9, 0)
    supervision_units: list[str] = ["市作风办", "作风办"]  # supervisors there oversee every unit
    misfire_grace_hours: int = Field(default=12, ge=1, le=72)
    prune_after_days: int = Field(default=14, ge=1)  # redelivery guards and cached replies kept this long
    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_retry_base_seconds: float = Field(default=10.0, gt=0)
    outbox_lease_seconds: int = Field(default=300, ge=5)
    outbox_batch: int = Field(default=200, ge=1)
    telegram_rate_global: float = Field(default=30.0, gt=0)  # messages per second, all chats
    telegram_rate_per_chat: float = Field(default=1.0, gt=0)  # messages per second, one chat
    telegram_rate_per_group_minute: int = Field(default=20, ge=1)  # messages per minute, one group

    # Problem ledger (整改台账)
    # Working days to fix an item, by where it came from; overridable per item when it is assigned.
    ledger_deadline_days: dict[str, int] = {"visit": 10, "contact": 10, "service_object": 10, "rating": 5,
                                            "complaint": 5, "hotline": 5}
    ab_handover_hours: int = Field(default=24, ge=1)  # B is asked when A has not acted for this long
    holiday_file: Path | None = None  # holidays and make-up days for years chinesecalendar does not know

    # HTTP server (Telegram webhook now; the rating page and WeChat later)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)

    # Citizen evaluation (评价二维码, 好差评)
    evaluation_secret: SecretStr | None = None  # signs evaluation codes and the rating form's CSRF tokens
    public_base_url: str | None = None  # what the cards' QR codes point at: <this>/r/<token>
    card_encode: Literal["web", "telegram", "wechat"] = "web"  # what a card's QR code encodes
    card_font: Path | None = None  # a CJK .ttf/.ttc/.otf; found on the system when empty
    rating_follow_up_days: int = Field(default=5, ge=1, le=30)  # working days to call a 差评 back
    rating_rate_limit: int = Field(default=20, ge=1)  # rating-page POSTs per address per 10 minutes
    rating_burst_count: int = Field(default=5, ge=2)  # ratings of one target from one address ...
    rating_burst_minutes: int = Field(default=10, ge=1)  # ... within this many minutes are misuse
    appeal_days: int = Field(default=5, ge=1, le=30)  # working days a rated cadre has to appeal a 差评 (申诉)
    service_qr_minutes: int = Field(default=30, ge=1, le=24 * 60)  # a one-time service QR (一事一评) is valid this long
    issuer_name: str = Field(default="", max_length=50)  # 发布单位 on the pages and cards, e.g. 青山县作风办
    supervision_phone: str = Field(default="", max_length=30)  # 监督电话 on the pages and cards, e.g. 12345
    # Days a rater's phone and comment (and a /report citizen's phone) are kept after the follow-up closed.
    rating_contact_retention_days: int = Field(default=180, ge=1)

    # Supervisors' tools: report forms (附件1-5), rankings, spot-checks (电话随机访问)
    ranking_min_ratings: int = Field(default=5, ge=1)  # fewer ratings in the half-year: not ranked by satisfaction
    spot_check_share: float = Field(default=0.1, gt=0, le=1)  # share of each cadre's visits drawn for a call

    # Evidence of visits (bot/core/evidence.py)
    visit_radius_meters: float = Field(default=300, gt=0)  # a location this close to the household matches
    max_travel_kmh: float = Field(default=60, gt=0)  # two visits in a row faster than this apart: flagged
    visit_far_km: float = Field(default=10, gt=0)  # a location this far from the household: flagged
    visit_burst_count: int = Field(default=4, ge=2)  # this many visits confirmed within ...
    visit_burst_minutes: int = Field(default=10, ge=1)  # ... these minutes: flagged
    visit_same_answers_minimum: int = Field(default=5, ge=2)  # identical surveys in all of this many visits: flagged
    media_dir: Path = Path("./data/media")  # visit photos, named by their content's hash
    # The datum of the roster's 经度/纬度 where its 坐标系 column is blank (or missing): wgs84 (GPS,
    # 天地图/CGCS2000), gcj02 (高德, 腾讯 and WeChat maps), bd09 (百度). Empty: every row must say.
    roster_coord_datum: Literal["", "wgs84", "gcj02", "bd09"] = ""
    report_contact_phone: str = "3222889"  # the work-style office's number in the forms' notes

    # Hardening: wrong binding codes (绑定码) in a row, per chat account and per client address
    bind_max_failures: int = Field(default=20, ge=1)  # wrong codes in a row before a lockout
    bind_failure_window_minutes: int = Field(default=60, ge=1)  # ... counted within this window
    bind_lockout_minutes: int = Field(default=60, ge=1)  # how long every code is then refused

    # Retention (保存期限): what the daily prune job (and `python -m bot prune`) removes
    retain_citizen_state_days: int = Field(default=30, ge=1)  # dialogue state of accounts bound to no cadre, idle
    retain_sent_outbox_days: int = Field(default=30, ge=1)  # sent outbox rows and their attachments (charts)
    retain_dead_outbox_days: int = Field(default=180, ge=1)  # outbox rows given up (dead, unreachable)

    # The 作风办 web console (/console): password-less login through the bound chat account
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)  # a session idle this long is ended
    console_login_minutes: int = Field(default=5, ge=1, le=30)  # a login link or page code is valid this long
    console_wrong_code_limit: int = Field(default=5, ge=1)  # wrong codes per account, and per address, ...
    console_wrong_code_minutes: int = Field(default=15, ge=1)  # ... within this many minutes
    console_page_size: int = Field(default=50, ge=10, le=500)  # rows per page of the console's tables

    # Data at rest (数据加密): citizens' phone numbers are stored encrypted (storage/crypto.py)
    data_key: SecretStr | None = None  # a random string of at least 32 characters; required in production
    data_key_old: SecretStr | None = None  # during a rotation: the previous key(s), comma-separated, still read
    data_cipher: Literal["aes-256-gcm", "sm4-gcm"] = "aes-256-gcm"  # sm4-gcm: the national algorithm (SM4)

    # Production runtime: several processes, a reverse proxy, logs and health
    redis_url: str | None = None  # limits shared by all processes; else PostgreSQL's, else this process's
    forwarded_allow_ips: str = ""  # proxies whose X-Forwarded-For / -Proto are believed; empty: none
    log_format: Literal["text", "json"] = "text"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # `worker`: serve /metrics on this port (HTTP_HOST)
    # Direct replies take a place in the bot's budget shared with the outbox senders of every process
    # (Telegram's 30/s overall, 1/s per chat), replies first. Off only to measure the bot's own cost.
    telegram_reply_budget: bool = True
    channel_retry_max_seconds: float = Field(default=60.0, ge=1)  # a channel that cannot reach its API retries this often at most

    @field_validator("telegram_bot_token", "telegram_webhook_secret", "evaluation_secret", "data_key", "data_key_old",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("digest_daily_time", "digest_weekly_day", mode="before")
    @classmethod
    def _empty_is_off(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("deadline_form5", "deadline_form34", "deadline_form12")
    @classmethod
    def _month_days(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", item):
                raise ValueError(f"“{item}” 不是 MM-DD 格式的日期，例如 06-10")
        return value

    @field_validator("telegram_webhook_url", "telegram_bot_username", "survey_file", "public_base_url",
                     "card_font", "holiday_file", "redis_url", "metrics_port", mode="before")
    @classmethod
    def _empty_str_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL with the psycopg 3 driver filled in for bare postgresql:// URLs."""
        url = self.database_url
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def telegram_enabled(self) -> bool:
        return self.telegram_bot_token is not None

    @property
    def wechat_enabled(self) -> bool:
        return self.wechat_token is not None

    @property
    def evaluation_key(self) -> bytes:
        """The key that signs evaluation codes; outside production an unset secret falls back to a
        public development key (``check`` warns of it; production refuses to start without one)."""
        if self.evaluation_secret is not None:
            return self.evaluation_secret.get_secret_value().encode()
        return DEVELOPMENT_EVALUATION_KEY

    @property
    def data_keyring(self) -> "Keyring":
        """The keys of the phone numbers at rest; outside production an unset DATA_KEY falls back to the
        public development key (``check`` refuses that in production; ``run`` and ``serve`` warn)."""
        from storage.crypto import DEVELOPMENT_DATA_KEY, Keyring

        key = self.data_key.get_secret_value().strip() if self.data_key is not None else DEVELOPMENT_DATA_KEY
        return Keyring(key, self.data_keys_old, self.data_cipher)

    @property
    def data_keys_old(self) -> list[str]:
        raw = self.data_key_old.get_secret_value() if self.data_key_old is not None else ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    @property
    def public_url(self) -> str:
        """PUBLIC_BASE_URL without its trailing slash, or this server's own address."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"

    def check(self) -> "Settings":
        """Fails with the setting's name and the fix when a needed secret is absent or a placeholder."""
        try:
            ZoneInfo(self.timezone)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError
            raise SettingsError(f"TIMEZONE={self.timezone!r} 不是有效的时区名，例如 Asia/Shanghai。") from exc
        if self.telegram_bot_token is not None:
            token = self.telegram_bot_token.get_secret_value().strip()
            if _PLACEHOLDER.match(token) or not _TELEGRAM_TOKEN.match(token):
                raise SettingsError(
                    "TELEGRAM_BOT_TOKEN 仍是占位值或格式不对：请填入 @BotFather 给出的令牌"
                    "（形如 123456789:AA...），或删去这一行以使用本地控制台渠道。"
                )
        if self.telegram_webhook_url:
            if not self.telegram_enabled:
                raise SettingsError("TELEGRAM_WEBHOOK_URL 已设置，但缺少 TELEGRAM_BOT_TOKEN。")
            secret = self.telegram_webhook_secret.get_secret_value() if self.telegram_webhook_secret else ""
            if _PLACEHOLDER.match(secret.strip()) or not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", secret):
                raise SettingsError(
                    "TELEGRAM_WEBHOOK_SECRET 缺失或仍是占位值：Webhook 模式需要 16–256 位的随机串"
                    "（A-Z a-z 0-9 _ -），例如用 `python -c \"import secrets;print(secrets.token_urlsafe(32))\"` 生成。"
                )
        if self.evaluation_secret is not None:
            secret = self.evaluation_secret.get_secret_value().strip()
            if self.environment == "production" and secret.encode() == DEVELOPMENT_EVALUATION_KEY:
                raise SettingsError(
                    "EVALUATION_SECRET 是公开的开发密钥：生产环境必须换成自己的随机串（至少 16 位），例如用 "
                    "`python -c \"import secrets;print(secrets.token_urlsafe(32))\"` 生成；用开发密钥签名的评价卡谁都能伪造。")
            if _PLACEHOLDER.match(secret) or len(secret) < 16:
                raise SettingsError(
                    "EVALUATION_SECRET 仍是占位值或太短：请填入至少 16 位的随机串，例如用 "
                    "`python -c \"import secrets;print(secrets.token_urlsafe(32))\"` 生成。"
                    "更换后已印制的评价卡全部失效。")
        elif self.environment == "production":
            raise SettingsError(
                "EVALUATION_SECRET 缺失：生产环境必须设置评价码签名密钥（至少 16 位随机串），例如用 "
                "`python -c \"import secrets;print(secrets.token_urlsafe(32))\"` 生成。")
        self._check_data_key()
        if self.public_base_url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.public_base_url):
            raise SettingsError(f"PUBLIC_BASE_URL={self.public_base_url!r} 不是网址，例如 https://pingjia.example.gov.cn")
        self._check_wechat()
        self.check_files()
        self._check_wecom()
        self._check_runtime()
        return self

    def _check_data_key(self) -> None:
        """DATA_KEY: long enough, not a placeholder, not the public development key in production; the
        old keys likewise; SM4 only where OpenSSL has it."""
        from storage.crypto import DEVELOPMENT_DATA_KEY, MIN_KEY_LENGTH, DataKeyError

        how = ("例如用 `python -c \"import secrets;print(secrets.token_urlsafe(32))\"` 生成，写入 .env 的 DATA_KEY=，"
               "并与数据库备份分开妥善保管：丢失后加密的电话号码无法恢复")
        if self.data_key is None:
            if self.environment == "production":
                raise SettingsError(f"DATA_KEY 缺失：生产环境必须设置电话号码的加密密钥（至少 {MIN_KEY_LENGTH} 位随机串），{how}。"
                                    "此前未设置时用开发密钥加密的号码：把开发密钥（storage/crypto.py 的 "
                                    "DEVELOPMENT_DATA_KEY）写入 DATA_KEY_OLD 后运行 python -m bot rotate-key。")
        else:
            key = self.data_key.get_secret_value().strip()
            if key == DEVELOPMENT_DATA_KEY:
                if self.environment == "production":
                    raise SettingsError(f"DATA_KEY 是公开的开发密钥：生产环境必须换成自己的随机串，{how}；"
                                        "此前用开发密钥加密的号码：把开发密钥（storage/crypto.py 的 DEVELOPMENT_DATA_KEY）"
                                        "写入 DATA_KEY_OLD 后运行 python -m bot rotate-key。")
            elif _PLACEHOLDER.match(key) or len(key) < MIN_KEY_LENGTH:
                raise SettingsError(f"DATA_KEY 仍是占位值或太短：请填入至少 {MIN_KEY_LENGTH} 位的随机串，{how}。")
        for old in self.data_keys_old:
            if len(old) < MIN_KEY_LENGTH and old != DEVELOPMENT_DATA_KEY:
                raise SettingsError(f"DATA_KEY_OLD 中有一项太短（少于 {MIN_KEY_LENGTH} 位）：请填更换前的 DATA_KEY 原值，"
                                    "多个用逗号分隔；轮换完成（python -m bot rotate-key）后删去这一行。")
        try:
            self.data_keyring
        except DataKeyError as exc:
            raise SettingsError(str(exc)) from exc

    def check_files(self) -> None:
        """Loads every file a setting names and fails with the setting, the file and the fix."""
        if self.survey_file is not None:
            from bot.core.survey import SurveyFileError, load_survey

            fix = "请改正该文件（格式同内置问卷 bot/data/survey.toml），或删除该设置以使用内置问卷。"
            path = _readable_file("SURVEY_FILE", self.survey_file,
                                  "请改为问卷文件（.toml）的路径（可复制内置的 bot/data/survey.toml 修改），"
                                  "或删除该设置以使用内置问卷。")
            try:
                load_survey(path)
            except SurveyFileError as exc:
                raise SettingFileError(f"设置 SURVEY_FILE：文件 {path} 有误：{_without_path(exc, path)}。{fix}") from exc
            except UnicodeDecodeError as exc:
                raise SettingFileError(f"设置 SURVEY_FILE：文件 {path} 不是 UTF-8 编码的文本。{fix}") from exc
        if self.holiday_file is not None:
            from bot.core.workdays import HolidayFileError, read_holiday_file

            fix = ("请每行写一个日期，“2027-01-01 休”（节假日）或“2027-02-06 班”（调休上班），# 起注释；"
                   "或删除该设置，只按 chinesecalendar 和周末计算工作日。")
            path = _readable_file("HOLIDAY_FILE", self.holiday_file, "请改为节假日文件的路径，" + fix[1:])
            try:
                read_holiday_file(path)
            except HolidayFileError as exc:
                raise SettingFileError(f"设置 HOLIDAY_FILE：文件 {path} 有误：{_without_path(exc, path)}。{fix}") from exc
            except UnicodeDecodeError as exc:
                raise SettingFileError(f"设置 HOLIDAY_FILE：文件 {path} 不是 UTF-8 编码的文本。{fix}") from exc
        if self.card_font is not None:
            from bot.fonts import CANDIDATES, covers_cjk

            fix = (f"请改为含中文字形的 .ttf/.ttc/.otf 字体文件的路径，例如 {CANDIDATES[0]}"
                   "（Debian 软件包 fonts-wqy-microhei），或删除该设置以自动查找系统中文字体。")
            path = _readable_file("CARD_FONT", self.card_font, fix)
            if not covers_cjk(path):
                raise SettingFileError(f"设置 CARD_FONT：文件 {path} 不是可读取的字体，或不含中文字形。{fix}")
        self._check_sqlite_file()

    def _check_sqlite_file(self) -> None:
        """DATABASE_URL's SQLite file: its folder can be created and written, the file is a database."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.sqlalchemy_url)
        except ArgumentError as exc:
            raise SettingsError(f"设置 DATABASE_URL：“{self.database_url}”不是数据库地址。请改为例如 "
                                "sqlite:///./data/bot.db 或 postgresql://用户@主机:5432/库名。") from exc
        from storage.db import ASYNC_URL_PARAMETERS

        refused = set(url.query) - ASYNC_URL_PARAMETERS
        if self.database_async_events and url.get_backend_name() == "postgresql" and refused:
            raise SettingsError(f"设置 DATABASE_ASYNC_EVENTS：asyncpg 不接受 DATABASE_URL 中的参数 "
                                f"{'、'.join(sorted(refused))}（只接受 host=Unix 套接字目录）。"
                                "请去掉这些参数，或关闭 DATABASE_ASYNC_EVENTS。")
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return
        path = Path(url.database).expanduser()
        fix = "请改为可写目录下的文件，例如 sqlite:///./data/bot.db，或改用 PostgreSQL（postgresql://…）。"
        if path.exists():
            # Whether it is a SQLite database at all is left to SQLite (bot.cli._engine says so):
            # opening and closing the file here would drop every POSIX lock this process holds on
            # it, which corrupts a database that is open in the same process.
            if not path.is_file():
                raise SettingFileError(f"设置 DATABASE_URL：{path} 不是文件（是目录？）。{fix}")
            if not os.access(path, os.R_OK | os.W_OK):
                raise SettingFileError(f"设置 DATABASE_URL：文件 {path} 没有读写权限。{fix}")
            return
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise SettingFileError(f"设置 DATABASE_URL：无法在 {folder} 下创建数据库文件 {path}（不是目录或没有写权限）。{fix}")

    def _check_runtime(self) -> None:
        """REDIS_URL and FORWARDED_ALLOW_IPS are well formed."""
        if self.redis_url and not re.fullmatch(r"rediss?://\S+|unix://\S+", self.redis_url):
            raise SettingsError(f"REDIS_URL={self.redis_url!r} 不是 Redis 地址，例如 redis://127.0.0.1:6379/0；"
                                "不用 Redis 时删去这一行（PostgreSQL 上由数据库共享限流）。")
        import ipaddress

        for item in self.forwarded_allow_ips.split(","):
            item = item.strip()
            if not item or item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise SettingsError(
                    f"FORWARDED_ALLOW_IPS 中的 {item!r} 不是 IP 地址或网段：请写反向代理的地址，"
                    "例如 127.0.0.1 或 10.0.0.0/8，多个用逗号分隔；不经代理时留空。") from None

    def _check_wechat(self) -> None:
        """The WeChat settings hang together: all three credentials, none a placeholder, each well formed."""
        given = [name for name in ("wechat_token", "wechat_aes_key", "wechat_app_id", "wechat_app_secret")
                 if getattr(self, name) is not None]
        if not given:
            return

        def value(name: str) -> str:
            raw = getattr(self, name)
            text = raw.get_secret_value() if isinstance(raw, SecretStr) else (raw or "")
            return text.strip()

        rules = {
            "wechat_token": (r"[A-Za-z0-9]{3,32}", "公众号“服务器配置”中的令牌 Token（3–32 位字母或数字）"),
            "wechat_app_id": (r"wx[0-9a-f]{16}", "公众号“基本配置”中的开发者ID AppID（wx 加 16 位十六进制）"),
            "wechat_app_secret": (r"[0-9a-f]{32}", "公众号“基本配置”中的开发者密码 AppSecret（32 位十六进制）"),
        }
        for name, (pattern, fix) in rules.items():
            text = value(name)
            if _PLACEHOLDER.match(text) or not re.fullmatch(pattern, text):
                raise SettingsError(f"{name.upper()} 缺失、仍是占位值或格式不对：请填入{fix}；"
                                    "不用微信时删去全部 WECHAT_TOKEN / WECHAT_AES_KEY / WECHAT_APP_ID / WECHAT_APP_SECRET。")
        if self.wechat_aes_key is not None:
            key = value("wechat_aes_key")
            if _PLACEHOLDER.match(key) or not re.fullmatch(r"[A-Za-z0-9]{43}", key):
                raise SettingsError("WECHAT_AES_KEY 仍是占位值或格式不对：请填入“服务器配置”中的消息加解密密钥 "
                                    "EncodingAESKey（43 位字母或数字）；明文模式下留空。")
        if not re.fullmatch(r"/[A-Za-z0-9/_-]*", self.wechat_webhook_path):
            raise SettingsError(f"WECHAT_WEBHOOK_PATH={self.wechat_webhook_path!r} 应是以 / 开头的路径，例如 /wechat")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.wechat_api_base_url):
            raise SettingsError(f"WECHAT_API_BASE_URL={self.wechat_api_base_url!r} 不是网址，例如 https://api.weixin.qq.com")
        if self.wechat_outside_window == "template" and "default" not in self.wechat_template_ids:
            raise SettingsError("WECHAT_OUTSIDE_WINDOW=template 需要在 WECHAT_TEMPLATE_IDS 中配置 \"default\" 模板，"
                                "例如 {\"default\": \"模板ID\"}。")
        parts = {"title", "body", "text", "kind", "date"}
        wrong = sorted(set(self.wechat_template_fields.values()) - parts)
        if wrong:
            raise SettingsError(f"WECHAT_TEMPLATE_FIELDS 的取值只能是 {', '.join(sorted(parts))}，而不是 {', '.join(wrong)}。")

    # -- WeCom / 政务微信 (企业微信自建应用) ----------------------------------------------------------
    # WECOM_TOKEN set enables the channel; then the corp id, agent id, secret and EncodingAESKey are
    # needed too (WeCom callbacks are always encrypted, with the corp id inside as the receive id).
    wecom_corp_id: str | None = None  # 企业ID (CorpID)
    wecom_agent_id: int | None = None  # the app's AgentId
    wecom_secret: SecretStr | None = None  # the app's Secret: access tokens for message/send and the directory
    wecom_token: SecretStr | None = None  # 接收消息 Token
    wecom_aes_key: SecretStr | None = None  # 接收消息 EncodingAESKey, 43 characters
    wecom_api_base_url: str = "https://qyapi.weixin.qq.com"  # 政务微信's own host, or an egress proxy
    wecom_webhook_path: str = "/wecom"
    wecom_timestamp_tolerance_seconds: int = Field(default=300, ge=10)
    wecom_reply_deadline_seconds: float = Field(default=4.0, gt=0, le=4.5)  # WeCom waits 5 s
    wecom_rate_global: float = Field(default=20.0, gt=0)  # API calls per second, all members
    wecom_member_per_minute: int = Field(default=30, ge=1, le=30)  # WeCom drops the excess silently
    wecom_member_per_hour: int = Field(default=1000, ge=1, le=1000)
    wecom_daily_quota: int = Field(default=20_000, ge=1)  # the app's member-messages a day (成员数 × 200)
    # The length of WeCom's per-member "minute" in seconds: 60. Shorter only for tests against a
    # stand-in that keeps the same window (a wave then need not wait whole minutes); refused in production.
    wecom_member_minute_seconds: int = Field(default=60, ge=1, le=60)
    # Web login into the console (企业微信网页登录 / OAuth2): the QR login page's host and the OAuth2
    # authorize host; 政务微信's private deployments have their own.
    wecom_login_base_url: str = "https://login.work.weixin.qq.com"
    wecom_oauth_base_url: str = "https://open.weixin.qq.com"

    @field_validator("wecom_corp_id", "wecom_agent_id", "wecom_secret", "wecom_token", "wecom_aes_key",
                     mode="before")
    @classmethod
    def _wecom_empty_is_none(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def wecom_enabled(self) -> bool:
        return self.wecom_token is not None

    @property
    def wecom_duplicate_check_seconds(self) -> int:
        """The interval of WeCom's duplicate check: covers the outbox lease twice over (a row whose
        sender died is sent again after the lease), within WeCom's 4 hours."""
        return min(4 * 3600, max(1800, 2 * self.outbox_lease_seconds))

    def _check_wecom(self) -> None:
        """The WeCom settings hang together: all five given, none a placeholder, each well formed."""
        names = ("wecom_token", "wecom_aes_key", "wecom_corp_id", "wecom_agent_id", "wecom_secret")
        if all(getattr(self, name) is None for name in names):
            return

        def value(name: str) -> str:
            raw = getattr(self, name)
            text = raw.get_secret_value() if isinstance(raw, SecretStr) else ("" if raw is None else str(raw))
            return text.strip()

        rules = {
            "wecom_token": (r"[A-Za-z0-9]{3,32}", "应用“接收消息”设置中的 Token（3–32 位字母或数字）"),
            "wecom_aes_key": (r"[A-Za-z0-9]{43}", "应用“接收消息”设置中的 EncodingAESKey（43 位字母或数字）"),
            "wecom_corp_id": (r"[A-Za-z0-9_-]{6,40}", "“我的企业”页的企业ID（CorpID，如 ww 开头的 18 位）"),
            "wecom_agent_id": (r"\d{1,10}", "自建应用详情页的 AgentId（数字）"),
            "wecom_secret": (r"[A-Za-z0-9_-]{20,64}", "自建应用详情页的 Secret"),
        }
        for name, (pattern, fix) in rules.items():
            text = value(name)
            if _PLACEHOLDER.match(text) or not re.fullmatch(pattern, text):
                raise SettingsError(f"{name.upper()} 缺失、仍是占位值或格式不对：请填入{fix}；不用企业微信时删去全部 "
                                    "WECOM_TOKEN / WECOM_AES_KEY / WECOM_CORP_ID / WECOM_AGENT_ID / WECOM_SECRET。")
        if not re.fullmatch(r"/[A-Za-z0-9/_-]*", self.wecom_webhook_path):
            raise SettingsError(f"WECOM_WEBHOOK_PATH={self.wecom_webhook_path!r} 应是以 / 开头的路径，例如 /wecom")
        if self.wechat_enabled and self.wecom_webhook_path == self.wechat_webhook_path:
            raise SettingsError(f"WECOM_WEBHOOK_PATH 与 WECHAT_WEBHOOK_PATH 相同（{self.wecom_webhook_path}）：请改用 /wecom")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.wecom_api_base_url):
            raise SettingsError(f"WECOM_API_BASE_URL={self.wecom_api_base_url!r} 不是网址，例如 https://qyapi.weixin.qq.com"
                                "（政务微信填其私有部署的接口地址）")
        for name, example in (("wecom_login_base_url", "https://login.work.weixin.qq.com"),
                              ("wecom_oauth_base_url", "https://open.weixin.qq.com")):
            if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", getattr(self, name)):
                raise SettingsError(f"{name.upper()}={getattr(self, name)!r} 不是网址，例如 {example}"
                                    "（政务微信填其私有部署的登录地址）")
        if self.environment == "production" and self.wecom_member_minute_seconds != 60:
            raise SettingsError(f"WECOM_MEMBER_MINUTE_SECONDS={self.wecom_member_minute_seconds} 只用于测试：企业微信按 60 秒"
                                "计每成员每分钟的条数，生产环境请删去这一设置。")


def _readable_file(name: str, configured: Path, fix: str) -> Path:
    """The path a file setting names, once it is known to be a readable file; else the error says so."""
    path = Path(configured).expanduser()
    if not path.exists():
        raise SettingFileError(f"设置 {name}：文件 {path} 不存在。{fix}")
    if not path.is_file():
        raise SettingFileError(f"设置 {name}：{path} 不是文件（是目录？）。{fix}")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SettingFileError(f"设置 {name}：文件 {path} 无法读取（{exc.strerror}）。{fix}") from exc
    return path


def _without_path(exc: Exception, path: Path) -> str:
    """The loader's message without the path it starts with (the setting's message names it already)."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path}:", f"{path} "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The one settings object of this process; tests clear the cache after changing the environment."""
    return Settings()
