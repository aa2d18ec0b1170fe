"""申诉复核 (appeal and review): the rated cadre appeals a 差评, the 作风办 decides.

A cadre may appeal a 差评 about themselves (rated, or on duty at the rated window) within
``APPEAL_DAYS`` working days of the rating, with a reason and optionally a photo: the dialogue is
bot/core/flows/appeal.py (``/appeal [<评价号> [<理由>]]``), the rules are here (``check``,
``file_appeal``). The photo is the cadre's own (a forwarded one is refused), kept under MEDIA_DIR
by its content hash (``evidence.keep_photo``, as visits' photos) and named on the appeal
(``RatingAppeal.photo_sha256``); the console shows it to whoever may see the appeal (``may_see``),
each showing audited. The appeal goes to the 作风办 (everyone who oversees every unit) through the
outbox, saying 附照片 when it has one. ``/appeals`` lists the appeals waiting; ``/appeals <申诉号>
维持|误评|恶意 <理由>`` decides (also the console's 申诉 page): upheld, or voided as mistaken or
malicious (a reason is required to void). A voided rating leaves every statistic, ranking and form
(``Rating.voided``) but stays in the history with the decision; the decision goes back to the cadre
through the outbox. The rater is told nothing of who appealed. Nobody decides an appeal about
themselves.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.evaluation import BAD_LEVELS
from bot.core.scope import oversees_all, rating_subjects, shows_rater, subjects_of
from bot.core.workdays import work_calendar
from bot.core.outbox import SEND_CHANNELS, enqueue_for_cadre
from storage.models import AppealState, Cadre, Rating, RatingAppeal, Role, WindowDuty

REASON_LIMIT = 500
DECISIONS = {"维持": AppealState.UPHELD, "误评": AppealState.MISTAKEN, "恶意": AppealState.MALICIOUS}


class AppealError(Exception):
    """The appeal or the decision is not allowed; the message says why, nothing changed."""


def deadline(settings: Settings, rating: Rating) -> date:
    """The last local day the rated cadre may appeal: APPEAL_DAYS working days after the rating."""
    return work_calendar(settings.holiday_file).add_working_days(date.fromisoformat(rating.rated_on),
                                                                 settings.appeal_days)


def appealable(session: Session, settings: Settings, cadre: Cadre, today: date) -> list[Rating]:
    """The 差评 about ``cadre`` still within the appeal period and not yet appealed."""
    windows = select(WindowDuty.window_id).where(WindowDuty.cadre_id == cadre.id)
    appealed = select(RatingAppeal.rating_id)
    ratings = session.exec(select(Rating).where(
        Rating.level.in_(BAD_LEVELS), Rating.voided == False,  # noqa: E712
        (Rating.cadre_id == cadre.id) | Rating.window_id.in_(windows), Rating.id.not_in(appealed))
        .order_by(Rating.rated_at.desc())).all()
    return [r for r in ratings if deadline(settings, r) >= today]


def office_heads(session: Session, settings: Settings) -> list[Cadre]:
    people = session.exec(select(Cadre).where(Cadre.role.in_(Role.OVERSEERS), Cadre.active == True)  # noqa: E712
                          .order_by(Cadre.id)).all()
    return [p for p in people if p.role != Role.ADMIN and oversees_all(session, p, settings)]


def check(session: Session, settings: Settings, cadre: Cadre, rating_id: int, now: datetime) -> Rating:
    """The 差评 ``cadre`` may appeal now; raises ``AppealError`` saying why not."""
    rating = session.get(Rating, rating_id)
    if rating is None or rating.level not in BAD_LEVELS or cadre.id not in rating_subjects(session, rating):
        raise AppealError(texts.APPEAL_NOT_YOURS.format(id=rating_id))
    if session.exec(select(RatingAppeal).where(RatingAppeal.rating_id == rating.id)).first() is not None:
        raise AppealError(texts.APPEAL_ALREADY.format(id=rating_id))
    last = deadline(settings, rating)
    if now.astimezone(settings.tz).date() > last:
        raise AppealError(texts.APPEAL_TOO_LATE.format(id=rating_id, days=settings.appeal_days, date=last.isoformat()))
    return rating


def file_appeal(session: Session, settings: Settings, cadre: Cadre, rating_id: int, reason: str, now: datetime,
                photo_ref: str | None = None, photo_sha256: str | None = None) -> RatingAppeal:
    """Files the appeal and tells the 作风办; raises ``AppealError`` (nothing changed) when not allowed."""
    reason = (reason or "").strip()
    if not reason:
        raise AppealError(texts.APPEAL_NEED_REASON)
    if len(reason) > REASON_LIMIT:
        raise AppealError(texts.TEXT_TOO_LONG.format(length=len(reason), limit=REASON_LIMIT))
    rating = check(session, settings, cadre, rating_id, now)
    appeal = RatingAppeal(rating_id=rating.id, cadre_id=cadre.id, reason=reason, photo_ref=photo_ref,
                          photo_sha256=photo_sha256, filed_at=now)
    session.add(appeal)
    session.flush()
    body = texts.APPEAL_NOTICE_FILED.format(id=appeal.id, rating=rating.id, cadre=cadre.name,
                                            level=texts.RATING_LEVELS[rating.level], reason=reason)
    if photo_sha256:
        body += "\n" + texts.APPEAL_NOTICE_PHOTO.format(url=console_link(settings, appeal.id))
    for head in office_heads(session, settings):
        if head.id != cadre.id:
            enqueue_for_cadre(session, head.id, key=f"appeal:{appeal.id}:filed", kind="appeal", body=body, now=now,
                              settings=settings, channels=SEND_CHANNELS)
    return appeal


def decide(session: Session, settings: Settings, by: Cadre, appeal_id: int, decision: str, note: str | None,
           now: datetime) -> RatingAppeal:
    """The 作风办's decision: upheld, or the rating voided as mistaken or malicious (with a reason)."""
    if not oversees_all(session, by, settings):
        raise AppealError(texts.APPEAL_OFFICE_ONLY)
    appeal = session.get(RatingAppeal, appeal_id)
    if appeal is None:
        raise AppealError(texts.APPEAL_NO_SUCH.format(id=appeal_id))
    if appeal.state != AppealState.PENDING:
        raise AppealError(texts.APPEAL_DECIDED.format(id=appeal_id))
    rating = session.get(Rating, appeal.rating_id)
    if by.id == appeal.cadre_id or by.id in rating_subjects(session, rating):
        raise AppealError(texts.APPEAL_OWN)  # 回避
    note = (note or "").strip()[:REASON_LIMIT] or None
    if decision in AppealState.VOIDED and not note:
        raise AppealError(texts.APPEAL_NEED_DECISION_REASON)
    appeal.state, appeal.decided_by_id, appeal.decided_at, appeal.decision_note = decision, by.id, now, note
    if decision in AppealState.VOIDED:
        rating.voided = True
        session.add(rating)
    session.add(appeal)
    session.flush()
    enqueue_for_cadre(session, appeal.cadre_id, key=f"appeal:{appeal.id}:decided", kind="appeal", now=now,
                      settings=settings, channels=SEND_CHANNELS,
                      body=texts.APPEAL_NOTICE_DECIDED.format(id=appeal.id, rating=rating.id,
                                                              decision=texts.APPEAL_STATES[decision],
                                                              note=f"：{note}" if note else ""))
    return appeal


def console_link(settings: Settings, appeal_id: int) -> str:
    """Where the console shows an appeal (and its photo) to those who may see it."""
    return f"{settings.public_url}/console/appeals#appeal-{appeal_id}"


def may_see(session: Session, settings: Settings, cadre: Cadre, appeal: RatingAppeal) -> bool:
    """Who may see an appeal and its photo: the cadre who filed it, and whoever may decide it (oversees
    every unit, and is neither the appellant nor a subject of the rating: 回避). The one place this rule
    lives, for the chat and the console."""
    if cadre.id == appeal.cadre_id:
        return True
    if not oversees_all(session, cadre, settings):
        return False
    rating = session.get(Rating, appeal.rating_id)
    return rating is not None and cadre.id not in rating_subjects(session, rating)


def states_of(session: Session, rating_ids: list[int]) -> dict[int, str]:
    """The appeal state of each rating that has one (for the lists in /ratings and the digests)."""
    if not rating_ids:
        return {}
    return dict(session.exec(select(RatingAppeal.rating_id, RatingAppeal.state)
                             .where(RatingAppeal.rating_id.in_(rating_ids))).all())


# -- chat commands ---------------------------------------------------------------------------------


def cmd_appeals(ctx: Context) -> None:
    """The 作风办's review: lists waiting appeals, or decides one: /appeals <申诉号> 维持|误评|恶意 <理由>."""
    if not oversees_all(ctx.session, ctx.cadre, ctx.settings):
        return ctx.say(texts.APPEAL_OFFICE_ONLY)
    words = ctx.inbound.args.strip().split(maxsplit=2)
    if not words:
        rows = ctx.session.exec(select(RatingAppeal, Rating, Cadre)
                                .join(Rating, Rating.id == RatingAppeal.rating_id)
                                .join(Cadre, Cadre.id == RatingAppeal.cadre_id)
                                .where(RatingAppeal.state == AppealState.PENDING)
                                .order_by(RatingAppeal.filed_at, RatingAppeal.id)).all()
        if not rows:
            return ctx.say(texts.APPEALS_NONE)
        lines = [texts.APPEALS_HEADER.format(count=len(rows))]
        subjects = subjects_of(ctx.session, [rating for _a, rating, _c in rows])
        for appeal, rating, cadre in rows:
            rater = shows_rater(ctx.cadre.id, subjects[rating.id])  # 回避: no comment of a rating about oneself
            lines.append(texts.APPEALS_LINE.format(
                id=appeal.id, rating=rating.id, cadre=cadre.name, level=texts.RATING_LEVELS[rating.level],
                reasons="、".join(rating.reasons) or "—", comment=(rating.comment if rater else None) or "—",
                reason=appeal.reason))
            if appeal.photo_sha256:
                lines[-1] += texts.APPEALS_PHOTO.format(url=console_link(ctx.settings, appeal.id))
        lines.append(texts.APPEALS_USAGE)
        return ctx.say("\n".join(lines))
    number, decision = words[0].lstrip("#"), DECISIONS.get(words[1]) if len(words) > 1 else None
    if not number.isdigit() or decision is None:
        return ctx.say(texts.APPEALS_USAGE)
    try:
        appeal = decide(ctx.session, ctx.settings, ctx.cadre, int(number), decision,
                        words[2] if len(words) > 2 else None, ctx.now)
    except AppealError as exc:
        return ctx.say(str(exc))
    ctx.say(texts.APPEAL_DECIDED_OK.format(id=appeal.id, decision=texts.APPEAL_STATES[decision]))


APPEALS = Feature("appeals", Role.SUPERVISOR, "申诉复核", help=texts.HELP_APPEALS, words=("复核",), run=cmd_appeals)
