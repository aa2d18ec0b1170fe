"""Binding a chat account to a cadre: one-time codes (绑定码) and shared contacts.

Codes cannot be guessed without limit: wrong codes in a row are counted per chat account (and per
client address, for a channel that knows one) in ``binding_attempt``; after BIND_MAX_FAILURES
within BIND_FAILURE_WINDOW_MINUTES the key is locked for BIND_LOCKOUT_MINUTES, and every code from
it is refused, the right one too (``BindingLocked`` says how long). The counts and the audit rows
are written in the event's own transaction, which commits with the answer. Every binding (by
code, contact or console), every refused code and every lockout is in the audit log.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, select

from bot.config import Settings
from bot.core.phones import normalize_mobile
from storage import audit, hot
from storage.hot import BoundCadre  # the one cadre type of the dialogue context (ctx.cadre)
from storage.models import BindingAttempt, BindingCode, Cadre, ChatAccount

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read aloud and typed
CODE_LENGTH = 8
START_PREFIX = "bind-"


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().encode()).hexdigest()


def issue_code(session: Session, cadre: Cadre, now: datetime, settings: Settings) -> tuple[str, datetime]:
    """A fresh code for the cadre; only its hash is stored. Returns the code and its expiry."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires = now + timedelta(hours=settings.bind_code_ttl_hours)
    session.add(BindingCode(code_hash=_hash(code), cadre_id=cadre.id, created_at=now, expires_at=expires))
    return code, expires


def telegram_link(settings: Settings, code: str) -> str | None:
    if not settings.telegram_bot_username:
        return None
    return f"https://t.me/{settings.telegram_bot_username.lstrip('@')}?start={START_PREFIX}{code}"


class BindingLocked(Exception):
    """Too many wrong binding codes in a row from this account or address: refused until ``until``."""

    def __init__(self, until: datetime, now: datetime):
        super().__init__(f"binding locked until {until.isoformat()}")
        self.until = until
        self.minutes_left = max(1, math.ceil((until - now).total_seconds() / 60))


def _attempt_keys(channel: str, user_id: str, address: str | None) -> list[str]:
    keys = [f"account:{channel}:{user_id}"[:160]]
    if address:
        keys.append(f"address:{address}"[:160])
    return keys


def _attempts(session: Session, keys: list[str]) -> list[BindingAttempt]:
    return list(session.exec(select(BindingAttempt).where(BindingAttempt.key.in_(keys)).with_for_update()).all())


def _locked_until(rows: list[BindingAttempt], now: datetime) -> datetime | None:
    ends = [row.locked_until for row in rows if row.locked_until is not None and row.locked_until > now]
    return max(ends) if ends else None


def _count_failure(session: Session, keys: list[str], rows: list[BindingAttempt], now: datetime,
                   settings: Settings) -> datetime | None:
    """Adds one wrong code to each key's run; returns the end of the lockout this one started, if any."""
    window = timedelta(minutes=settings.bind_failure_window_minutes)
    known = {row.key: row for row in rows}
    locked = None
    for key in keys:
        row = known.get(key)
        if row is None:
            row = BindingAttempt(key=key, failures=0, first_failed_at=now)
        elif row.first_failed_at <= now - window or (row.locked_until is not None and row.locked_until <= now):
            row.failures, row.first_failed_at, row.locked_until = 0, now, None  # a new run
        row.failures += 1
        if row.failures >= settings.bind_max_failures:
            row.locked_until = now + timedelta(minutes=settings.bind_lockout_minutes)
            locked = max(locked, row.locked_until) if locked else row.locked_until
        session.add(row)
    return locked


def redeem_code(session: Session, code: str, channel: str, user_id: str, now: datetime,
                settings: Settings | None = None, *, address: str | None = None) -> BoundCadre | None:
    """Binds the account when the code is known, unused and unexpired; the code is then spent.
    Returns the cadre now bound, as the dialogue context holds it.

    Returns None for a wrong code. Raises ``BindingLocked`` (after counting and auditing the
    attempt in the session) when this account or address is locked out, or this wrong code locked it.
    """
    from bot.config import get_settings

    settings = settings or get_settings()
    actor = f"{channel}:{user_id}"
    keys = _attempt_keys(channel, user_id, address)
    rows = _attempts(session, keys)
    until = _locked_until(rows, now)
    if until is not None:
        audit.record(session, at=now, actor=actor, action="binding.refused", channel=channel, address=address,
                     detail="locked")
        raise BindingLocked(until, now)
    cadre = _cadre_for_code(session, code, actor, now)
    if cadre is None:
        audit.record(session, at=now, actor=actor, action="binding.refused", channel=channel, address=address,
                     detail="wrong code")
        until = _count_failure(session, keys, rows, now, settings)
        if until is not None:
            audit.record(session, at=now, actor=actor, action="binding.locked", target=f"account:{actor}",
                         channel=channel, address=address,
                         detail=f"{settings.bind_max_failures} wrong codes; locked until {until.isoformat()}")
            session.flush()
            raise BindingLocked(until, now)
        return None
    for row in rows:  # the run of wrong codes is over
        session.delete(row)
    bind(session, cadre, channel, user_id, "code", now, address=address)
    return BoundCadre.of(cadre)


def _cadre_for_code(session: Session, code: str, used_by: str, now: datetime) -> Cadre | None:
    """The active cadre of a known, unused, unexpired code, which is then marked used; else None."""
    code = code.strip()
    if not code or len(code) > 32:
        return None
    row = session.exec(select(BindingCode).where(BindingCode.code_hash == _hash(code))
                       .with_for_update()).first()
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    cadre = session.get(Cadre, row.cadre_id)
    if cadre is None or not cadre.active:
        return None
    row.used_at, row.used_by = now, used_by
    session.add(row)
    return cadre


def cadre_by_mobile(session: Session, phone: str) -> Cadre | None:
    mobile = normalize_mobile(phone)
    if mobile is None:
        return None
    return session.exec(select(Cadre).where(Cadre.mobile == mobile, Cadre.active == True)).first()  # noqa: E712


def bind(session: Session, cadre: Cadre, channel: str, user_id: str, how: str, now: datetime, *,
         address: str | None = None) -> ChatAccount:
    """Binds (channel, user) to the cadre; a cadre keeps one account per channel, the newest. The
    binding is written to the audit log (action binding.redeem for a code, binding.contact, binding.console)."""
    audit.record(session, at=now, actor=f"{channel}:{user_id}", action="binding.redeem" if how == "code" else f"binding.{how}",
                 target=f"cadre:{cadre.id}", channel=channel, address=address, detail=how)
    for old in session.exec(select(ChatAccount).where(ChatAccount.channel == channel,
                                                      ChatAccount.cadre_id == cadre.id)).all():
        if old.external_user_id != user_id:
            session.delete(old)
    account = session.exec(select(ChatAccount).where(ChatAccount.channel == channel,
                                                     ChatAccount.external_user_id == user_id)).first()
    if account is None:
        account = ChatAccount(channel=channel, external_user_id=user_id, cadre_id=cadre.id, bound_at=now, bound_by=how)
    else:
        account.cadre_id, account.bound_at, account.bound_by = cadre.id, now, how
    session.add(account)
    session.flush()
    return account


def bind_console(session: Session, channel: str, user_id: str, mobile: str | None, now: datetime) -> Cadre | None:
    """The local console's user bound to the cadre with this mobile, or to the roster's first cadre
    (the operator at the terminal is trusted); None when there is no such cadre."""
    from storage.models import Role

    if mobile:
        cadre = cadre_by_mobile(session, mobile)
    else:
        cadre = session.exec(select(Cadre).where(Cadre.active == True, Cadre.role == Role.CADRE)  # noqa: E712
                             .order_by(Cadre.id)).first()
    if cadre is None:
        return None
    bind(session, cadre, channel, user_id, "console", now)
    return cadre


def bound_cadre(db, channel: str, user_id: str) -> BoundCadre | None:
    """The active cadre (channel, user_id) is bound to, on the event's own connection (storage.hot)."""
    return hot.bound_cadre(db, channel, user_id)
