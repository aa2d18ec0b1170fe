"""差评申诉: the rated cadre's appeal as a short flow, ``/appeal [<评价号> [<理由>]]``.

Without a number it lists the 差评 still open to appeal. With one, the appeal is checked at once
(``appeals.check``: the cadre's own 差评, not appealed yet, within APPEAL_DAYS working days), then the
flow asks for the reason unless it was given, then for one photo as evidence or 跳过, and files it
(``appeals.file_appeal``, which tells the 作风办 through the outbox). The photo must be the cadre's
own: a forwarded one (``Inbound.forwarded``), one the channel could not fetch (no ``Inbound.photo``)
or a file that is no picture is refused with the reason, and nothing is kept; the cadre's own is
stored under MEDIA_DIR by its content hash (``evidence.keep_photo``, as visits' photos are) and named
on the appeal. The rules of appeals live in bot.core.appeals; this module is the dialogue.
"""

from __future__ import annotations

from bot import texts
from bot.core import evidence
from bot.core.appeals import REASON_LIMIT, AppealError, appealable, check, deadline, file_appeal
from bot.core.dialogue import Context, Flow, InputError, Step, clean_text
from bot.core.feature import Feature
from storage.models import Role


class AppealFlow(Flow):
    """``/appeal``: lists what can be appealed; ``/appeal <评价号> [<理由>]``: the reason (unless given),
    then one photo as evidence or 跳过, then the appeal is filed."""

    name = "appeal"

    def __init__(self):
        steps = [
            Step("reason", "text", lambda c: texts.APPEAL_ASK_REASON.format(rating=c.data["rating"], limit=REASON_LIMIT),
                 self._on_reason, max_len=REASON_LIMIT),
            Step("photo", "photo", lambda c: texts.APPEAL_ASK_PHOTO.format(rating=c.data["rating"]), self._on_photo,
                 optional=True),
        ]
        self.steps = {step.key: step for step in steps}

    def start(self, ctx: Context) -> None:
        number, _, reason = ctx.inbound.args.strip().partition(" ")
        number = number.lstrip("#")
        if not number:
            return self._list(ctx)
        if not number.isdigit() or len(number) > 9:
            return ctx.say(texts.APPEAL_USAGE)
        try:
            check(ctx.session, ctx.settings, ctx.cadre, int(number), ctx.now)
        except AppealError as exc:
            return ctx.say(str(exc))
        data = {"rating": int(number)}
        step = "reason"
        if reason.strip():
            try:
                data["reason"], step = clean_text(reason, REASON_LIMIT), "photo"
            except InputError as exc:
                ctx.say(str(exc))
        ctx.start_flow(self.name, step, data)
        self.prompt(ctx)

    @staticmethod
    def _list(ctx: Context) -> None:
        today = ctx.now.astimezone(ctx.settings.tz).date()
        ratings = appealable(ctx.session, ctx.settings, ctx.cadre, today)
        if not ratings:
            return ctx.say(texts.APPEAL_NONE)
        lines = [texts.APPEAL_LIST_HEADER.format(days=ctx.settings.appeal_days)]
        for r in ratings:
            lines.append(texts.APPEAL_LIST_LINE.format(
                id=r.id, date=r.rated_at.astimezone(ctx.settings.tz).strftime("%m-%d"),
                level=texts.RATING_LEVELS[r.level], reasons="、".join(r.reasons) or "—",
                until=deadline(ctx.settings, r).isoformat()))
        lines.append(texts.APPEAL_USAGE)
        ctx.say("\n".join(lines))

    @staticmethod
    def _on_reason(ctx: Context, value: str) -> str:
        ctx.data["reason"] = value
        return "photo"

    @staticmethod
    def _on_photo(ctx: Context, value: str | None) -> None:
        """The cadre's own photo (not forwarded, fetched by the channel, a picture), kept by its hash."""
        ctx.data.pop("photo", None)
        if value is None:
            return None
        if ctx.inbound.forwarded:
            raise InputError(texts.APPEAL_PHOTO_FORWARDED)
        content = ctx.inbound.photo
        if not content:
            raise InputError(texts.APPEAL_PHOTO_NOT_RECEIVED)
        if evidence.picture_type(content) is None:
            raise InputError(texts.APPEAL_PHOTO_NOT_PICTURE)
        facts = evidence.keep_photo(content, ctx.settings)
        ctx.data["photo"] = {"ref": value, "sha256": facts.sha256}
        return None

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        photo = d.get("photo") or {}
        try:
            appeal = file_appeal(ctx.session, ctx.settings, ctx.cadre, d["rating"], d.get("reason", ""), ctx.now,
                                 photo_ref=photo.get("ref"), photo_sha256=photo.get("sha256"))
        except AppealError as exc:  # became impossible meanwhile (the deadline passed): said, and the flow ends
            return ctx.say(str(exc))
        ctx.say(texts.APPEAL_FILED.format(id=appeal.id, rating=appeal.rating_id)
                + (texts.APPEAL_FILED_PHOTO if appeal.photo_sha256 else ""))


FLOW = AppealFlow()
FEATURE = Feature("appeal", Role.CADRE, texts.FLOW_NAMES["appeal"], help=texts.HELP_APPEAL, words=("申诉",),
                  flow=lambda settings: FLOW)
