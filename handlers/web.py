"""The rating web page: PUBLIC_BASE_URL/r/<token>, the channel a phone camera or WeChat's scanner opens.

A plain HTML form (no JavaScript, no login) rendered from bot/templates/rating; the rating itself is
stored by bot.core.evaluation, exactly as from Telegram. What this channel adds is what the open
web needs:

- the rater is a random cookie (``zf_rater``), stored only as a keyed hash by the core;
- the form carries a CSRF token signed with EVALUATION_SECRET and bound to that cookie, the card's
  token and its issue time (valid for two hours);
- the body is bounded (8 KB) and every field is length-checked before anything else is done;
- each client address may POST at most RATING_RATE_LIMIT times in ten minutes, counted by all
  processes together (``address_limit``); the address is the proxy's word only for proxies in
  FORWARDED_ALLOW_IPS.

A refused submission gets a page in Chinese saying why, and stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

import bot
from bot import texts
from bot.core import evaluation, service_qr
from bot.core.dialogue import InputError
from bot.core.engine import Engine
from bot.errors import RequestRefused

log = logging.getLogger(__name__)

CHANNEL = "web"
COOKIE = "zf_rater"
COOKIE_MAX_AGE = 400 * 24 * 3600
CSRF_TTL_SECONDS = 2 * 3600
MAX_BODY = 8 * 1024
RATE_WINDOW_SECONDS = 600
# Field -> (most characters, label shown when it is exceeded). Unknown fields are refused.
FIELDS = {
    "csrf": (100, "csrf"),
    "level": (2, "评价等级"),
    "reason": (20, "原因"),
    "comment": (evaluation.COMMENT_LIMIT, "情况说明"),
    "phone": (20, "联系电话"),
}
TEMPLATES = Path(bot.__file__).resolve().parent / "templates"
HEADERS = {
    # No script at all; the token in the address must not leak through Referer.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Refused(RequestRefused):
    """A submission that is turned away with a page; nothing was stored."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


class RateLimiter:
    """At most ``limit`` events per key in a sliding window (per process: the in-memory first line;
    the core's one-per-day rule and burst flag hold across processes)."""

    def __init__(self, limit: int, window: float = RATE_WINDOW_SECONDS, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 100_000:  # forget idle addresses rather than grow without bound
                for stale in [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]:
                    del self._events[stale]
            return True


def address_limit(settings, db, name: str, limit: int, window: float = RATE_WINDOW_SECONDS):
    """``async allow(address) -> bool``: at most ``limit`` requests per address in ``window``
    seconds, counted by every process together (scheduler.budget: Redis or PostgreSQL), or by this
    process alone on SQLite (``RateLimiter``)."""
    from scheduler.budget import budget_store

    store = budget_store(settings, db)
    if store.kind == "memory":
        local = RateLimiter(limit, window)

        async def allow(address: str) -> bool:
            return local.allow(address)
        return allow

    async def allow_shared(address: str) -> bool:
        try:
            return await run_in_threadpool(store.hit, f"{name}:{address}", limit, window)
        except Exception as exc:  # the shared store is down: the page keeps serving (the core's burst rule still holds)
            log.warning("共享限流不可用（%s）：本次请求未计数：%s", store.kind, " ".join(str(exc).split())[:200])
            return True
    return allow_shared


def csrf_token(key: bytes, cookie: str, token: str, issued: int) -> str:
    mac = hmac.new(key, f"csrf:{cookie}:{token}:{issued}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{issued}.{mac}"


def csrf_valid(key: bytes, cookie: str | None, token: str, given: str, now: float) -> bool:
    if not cookie or "." not in given:
        return False
    issued, _, _mac = given.partition(".")
    if not issued.isdigit() or not 0 <= now - int(issued) <= CSRF_TTL_SECONDS:
        return False
    return hmac.compare_digest(given, csrf_token(key, cookie, token, int(issued)))


def _cookie_ok(value: str | None) -> bool:
    return bool(value) and len(value) == 32 and value.replace("-", "").replace("_", "").isalnum()


def rating_routes(core: Engine) -> list[Route]:
    """The page's routes, served by the same ASGI app as the Telegram webhook."""
    settings, db = core.settings, core.db
    key = settings.evaluation_key
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    allow = address_limit(settings, db, "rating", settings.rating_rate_limit)

    def page(name: str, status: int = 200, cookie: str | None = None, **context) -> Response:
        html = env.get_template(f"rating/{name}.html").render(
            texts=texts, issuer=settings.issuer_name, supervision_phone=settings.supervision_phone, **context)
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        if cookie is not None:
            response.set_cookie(COOKIE, cookie, max_age=COOKIE_MAX_AGE, httponly=True, samesite="lax",
                                secure=settings.public_url.startswith("https://"))
        return response

    def message(status: int, title: str, *lines: str, again: str | None = None) -> Response:
        return page("message", status, title=title, lines=lines, again=again)

    def resolve(session, token: str) -> evaluation.Target | None:
        """The target of a card's token, or of a one-time service token that can still be rated."""
        if service_qr.looks_like_token(token):
            found = service_qr.resolve(session, settings, token, core.clock())
            return found.target if found is not None and found.state == service_qr.OK else None
        return evaluation.resolve(session, key, token)

    async def service_refusal(token: str) -> Response | None:
        """The page for a one-time service token that was used or has expired (None: fine, or a card)."""
        if not service_qr.looks_like_token(token):
            return None
        found = await core.run(service_qr.resolve, settings, token, core.clock())
        if found is None or found.state == service_qr.OK:
            return None
        if found.state == service_qr.USED:
            return message(409, texts.PAGE_SERVICE_USED_TITLE, texts.PAGE_SERVICE_USED)
        return message(410, texts.PAGE_SERVICE_EXPIRED_TITLE, texts.PAGE_SERVICE_EXPIRED)

    def is_token(token: str) -> bool:
        return evaluation.looks_like_token(token) or service_qr.looks_like_token(token)

    def form(request: Request, token: str, target, cookie: str, *, status: int = 200, error: str | None = None,
             values: dict | None = None, new_cookie: bool = False) -> Response:
        return page("form", status, cookie=cookie if new_cookie else None, title=texts.PAGE_TITLE, target=target,
                    action=f"/r/{token}", csrf=csrf_token(key, cookie, token, int(time.time())),
                    levels=evaluation.LEVELS, comment_limit=evaluation.COMMENT_LIMIT, error=error,
                    values=values or {"level": "", "reasons": [], "comment": "", "phone": ""})

    async def show(request: Request) -> Response:
        """Shows whom the code rates and the five levels."""
        token = request.path_params["token"]
        refusal = await service_refusal(token) if is_token(token) else None
        if refusal is not None:
            return refusal
        target = await core.run(resolve, token) if is_token(token) else None
        if target is None:
            return message(404, texts.PAGE_NOT_FOUND_TITLE, texts.RATING_CODE_INVALID)
        cookie = request.cookies.get(COOKIE)
        fresh = not _cookie_ok(cookie)
        if fresh:
            cookie = secrets.token_urlsafe(24)
        return form(request, token, target, cookie, new_cookie=fresh)

    async def read_form(request: Request) -> dict[str, list[str]]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise Refused(400, texts.PAGE_ERROR_TITLE, texts.PAGE_BAD_FORM)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            raise Refused(413, texts.PAGE_TOO_LARGE_TITLE, texts.PAGE_TOO_LARGE)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Refused(413, texts.PAGE_TOO_LARGE_TITLE, texts.PAGE_TOO_LARGE)
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=len(texts.RATING_REASONS) + len(FIELDS))
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, texts.PAGE_ERROR_TITLE, texts.PAGE_BAD_FORM) from None
        for name, items in fields.items():
            if name not in FIELDS or (name != "reason" and len(items) > 1):
                raise Refused(400, texts.PAGE_ERROR_TITLE, texts.PAGE_BAD_FORM)
        return fields

    async def submit(request: Request) -> Response:
        """Checks and stores one rating, then thanks the rater and says what happens next."""
        token = request.path_params["token"]
        # The socket's address, or the client's as a proxy in FORWARDED_ALLOW_IPS said (uvicorn's
        # proxy headers, set up by bot.cli.uvicorn_options): a forged X-Forwarded-For changes nothing.
        address = request.client.host if request.client else "unknown"
        if not await allow(address):
            return message(429, texts.PAGE_TOO_MANY_TITLE, texts.PAGE_TOO_MANY)
        try:
            fields = await read_form(request)
        except Refused as refused:
            return message(refused.status, refused.title, refused.message, again=f"/r/{token}")
        one = {name: (items[0] if items else "") for name, items in fields.items()}
        values = {"level": one.get("level", ""), "reasons": fields.get("reason", []),
                  "comment": one.get("comment", ""), "phone": one.get("phone", "")}
        cookie = request.cookies.get(COOKIE)
        if not csrf_valid(key, cookie, token, one.get("csrf", ""), time.time()):
            return message(403, texts.PAGE_EXPIRED_TITLE, texts.PAGE_EXPIRED, again=f"/r/{token}")
        refusal = await service_refusal(token)
        if refusal is not None:
            return refusal
        target = await core.run(resolve, token)
        if target is None:
            return message(404, texts.PAGE_NOT_FOUND_TITLE, texts.RATING_CODE_INVALID)
        for name, items in fields.items():
            limit, label = FIELDS[name]
            if any(len(item) > limit for item in items):
                return form(request, token, target, cookie, status=400, values=values,
                            error=texts.PAGE_FIELD_TOO_LONG.format(field=label, limit=limit))
        try:
            given = evaluation.check_input(values["level"], values["reasons"], values["comment"], values["phone"])
        except InputError as exc:
            return form(request, token, target, cookie, status=400, values=values, error=str(exc))

        def store(session) -> str | None:
            if service_qr.looks_like_token(token):  # 一事一评: one rating for this service, under its lock
                state, submitted = service_qr.submit(session, settings, token, given, channel=CHANNEL,
                                                     now=core.clock(), address=address)
                return evaluation.thanks_text(given, submitted, settings) if submitted else state
            current = evaluation.resolve(session, key, token)  # revoked since the form was shown?
            if current is None:
                return None
            submitted = evaluation.submit_rating(session, settings, current, given, channel=CHANNEL,
                                                 rater=cookie, address=address, now=core.clock())
            return evaluation.thanks_text(given, submitted, settings)

        thanks = await core.run(store)  # the core's session and thread: the page opens none
        if thanks == service_qr.USED:  # rated by someone else since the form was shown
            return message(409, texts.PAGE_SERVICE_USED_TITLE, texts.PAGE_SERVICE_USED)
        if thanks == service_qr.EXPIRED:
            return message(410, texts.PAGE_SERVICE_EXPIRED_TITLE, texts.PAGE_SERVICE_EXPIRED)
        if thanks is None or thanks == "invalid":
            return message(404, texts.PAGE_NOT_FOUND_TITLE, texts.RATING_CODE_INVALID)
        return message(200, texts.PAGE_THANKS_TITLE, *thanks.splitlines())

    async def privacy(request: Request) -> Response:
        """个人信息说明: what is kept, for how long, who sees it."""
        return page("message", 200, title=texts.PAGE_PRIVACY_TITLE,
                    lines=[line.format(days=settings.rating_contact_retention_days)
                           for line in texts.PAGE_PRIVACY_LINES], again=None)

    async def status(request: Request) -> Response:
        """Where the follow-up of the rating with this 评价编号 stands; nothing about anyone else."""
        number = request.path_params["number"][:40]

        found = await core.run(evaluation.follow_up, number, read_only=True)
        return page("message", 200 if found else 404, title=texts.PAGE_STATUS_TITLE,
                    lines=evaluation.follow_up_lines(found), again=None)

    # /r/privacy before /r/{token}: a path of one segment would otherwise be taken for a token.
    return [Route("/r/privacy", privacy, methods=["GET"]), Route("/r/status/{number}", status, methods=["GET"]),
            Route("/r/{token}", show, methods=["GET"]), Route("/r/{token}", submit, methods=["POST"])]
