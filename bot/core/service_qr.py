"""一事一评 (one rating per service): a one-time rating QR for one visit, contact or service.

After a visit (入户走访), an everyday contact (日常走访) or a service at a window, the cadre sends
``/serviceqr`` and gets a QR code and a link for that service (the newest visit or contact they
logged today; none: a walk-in service). It is valid ``SERVICE_QR_MINUTES`` and good for one rating;
the household scans it on the cadre's screen or opens the link on its own phone, and rates on the
ordinary rating page. The rating is stored with the service it rates (``Rating.visit_id`` /
``contact_id``), and a rated visit is the household's own confirmation that it happened
(``Visit.household_confirmed_at``). The card's QR (per cadre or window) stays for walk-in services.

The token is ``s`` and the URL-safe Base64 of the ticket's id (4 bytes) and an HMAC of it (14 bytes)
under EVALUATION_SECRET: 25 characters, like a card's token, so it fits the same /r/<token> page, a
Telegram deep link (``t.me/<bot>?start=<token>``, at most 64 characters) and a WeChat QR scene string,
and it works wherever a card's token does: the rating page, Telegram's /start and WeChat's scan
(subscribe / SCAN events are /start <scene>), through the same rating flow (bot.core.flows.rating).
The QR encodes what the cards encode (``CARD_ENCODE``): the page, or with ``telegram`` the deep link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

import qrcode
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core import evaluation, evidence
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.types import File
from storage.models import Cadre, EvaluationCode, EverydayContact, Household, Role, ServiceTicket, TargetKind, Visit

PREFIX = "s"
_ID = struct.Struct(">I")
_MAC_BYTES = 14
_SHAPE = re.compile(r"s[A-Za-z0-9_-]{24}")
OK, EXPIRED, USED = "ok", "expired", "used"


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"service-ticket:" + body, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(key: bytes, ticket_id: int) -> str:
    body = _ID.pack(ticket_id)
    return PREFIX + base64.urlsafe_b64encode(body + _mac(key, body)).decode()


def looks_like_token(text: str) -> bool:
    return bool(_SHAPE.fullmatch(text or ""))


def parse_token(key: bytes, token: str) -> int | None:
    if not looks_like_token(token):
        return None
    raw = base64.urlsafe_b64decode(token[1:])
    body, mac = raw[:_ID.size], raw[_ID.size:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        return None
    return _ID.unpack(body)[0]


def issue(session: Session, settings: Settings, cadre: Cadre, now: datetime) -> tuple[ServiceTicket, str]:
    """A ticket for the cadre's newest visit or contact of today (else a walk-in service)."""
    today_start = datetime.combine(now.astimezone(settings.tz).date(), datetime.min.time(), tzinfo=settings.tz)
    visit = session.exec(select(Visit).where(Visit.cadre_id == cadre.id, Visit.visited_at >= today_start)
                         .order_by(Visit.visited_at.desc(), Visit.id.desc())).first()
    contact = session.exec(select(EverydayContact).where(EverydayContact.cadre_id == cadre.id,
                                                         EverydayContact.contacted_at >= today_start)
                           .order_by(EverydayContact.contacted_at.desc(), EverydayContact.id.desc())).first()
    if visit is not None and contact is not None:  # the newer of the two is the service just given
        if contact.contacted_at > visit.visited_at:
            visit = None
        else:
            contact = None
    code = evaluation.code_for(session, TargetKind.CADRE, cadre.id, now)
    ticket = ServiceTicket(cadre_id=cadre.id, code_id=code.id, visit_id=visit.id if visit else None,
                           contact_id=contact.id if contact else None, issued_at=now,
                           expires_at=now + timedelta(minutes=settings.service_qr_minutes))
    session.add(ticket)
    session.flush()
    return ticket, make_token(settings.evaluation_key, ticket.id)


@dataclass(frozen=True)
class Resolved:
    state: str  # OK, EXPIRED or USED
    target: evaluation.Target
    ticket_id: int


def resolve(session: Session, settings: Settings, token: str, now: datetime) -> Resolved | None:
    """The ticket a scanned token names and whether it can still be rated; None for a forged token or
    a cadre who has left."""
    ticket_id = parse_token(settings.evaluation_key, token)
    ticket = session.get(ServiceTicket, ticket_id) if ticket_id is not None else None
    if ticket is None:
        return None
    code = session.get(EvaluationCode, ticket.code_id)
    target = evaluation.target_of(session, code) if code is not None else None
    if target is None:
        return None
    state = USED if ticket.used_at is not None else EXPIRED if now >= ticket.expires_at else OK
    return Resolved(state, target, ticket.id)


def submit(session: Session, settings: Settings, token: str, given: evaluation.RatingInput, *, channel: str,
           now: datetime, address: str | None = None) -> tuple[str, evaluation.Submitted | None]:
    """Stores the one rating of this ticket, tied to its service; (state, submitted). A used or
    expired ticket stores nothing. The ticket row is locked, so two submissions at once rate once."""
    ticket_id = parse_token(settings.evaluation_key, token)
    ticket = session.exec(select(ServiceTicket).where(ServiceTicket.id == ticket_id).with_for_update()
                          .execution_options(populate_existing=True)).first() if ticket_id else None
    code = session.get(EvaluationCode, ticket.code_id) if ticket else None
    target = evaluation.target_of(session, code) if code is not None else None
    if ticket is None or target is None:
        return "invalid", None
    if ticket.used_at is not None:
        return USED, None
    if now >= ticket.expires_at:
        return EXPIRED, None
    # The ticket is the rater: one rating per service, whoever holds the phone.
    submitted = evaluation.submit_rating(session, settings, target, given, channel=channel,
                                         rater=f"ticket:{ticket.id}", now=now, address=address)
    rating = submitted.rating
    rating.visit_id, rating.contact_id = ticket.visit_id, ticket.contact_id
    ticket.used_at, ticket.rating_id = now, rating.id
    session.add_all([rating, ticket])
    if ticket.visit_id is not None:
        # The household's own confirmation: the strongest evidence, and coordinates learned (走访真实性).
        evidence.household_confirmed(session, session.get(Visit, ticket.visit_id), settings, now)
    session.flush()
    return OK, submitted


def qr_png(url: str) -> bytes:
    image = qrcode.make(url, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def telegram_link(settings: Settings, token: str) -> str | None:
    """The ticket's Telegram deep link, when the bot's username is known."""
    if not settings.telegram_bot_username:
        return None
    return f"https://t.me/{settings.telegram_bot_username.lstrip('@')}?start={token}"


def cmd_serviceqr(ctx: Context) -> None:
    """Gives the cadre a one-time rating QR and link for the service just given (一事一评)."""
    ticket, token = issue(ctx.session, ctx.settings, ctx.cadre, ctx.now)
    url = f"{ctx.settings.public_url}/r/{token}"
    deep_link = telegram_link(ctx.settings, token)
    encoded = deep_link if ctx.settings.card_encode == "telegram" and deep_link else url
    if ticket.visit_id is not None:
        household = ctx.session.exec(select(Household).join(Visit, Visit.household_id == Household.id)
                                     .where(Visit.id == ticket.visit_id)).one()
        service = texts.SERVICE_QR_FOR_VISIT.format(household=household.name)
    elif ticket.contact_id is not None:
        service = texts.SERVICE_QR_FOR_CONTACT
    else:
        service = texts.SERVICE_QR_WALK_IN
    until = ticket.expires_at.astimezone(ctx.settings.tz).strftime("%H:%M")
    text = texts.SERVICE_QR_ISSUED.format(service=service, url=url, minutes=ctx.settings.service_qr_minutes,
                                          until=until)
    if deep_link:
        text += "\n" + texts.SERVICE_QR_TELEGRAM.format(link=deep_link)
    ctx.say(text, files=[File(f"service-qr-{ticket.id}.png", "image/png", qr_png(encoded))])


SERVICE_QR = Feature("serviceqr", Role.CADRE, "一事一评", help=texts.HELP_SERVICE_QR, words=("服务评价码", "一事一评"),
                     run=cmd_serviceqr)
