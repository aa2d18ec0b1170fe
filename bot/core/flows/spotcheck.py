"""电话随机访问: a supervisor draws visits for a phone check and records, call by call, what was found.

/spotcheck opens the list of the half-year's checks still to be made in the supervisor's scope
(not reached ones come back after the pending ones), with two buttons on top: draw a sample and
the summary. Picking an item shows whom to ring (full phone: the caller needs it) and whose visit
it was; the answer is one button: confirmed, not reached, denied (a denial asks for a short note
of what the household said). Then the list again, for the next call. A denial disputes the visit:
it stops counting and its cadre is told (outbox); it then waits in the same list, marked ⚖, for the
supervisor's ruling (the visit stands, or the denial does), which the cadre is told of too. ``/spotcheck 抽取`` draws
at once, ``/spotcheck 汇总`` only answers with the summary.
"""

from __future__ import annotations

from typing import Any

from bot import texts
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature
from bot.core.periods import half_label
from bot.core.scope import unit_scope
from bot.reports import spotcheck
from bot.core.outbox import SEND_CHANNELS, enqueue_for_cadre
from storage import audit
from storage.models import Role

DRAW, SUMMARY, RULE = "__draw__", "__summary__", "rule:"
NOTE_LIMIT = 300
DRAW_WORDS = ("抽取", "抽查", "draw")
SUMMARY_WORDS = ("汇总", "summary", "报告")


def summary_lines(rows: list[spotcheck.CadreSummary], half: str) -> list[str]:
    """The summary of a half-year's checks: totals, then every cadre with a denied or unverified visit."""
    total = {name: sum(getattr(r, name) for r in rows)
             for name in ("drawn", "confirmed", "not_reached", "denied", "pending")}
    lines = [texts.SPOT_SUMMARY_HEADER.format(half_label=half_label(half), **total)]
    flagged = [r for r in rows if r.flagged]
    if flagged:
        lines.append(texts.SPOT_SUMMARY_FLAGGED)
        lines += [texts.SPOT_SUMMARY_LINE.format(cadre=r.cadre, unit=r.unit, drawn=r.drawn, denied=r.denied,
                                                 unverified=r.unverified) for r in flagged]
    elif rows:
        lines.append(texts.SPOT_SUMMARY_CLEAN)
    return lines


class SpotCheckFlow(Flow):
    name = "spotcheck"

    def __init__(self, page_size: int = 8):
        steps = [
            Step("pick", "choice", self._menu, self._on_pick, options=self._pick_options, per_row=1,
                 page_size=page_size),
            Step("outcome", "choice", self._item_text, self._on_outcome,
                 options=lambda c: list(texts.SPOT_OUTCOMES.items()), per_row=3),
            Step("note", "text", lambda c: texts.SPOT_ASK_NOTE.format(limit=NOTE_LIMIT), self._on_note,
                 optional=True, max_len=NOTE_LIMIT),
            Step("ruling", "choice", self._ruling_text, self._on_ruling,
                 options=lambda c: list(texts.SPOT_RULINGS.items()), per_row=1),
        ]
        self.steps = {step.key: step for step in steps}

    @staticmethod
    def _scope(ctx: Context):
        scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
        return None if scope is None else sorted(scope)

    def start(self, ctx: Context) -> None:
        """Opens the list of checks to make; '抽取' draws first, '汇总' only shows the summary."""
        word = ctx.inbound.args.strip().lower()
        if word in SUMMARY_WORDS:
            return ctx.say("\n".join(summary_lines(spotcheck.summary(ctx.session, ctx.half, self._scope(ctx)),
                                                   ctx.half)))
        ctx.start_flow(self.name, "pick")
        if word in DRAW_WORDS:
            self._draw(ctx)
        self.prompt(ctx)

    def _draw(self, ctx: Context) -> None:
        result = spotcheck.draw(ctx.session, ctx.half, ctx.settings.spot_check_share, ctx.now,
                                unit_ids=self._scope(ctx))
        if not result.drawn:
            return ctx.say(texts.SPOT_NOTHING_TO_DRAW)
        again = texts.SPOT_DRAWN_AGAIN.format(count=result.again) if result.again else ""
        ctx.say(texts.SPOT_DRAWN.format(new=result.new, seed=result.seed, again=again) + result.reasons_text())

    # -- the list --------------------------------------------------------------------------------

    def _open(self, ctx: Context) -> list[spotcheck.Item]:
        return spotcheck.items(ctx.session, ctx.half, unit_ids=self._scope(ctx), outcomes=spotcheck.UNVERIFIED)

    def _menu(self, ctx: Context) -> str:
        # Back from the list does not reopen a call already recorded: the list starts afresh.
        ctx.data["_history"] = []
        rows = spotcheck.summary(ctx.session, ctx.half, self._scope(ctx))
        text = texts.SPOT_MENU.format(half_label=half_label(ctx.half), drawn=sum(r.drawn for r in rows),
                                      open=sum(r.unverified for r in rows),
                                      share=f"{ctx.settings.spot_check_share:.0%}")
        return text if any(r.unverified for r in rows) else text + "\n" + texts.SPOT_NONE_OPEN

    def _pick_options(self, ctx: Context) -> list[tuple[Any, str]]:
        options: list[tuple[Any, str]] = [(DRAW, texts.SPOT_DRAW), (SUMMARY, texts.SPOT_SUMMARY)]
        for item in self._open(ctx):
            mark = texts.SPOT_RETRY_MARK if item.outcome == spotcheck.NOT_REACHED else ""
            options.append((item.id, texts.SPOT_ITEM_LABEL.format(mark=mark, household=item.household,
                                                                  cadre=item.cadre)))
        for item in spotcheck.awaiting_ruling(ctx.session, ctx.half, self._scope(ctx)):
            options.append((f"{RULE}{item.id}", texts.SPOT_ITEM_LABEL.format(
                mark=texts.SPOT_RULING_MARK, household=item.household, cadre=item.cadre)))
        return options

    def _on_pick(self, ctx: Context, value: Any) -> str | None:
        if value == DRAW:
            self._draw(ctx)
            return "pick"
        if value == SUMMARY:
            ctx.data["summary"] = True
            return None
        if isinstance(value, str) and value.startswith(RULE):
            check_id = int(value[len(RULE):])
            if not any(i.id == check_id for i in spotcheck.awaiting_ruling(ctx.session, ctx.half, self._scope(ctx))):
                raise InputError(texts.SPOT_ITEM_GONE)
            ctx.data["check"] = check_id
            return "ruling"
        if spotcheck.item(ctx.session, value, self._scope(ctx)) is None:
            raise InputError(texts.SPOT_ITEM_GONE)
        ctx.data["check"] = value
        return "outcome"

    # -- one call --------------------------------------------------------------------------------

    def _item(self, ctx: Context) -> spotcheck.Item:
        item = spotcheck.item(ctx.session, ctx.data.get("check"), self._scope(ctx))
        if item is None:
            raise InputError(texts.SPOT_ITEM_GONE)
        return item

    def _item_text(self, ctx: Context) -> str:
        item = spotcheck.item(ctx.session, ctx.data.get("check"), self._scope(ctx))
        if item is None:
            return texts.SPOT_ITEM_GONE
        # The household's full number, shown to the supervisor who must call it: each showing audited.
        audit.record(ctx.session, at=ctx.now, actor=f"cadre:{ctx.cadre.id}", action="phone.reveal",
                     target=f"spotcheck:{item.id}", channel=ctx.inbound.channel)
        text = texts.SPOT_ITEM.format(household=item.household, address=item.address, phone=item.phone,
                                      cadre=item.cadre, unit=item.unit, why=item.why,
                                      date=item.visited_at.astimezone(ctx.settings.tz).strftime("%Y-%m-%d"))
        return text + "\n" + texts.SPOT_HOUSEHOLD_CONFIRMED if item.household_confirmed_at else text

    def _on_outcome(self, ctx: Context, value: str) -> str:
        if value == spotcheck.DENIED:
            ctx.data["outcome"] = value
            return "note"
        return self._record(ctx, value, None)

    def _on_note(self, ctx: Context, value: str | None) -> str:
        return self._record(ctx, ctx.data.get("outcome", spotcheck.DENIED), value)

    def _record(self, ctx: Context, outcome: str, note: str | None) -> str:
        item = self._item(ctx)
        check = spotcheck.record(ctx.session, item.id, outcome, ctx.cadre, ctx.now, note)
        ctx.say(texts.SPOT_RECORDED.format(household=item.household, outcome=texts.SPOT_OUTCOMES[outcome]))
        if outcome == spotcheck.DENIED and check.ruling is None:
            ctx.say(texts.SPOT_DISPUTED)
            self._tell_cadre(ctx, check, item, texts.SPOT_NOTICE_DISPUTED.format(
                household=item.household, address=item.address,
                date=item.visited_at.astimezone(ctx.settings.tz).strftime("%Y-%m-%d")))
        ctx.data.pop("check", None)
        ctx.data.pop("outcome", None)
        return "pick"

    # -- a ruling on a denied visit ------------------------------------------------------------------

    def _ruling_text(self, ctx: Context) -> str:
        item = self._item(ctx)
        return texts.SPOT_ASK_RULING.format(
            household=item.household, cadre=item.cadre, unit=item.unit, note=item.note or texts.ABSENT,
            date=item.visited_at.astimezone(ctx.settings.tz).strftime("%Y-%m-%d"))

    def _on_ruling(self, ctx: Context, value: str) -> str:
        item = self._item(ctx)
        try:
            check = spotcheck.rule(ctx.session, item.id, value, ctx.cadre, ctx.now)
        except ValueError:
            raise InputError(texts.SPOT_ITEM_GONE) from None
        ctx.say(texts.SPOT_RULED.format(household=item.household, ruling=texts.SPOT_RULINGS[value]))
        self._tell_cadre(ctx, check, item, texts.SPOT_NOTICE_RULED.format(
            household=item.household, ruling=texts.SPOT_RULINGS[value]))
        ctx.data.pop("check", None)
        return "pick"

    @staticmethod
    def _tell_cadre(ctx: Context, check, item: spotcheck.Item, body: str) -> None:
        """The cadre whose visit it was hears of the dispute and of the ruling, through the outbox."""
        step = "ruled" if check.ruling else "disputed"
        enqueue_for_cadre(ctx.session, check.cadre_id, key=f"spot-{step}:{check.id}", kind="spotcheck", body=body,
                          now=ctx.now, settings=ctx.settings, channels=SEND_CHANNELS)

    def finish(self, ctx: Context) -> None:
        if ctx.data.get("summary"):
            ctx.say("\n".join(summary_lines(spotcheck.summary(ctx.session, ctx.half, self._scope(ctx)), ctx.half)))


# 电话随机访问: the draw and the open calls read a unit's or the city's visits, so no step runs inline.
FEATURE = Feature("spotcheck", Role.SUPERVISOR, texts.FLOW_NAMES["spotcheck"], help=texts.HELP_SPOTCHECK,
                  words=("抽查", "电话抽查"), flow=lambda settings: SpotCheckFlow(page_size=settings.household_page_size),
                  long=True)
