"""Logging in to the 作风办 web console with no password: possession of the bound chat account is the
credential (登录).

Two ways in, both single use and valid ``CONSOLE_LOGIN_MINUTES`` (5):

- **the link**: ``/login`` (登录) in chat answers with ``<PUBLIC_BASE_URL>/console/login/<token>``; the
  page behind it asks for one press (a messenger's link preview fetches the page but never posts);
- **the page code**: the login page shows 6 digits, bound to that browser's cookie; the user sends
  ``登录 123456`` to the bot, which ties the code to the account's cadre; the browser that asked for it
  (and only that one) then turns it into a session.

A third way for WeCom / 政务微信 members, with no code at all (**企业微信登录**, WeCom's web login):
the login page's button sends the browser to WeCom's QR login page (or, inside the WeCom client,
its OAuth2 authorize page) with a ``state`` made here: one-time, valid ``CONSOLE_LOGIN_MINUTES``,
an HMAC under a key derived from EVALUATION_SECRET of a random nonce and the browser's pre-login
cookie, the nonce's hash kept as a ``LoginCode`` of kind "wecom" (so it is spent once, by that
browser only). WeCom sends the browser back with the state and a code, which the web console
turns into the member's userid with WeCom's API; the userid is the cadre of the member's WeCom
binding, or of the directory's member (``WeComMember``: matched by mobile at the last
``wecom-sync``). A forged, foreign, replayed or stale state, a code WeCom refuses, and a member no
cadre matches are each refused and written to the audit log (``login.refused``), and count
against the address like any refused login.

Wrong codes are limited per chat account and refused logins per client address
(``CONSOLE_WRONG_CODE_LIMIT`` within ``CONSOLE_WRONG_CODE_MINUTES``). The limits count rows of the
audit log (``login.wrong_code``, ``login.refused``), which records every login anyway, so they hold
across processes and restarts with no table of their own.

A session is a random token in an HttpOnly cookie and its hash in ``console_session``; it ends on
logout, when its owner ends it from the sessions page, or after ``CONSOLE_IDLE_MINUTES`` idle.
Only hashes of secrets are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core.dialogue import Context
from bot.core.feature import Feature
from storage import audit
from storage.models import AuditLog, Cadre, ChatAccount, ConsoleSession, LoginCode, Role, WeComMember

LINK, CODE, WECOM = "link", "code", "wecom"
CODE_DIGITS = 6
TOUCH_SECONDS = 60  # last_seen_at is written at most once a minute per session


class TooMany(Exception):
    """Too many wrong codes or refused logins lately; nothing was done."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def _window(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(minutes=settings.console_wrong_code_minutes)


def _recent(session: Session, settings: Settings, now: datetime, action: str, *, actor: str | None = None,
            address: str | None = None) -> int:
    query = select(func.count()).select_from(AuditLog).where(AuditLog.action == action,
                                                             AuditLog.at >= _window(settings, now))
    if actor is not None:
        query = query.where(AuditLog.actor == actor)
    if address is not None:
        query = query.where(AuditLog.address == address)
    return session.exec(query).one()


def _address_blocked(session: Session, settings: Settings, now: datetime, address: str | None) -> bool:
    return bool(address) and _recent(session, settings, now, "login.refused",
                                      address=address) >= settings.console_wrong_code_limit


def console_url(settings: Settings, path: str = "") -> str:
    return f"{settings.public_url}/console{path}"


# -- chat: /login and 登录 123456 -----------------------------------------------------------------

def issue_link(session: Session, cadre_id: int, now: datetime, settings: Settings) -> str:
    """A one-time login link for the cadre; only the token's hash is kept."""
    token = secrets.token_urlsafe(24)
    session.add(LoginCode(kind=LINK, secret_hash=digest(token), cadre_id=cadre_id, created_at=now,
                          expires_at=now + timedelta(minutes=settings.console_login_minutes)))
    return console_url(settings, f"/login/{token}")


def confirm_code(session: Session, settings: Settings, code: str, cadre_id: int, account: str,
                 now: datetime) -> str:
    """Ties a login page's code to the cadre of the chat account that sent it; the answer to say."""
    minutes = settings.console_wrong_code_minutes
    if _recent(session, settings, now, "login.wrong_code", actor=account) >= settings.console_wrong_code_limit:
        return texts.LOGIN_TOO_MANY.format(minutes=minutes)
    code = code.strip()
    row = None
    if code.isdigit() and len(code) == CODE_DIGITS:
        row = session.exec(select(LoginCode).where(
            LoginCode.secret_hash == digest(code), LoginCode.kind == CODE, LoginCode.used_at == None,  # noqa: E711
            LoginCode.confirmed_at == None, LoginCode.expires_at > now).with_for_update()).first()  # noqa: E711
    if row is None:
        audit.record(session, at=now, actor=account, action="login.wrong_code", detail=code[:20])
        return texts.LOGIN_CODE_WRONG.format(minutes=settings.console_login_minutes)
    row.cadre_id, row.confirmed_at, row.confirmed_by = cadre_id, now, account
    session.add(row)
    audit.record(session, at=now, actor=f"cadre:{cadre_id}", action="login.confirm", target=f"login_code:{row.id}",
                 detail=account)
    cadre = session.get(Cadre, cadre_id)
    return texts.LOGIN_CODE_OK.format(name=cadre.name if cadre else "")


def cmd_login(ctx: Context) -> None:
    """Answers /login with a one-time link, or confirms the login page's code sent with it."""
    account = f"{ctx.inbound.channel}:{ctx.inbound.user_id}"
    code = ctx.inbound.args.strip()
    if code:
        ctx.say(confirm_code(ctx.session, ctx.settings, code, ctx.cadre.id, account, ctx.now))
        return
    url = issue_link(ctx.session, ctx.cadre.id, ctx.now, ctx.settings)
    audit.record(ctx.session, at=ctx.now, actor=f"cadre:{ctx.cadre.id}", action="login.link", detail=account)
    ctx.say(texts.LOGIN_LINK.format(minutes=ctx.settings.console_login_minutes, url=url,
                                    page=console_url(ctx.settings, "/login")))


LOGIN = Feature("login", Role.CADRE, "登录控制台", help=texts.HELP_LOGIN, words=("登录",), run=cmd_login)


# -- the browser: page codes, links, sessions -----------------------------------------------------

def issue_page_code(session: Session, settings: Settings, browser: str, address: str | None,
                    now: datetime) -> str:
    """A fresh 6-digit code for this browser (its cookie), replacing any it had; raises ``TooMany``."""
    if _address_blocked(session, settings, now, address):
        raise TooMany()
    if _recent(session, settings, now, "login.code", address=address) >= 10 * settings.console_wrong_code_limit:
        raise TooMany()  # codes asked for in bulk from one address
    for old in session.exec(select(LoginCode).where(LoginCode.browser_hash == digest(browser),
                                                    LoginCode.used_at == None)).all():  # noqa: E711
        old.used_at = now  # one live code per browser
        session.add(old)
    while True:  # no two live codes alike, or a sender could not tell them apart
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        clash = session.exec(select(LoginCode.id).where(LoginCode.secret_hash == digest(code),
                                                        LoginCode.used_at == None,  # noqa: E711
                                                        LoginCode.expires_at > now)).first()
        if clash is None:
            break
    session.add(LoginCode(kind=CODE, secret_hash=digest(code), browser_hash=digest(browser), created_at=now,
                          expires_at=now + timedelta(minutes=settings.console_login_minutes), address=address))
    audit.record(session, at=now, actor="browser", action="login.code", address=address, channel="console")
    return code


@dataclass(frozen=True)
class Started:
    token: str
    cadre_id: int


def _start(session: Session, cadre: Cadre, how: str, address: str | None, agent: str | None,
           now: datetime) -> Started:
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(token_hash=digest(token), cadre_id=cadre.id, created_at=now, last_seen_at=now,
                         address=address, user_agent=(agent or "")[:200] or None, how=how)
    session.add(row)
    session.flush()
    audit.record(session, at=now, actor=f"cadre:{cadre.id}", action="login", target=f"session:{row.id}",
                 address=address, channel="console", detail=how)
    return Started(token, cadre.id)


def _refuse(session: Session, address: str | None, now: datetime, detail: str) -> None:
    audit.record(session, at=now, actor="browser", action="login.refused", address=address, channel="console",
                 detail=detail)


def redeem_link(session: Session, settings: Settings, token: str, address: str | None, agent: str | None,
                now: datetime) -> Started | None:
    """A session for the link's cadre, spending the link; None (and an audit row) when it is not valid;
    ``TooMany`` when this address was refused too often lately."""
    if _address_blocked(session, settings, now, address):
        raise TooMany()
    row = None
    if 10 <= len(token) <= 64:
        row = session.exec(select(LoginCode).where(LoginCode.secret_hash == digest(token), LoginCode.kind == LINK)
                           .with_for_update()).first()
    cadre = session.get(Cadre, row.cadre_id) if row is not None else None
    if row is None or row.used_at is not None or row.expires_at <= now or cadre is None or not cadre.active:
        _refuse(session, address, now, "link")
        return None
    row.used_at, row.address = now, address
    session.add(row)
    return _start(session, cadre, LINK, address, agent, now)


def redeem_page_code(session: Session, settings: Settings, browser: str, address: str | None,
                     agent: str | None, now: datetime) -> Started | str:
    """This browser's code turned into a session once a chat account confirmed it; else "waiting"
    (with the code's still-valid hash kept) or "expired"."""
    if _address_blocked(session, settings, now, address):
        raise TooMany()
    row = session.exec(select(LoginCode).where(LoginCode.browser_hash == digest(browser), LoginCode.kind == CODE,
                                               LoginCode.used_at == None)  # noqa: E711
                       .order_by(LoginCode.id.desc()).with_for_update()).first()
    if row is None or row.expires_at <= now:
        return "expired"
    if row.confirmed_at is None:
        return "waiting"
    cadre = session.get(Cadre, row.cadre_id)
    if cadre is None or not cadre.active:
        _refuse(session, address, now, "code")
        return "expired"
    row.used_at = now
    session.add(row)
    return _start(session, cadre, CODE, address, agent, now)


# -- WeCom's web login (企业微信登录) ----------------------------------------------------------------

def _state_mac(settings: Settings, nonce: str, browser: str) -> str:
    key = hashlib.sha256(b"console-wecom-state:" + settings.evaluation_key).digest()
    return hmac.new(key, f"{nonce}:{digest(browser)}".encode(), hashlib.sha256).hexdigest()[:32]


def start_wecom(session: Session, settings: Settings, browser: str, address: str | None, now: datetime) -> str:
    """A fresh ``state`` for WeCom's login page, tied to this browser's cookie (64 hex digits: WeCom
    takes letters and digits only, at most 128); raises ``TooMany``."""
    if _address_blocked(session, settings, now, address):
        raise TooMany()
    started = session.exec(select(func.count()).select_from(LoginCode).where(
        LoginCode.kind == WECOM, LoginCode.address == address, LoginCode.created_at >= _window(settings, now))).one()
    if address and started >= 10 * settings.console_wrong_code_limit:
        raise TooMany()  # states asked for in bulk from one address
    nonce = secrets.token_hex(16)
    session.add(LoginCode(kind=WECOM, secret_hash=digest(nonce), browser_hash=digest(browser), created_at=now,
                          expires_at=now + timedelta(minutes=settings.console_login_minutes), address=address))
    return nonce + _state_mac(settings, nonce, browser)


def spend_wecom_state(session: Session, settings: Settings, state: str, browser: str, address: str | None,
                      now: datetime) -> bool:
    """True, spending it, when ``state`` is one this browser was given, unused and unexpired; else
    False and an audit row. ``TooMany`` when this address was refused too often lately."""
    if _address_blocked(session, settings, now, address):
        raise TooMany()
    row = None
    if len(state) == 64 and all(c in "0123456789abcdef" for c in state) and browser:
        nonce, mac = state[:32], state[32:]
        if hmac.compare_digest(mac, _state_mac(settings, nonce, browser)):
            row = session.exec(select(LoginCode).where(LoginCode.secret_hash == digest(nonce), LoginCode.kind == WECOM)
                               .with_for_update()).first()
    if row is None or row.used_at is not None or row.expires_at <= now or row.browser_hash != digest(browser):
        refuse_wecom(session, address, now, "state")
        return False
    row.used_at = now
    session.add(row)
    return True


def refuse_wecom(session: Session, address: str | None, now: datetime, detail: str) -> None:
    """A refused WeCom login (the state, WeCom's answer to the code, an unknown member), audited."""
    _refuse(session, address, now, f"wecom {detail}"[:300])


def wecom_cadre(session: Session, userid: str) -> Cadre | None:
    """The active cadre of a WeCom member: their WeCom binding, else the directory's member (matched
    by mobile at the last sync, or by the mobile it shows matching a cadre added since)."""
    account = session.exec(select(ChatAccount).where(ChatAccount.channel == WECOM,
                                                     ChatAccount.external_user_id == userid)).first()
    candidates = [account.cadre_id] if account is not None else []
    member = session.get(WeComMember, userid)
    if member is not None and member.cadre_id is not None:
        candidates.append(member.cadre_id)
    for cadre_id in candidates:
        cadre = session.get(Cadre, cadre_id)
        if cadre is not None and cadre.active:
            return cadre
    if member is not None and member.mobile:
        return session.exec(select(Cadre).where(Cadre.mobile == member.mobile, Cadre.active == True)).first()  # noqa: E712
    return None


def redeem_wecom(session: Session, settings: Settings, userid: str, address: str | None, agent: str | None,
                 now: datetime) -> Started | None:
    """A session for the cadre of the WeCom member WeCom vouched for; None (and an audit row) when
    no active cadre matches."""
    cadre = wecom_cadre(session, userid)
    if cadre is None:
        refuse_wecom(session, address, now, f"unknown member {userid}")
        return None
    return _start(session, cadre, WECOM, address, agent, now)


@dataclass(frozen=True)
class Who:
    """The logged-in user of a request: the session and its cadre (plain values, usable off the session)."""

    session_id: int
    cadre_id: int
    name: str
    unit_id: int
    role: str
    last_seen_at: datetime


def who(session: Session, settings: Settings, token: str | None, now: datetime) -> Who | None:
    """The session's user if the token names a session neither ended nor idle too long. Only reads:
    ``seen`` marks it (in a short write, and only when due), so a page view takes no write lock."""
    if not token or len(token) > 100:
        return None
    row = session.exec(select(ConsoleSession).where(ConsoleSession.token_hash == digest(token))).first()
    if row is None or row.ended_at is not None:
        return None
    if now - row.last_seen_at > timedelta(minutes=settings.console_idle_minutes):
        return None
    cadre = session.get(Cadre, row.cadre_id)
    if cadre is None or not cadre.active:
        return None
    return Who(row.id, cadre.id, cadre.name, cadre.unit_id, cadre.role, row.last_seen_at)


def due_for_seen(user: Who, now: datetime) -> bool:
    return (now - user.last_seen_at).total_seconds() >= TOUCH_SECONDS


def seen(session: Session, session_id: int, now: datetime) -> None:
    """Marks the session used now (the idle timeout counts from here)."""
    row = session.get(ConsoleSession, session_id)
    if row is not None and row.ended_at is None and row.last_seen_at < now:
        row.last_seen_at = now
        session.add(row)


def expire_idle(session: Session, settings: Settings, token: str | None, now: datetime) -> None:
    """Ends the token's session if it idled past the timeout (so it is listed nowhere as open)."""
    if not token or len(token) > 100:
        return
    row = session.exec(select(ConsoleSession).where(ConsoleSession.token_hash == digest(token))).first()
    if (row is not None and row.ended_at is None
            and now - row.last_seen_at > timedelta(minutes=settings.console_idle_minutes)):
        row.ended_at = now
        session.add(row)


def end_session(session: Session, cadre_id: int, session_id: int, address: str | None, now: datetime) -> bool:
    """Ends one of the cadre's own sessions (logout, or from the sessions page)."""
    row = session.get(ConsoleSession, session_id)
    if row is None or row.cadre_id != cadre_id or row.ended_at is not None:
        return False
    row.ended_at = now
    session.add(row)
    audit.record(session, at=now, actor=f"cadre:{cadre_id}", action="logout", target=f"session:{session_id}",
                 address=address, channel="console")
    return True


def open_sessions(session: Session, settings: Settings, cadre_id: int, now: datetime) -> list[ConsoleSession]:
    """The cadre's sessions still open (not ended, not idle past the timeout), newest first."""
    since = now - timedelta(minutes=settings.console_idle_minutes)
    return list(session.exec(select(ConsoleSession).where(
        ConsoleSession.cadre_id == cadre_id, ConsoleSession.ended_at == None,  # noqa: E711
        ConsoleSession.last_seen_at > since).order_by(ConsoleSession.last_seen_at.desc())).all())
