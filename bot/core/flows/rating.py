"""服务评价: a citizen rates a cadre or a window in chat, after scanning its card (/start <token>).

Steps: level (非常满意 … 非常不满意); for a 差评 only: reasons (several, toggled), a comment and
a phone for the call-back, the last two optional, except that a 差评 with no reason needs the
comment. Open to anyone (``requires_cadre = False``); the rating itself is stored by
bot.core.evaluation, exactly as from the web page.

The token may also be a one-time service ticket's (一事一评, bot.core.service_qr): the same steps, and
the rating is stored by ``service_qr.submit``, tied to the visit or contact it rates, once per ticket
whoever finishes first; a ticket used or expired is refused at the scan and again at the end, as on
the web page.
"""

from __future__ import annotations

from typing import Any

from bot import texts
from bot.core import evaluation, service_qr
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature
from bot.core.phones import normalize_phone

DONE = "__done__"


class RatingFlow(Flow):
    name = "rating"
    requires_cadre = False

    def __init__(self):
        steps = [
            Step("level", "choice", lambda c: texts.RATING_ASK_LEVEL.format(target=c.data["target"]),
                 self._on_level, options=self._level_options, per_row=1),
            Step("reasons", "choice", lambda c: texts.RATING_ASK_REASONS.format(done=texts.RATING_REASONS_DONE),
                 self._on_reason, options=self._reason_options, per_row=2),
            Step("comment", "text", lambda c: texts.RATING_ASK_COMMENT.format(limit=evaluation.COMMENT_LIMIT),
                 self._on_comment, optional=True, max_len=evaluation.COMMENT_LIMIT),
            Step("phone", "text", lambda c: texts.RATING_ASK_PHONE, self._on_phone, optional=True, max_len=30),
        ]
        self.steps = {step.key: step for step in steps}

    def start(self, ctx: Context, token: str) -> None:
        """Opens the rating of the token's target (a card's, or a one-time service ticket's), unless the
        token is bad, used or expired, or names the user."""
        label = None
        if service_qr.looks_like_token(token):
            found = service_qr.resolve(ctx.session, ctx.settings, token, ctx.now)
            if found is not None and found.state != service_qr.OK:
                return ctx.say(texts.PAGE_SERVICE_USED if found.state == service_qr.USED else texts.PAGE_SERVICE_EXPIRED)
            target = found.target if found is not None else None
            if target is not None:
                label = texts.RATING_SERVICE_TARGET.format(target=target.label)
        else:
            target = evaluation.resolve(ctx.session, ctx.settings.evaluation_key, token)
        if target is None:
            return ctx.say(texts.RATING_CODE_INVALID)
        if evaluation.rates_self(target, ctx.cadre):
            return ctx.say(texts.RATING_SELF)
        if ctx.dialogue.flow is not None:
            return ctx.say(texts.RATING_BUSY.format(flow=texts.FLOW_NAMES.get(ctx.dialogue.flow, "")))
        ctx.start_flow(self.name, "level", {"token": token, "target": label or target.label, "reasons": []})
        self.prompt(ctx)

    @staticmethod
    def _level_options(ctx: Context) -> list[tuple[Any, str]]:
        return [(level, f"{texts.RATING_LEVEL_ICONS[level]} {texts.RATING_LEVELS[level]}")
                for level in evaluation.LEVELS]

    @staticmethod
    def _on_level(ctx: Context, level: int) -> str | None:
        ctx.data["level"] = level
        return "reasons" if level in evaluation.BAD_LEVELS else None

    @staticmethod
    def _reason_options(ctx: Context) -> list[tuple[Any, str]]:
        picked = ctx.data.get("reasons", [])
        return [(reason, (texts.RATING_PICKED if reason in picked else "") + reason)
                for reason in texts.RATING_REASONS] + [(DONE, texts.RATING_REASONS_DONE)]

    @staticmethod
    def _on_reason(ctx: Context, value: str) -> str:
        if value == DONE:
            return "comment"
        picked = ctx.data.setdefault("reasons", [])
        if value in picked:
            picked.remove(value)
        else:
            picked.append(value)
        return "reasons"  # the same step again, with the tick moved

    @staticmethod
    def _on_comment(ctx: Context, value: str | None) -> str:
        if value is None and not ctx.data.get("reasons"):  # a 差评 says what went wrong: a reason or a comment
            raise InputError(texts.RATING_NEED_REASON)
        ctx.data["comment"] = value
        return "phone"

    @staticmethod
    def _on_phone(ctx: Context, value: str | None) -> None:
        phone = normalize_phone(value) if value is not None else None
        if value is not None and phone is None:
            raise InputError(texts.RATING_BAD_PHONE)
        # Normalised, so that the dialogue row holding it is sealed at rest (storage/crypto.py SealedJSON).
        ctx.data["phone"] = phone
        return None

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        token = d["token"]
        if service_qr.looks_like_token(token):
            found = service_qr.resolve(ctx.session, ctx.settings, token, ctx.now)
            target = found.target if found is not None else None
        else:
            target = evaluation.resolve(ctx.session, ctx.settings.evaluation_key, token)
        if target is None:  # revoked while the rater was answering
            ctx.end_flow()
            return ctx.say(texts.RATING_CODE_INVALID)
        if evaluation.rates_self(target, ctx.cadre):
            ctx.end_flow()
            return ctx.say(texts.RATING_SELF)
        given = evaluation.check_input(d["level"], d.get("reasons", []), d.get("comment"), d.get("phone"))
        if service_qr.looks_like_token(token):
            # 一事一评: one rating for this service, under the ticket's lock; the visit household-confirmed.
            state, submitted = service_qr.submit(ctx.session, ctx.settings, token, given, channel=ctx.inbound.channel,
                                                 now=ctx.now)
            if submitted is None:
                ctx.end_flow()
                return ctx.say({service_qr.USED: texts.PAGE_SERVICE_USED,
                                service_qr.EXPIRED: texts.PAGE_SERVICE_EXPIRED}.get(state, texts.RATING_CODE_INVALID))
        else:
            submitted = evaluation.submit_rating(ctx.session, ctx.settings, target, given,
                                                 channel=ctx.inbound.channel, rater=ctx.inbound.user_id, now=ctx.now)
        ctx.say(evaluation.thanks_text(given, submitted, ctx.settings))


FLOW = RatingFlow()


# Started by /start <evaluation code> (a card's deep link or QR scene), not by a command of its own.
FEATURE = Feature("rating", None, texts.FLOW_NAMES["rating"], flow=lambda settings: FLOW, command=False)
