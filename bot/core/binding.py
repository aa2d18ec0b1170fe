"""Binding a chat account to a cadre: one-time codes (绑定码) and shared contacts."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, select

from bot.config import Settings
from bot.core.phones import normalize_mobile
from storage.models import BindingCode, Cadre, ChatAccount
from storage import hot
from storage.hot import BoundCadre  # the one cadre type of the dialogue context (ctx.cadre)

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


def redeem_code(session: Session, code: str, channel: str, user_id: str, now: datetime) -> BoundCadre | None:
    """Binds the account when the code is known, unused and unexpired; the code is then spent.
    Returns the cadre now bound, as the dialogue context holds it."""
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
    row.used_at, row.used_by = now, f"{channel}:{user_id}"
    session.add(row)
    bind(session, cadre, channel, user_id, "code", now)
    return BoundCadre.of(cadre)


def cadre_by_mobile(session: Session, phone: str) -> Cadre | None:
    mobile = normalize_mobile(phone)
    if mobile is None:
        return None
    return session.exec(select(Cadre).where(Cadre.mobile == mobile, Cadre.active == True)).first()  # noqa: E712


def bind(session: Session, cadre: Cadre, channel: str, user_id: str, how: str, now: datetime) -> ChatAccount:
    """Binds (channel, user) to the cadre; a cadre keeps one account per channel, the newest."""
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
