"""日常走访: logging an everyday contact (phone call, holiday visit, meeting) in three short steps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import select

from bot import texts
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature, Menu
from bot.core.progress import households_with_status
from bot.core.ledger import open_problem
from bot.core.survey import CATEGORIES, categories_for
from storage.models import EverydayContact, Household, ProblemSource, Role

NO_HOUSEHOLD = "__none__"
NO_PROBLEM = "__no_problem__"


class ContactFlow(Flow):
    name = "contact"

    def __init__(self, text_limit: int = 500, page_size: int = 8):
        steps = [
            Step("kind", "choice", lambda c: texts.ASK_CONTACT_KIND, self._on_kind,
                 options=lambda c: list(texts.CONTACT_KINDS.items())),
            Step("who", "choice", lambda c: texts.ASK_CONTACT_WHO, self._on_who, options=self._who_options,
                 per_row=1, page_size=page_size),
            Step("note", "text", lambda c: texts.ASK_CONTACT_NOTE.format(limit=text_limit), self._on_note,
                 optional=True, max_len=text_limit),
            Step("category", "choice", lambda c: texts.CONTACT_ASK_PROBLEM, self._on_category,
                 options=self._categories, per_row=3),
            Step("content", "text", lambda c: texts.ASK_DIFFICULTY_CONTENT.format(limit=text_limit), self._on_content,
                 max_len=text_limit),
        ]
        self.steps = {step.key: step for step in steps}

    def start(self, ctx: Context) -> None:
        ctx.start_flow(self.name, "kind")
        self.prompt(ctx)

    def _on_kind(self, ctx: Context, value: str) -> str:
        ctx.data["kind"] = value
        return "who"

    def _who_options(self, ctx: Context) -> list[tuple[Any, str]]:
        items = households_with_status(ctx.db, ctx.cadre.id, ctx.half)
        return [(NO_HOUSEHOLD, texts.CONTACT_NO_HOUSEHOLD)] + [
            (item.id, texts.HOUSEHOLD_LABEL.format(mark="", name=item.name, address=item.address))
            for item in items]

    def _on_who(self, ctx: Context, value: Any) -> str:
        if value != NO_HOUSEHOLD:
            household = ctx.session.get(Household, value)
            if household is None or household.cadre_id != ctx.cadre.id or not household.active:
                raise InputError(texts.HOUSEHOLD_GONE)
            ctx.data["household_label"] = household.name
        ctx.data["household"] = None if value == NO_HOUSEHOLD else value
        return "note"

    def _on_note(self, ctx: Context, value: str | None) -> str:
        ctx.data["note"] = value
        return "category"

    def _categories(self, ctx: Context) -> list[tuple[Any, str]]:
        household = ctx.session.get(Household, ctx.data["household"]) if ctx.data.get("household") else None
        kinds = categories_for(household.area_kind) if household else tuple(dict.fromkeys(
            CATEGORIES["居"] + CATEGORIES["村"]))
        return [(NO_PROBLEM, texts.CONTACT_NO_PROBLEM)] + [(c, c) for c in kinds]

    def _on_category(self, ctx: Context, value: str) -> str | None:
        if value == NO_PROBLEM:
            ctx.data.pop("category", None)
            return None
        ctx.data["category"] = value
        return "content"

    def _on_content(self, ctx: Context, value: str) -> None:
        ctx.data["content"] = value
        return None

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        ctx.session.add(EverydayContact(
            cadre_id=ctx.cadre.id, household_id=d.get("household"), kind=d["kind"], note=d.get("note"),
            half=ctx.half, contacted_at=ctx.now, channel=ctx.inbound.channel))
        ctx.session.flush()
        count = ctx.session.exec(select(func.count()).select_from(EverydayContact).where(
            EverydayContact.cadre_id == ctx.cadre.id, EverydayContact.half == ctx.half)).one()
        who = f"（{d['household_label']}）" if d.get("household") else ""
        ctx.say(texts.CONTACT_SAVED.format(kind=texts.CONTACT_KINDS[d["kind"]], who=who, count=count))
        if d.get("category"):
            household = ctx.session.get(Household, d["household"]) if d.get("household") else None
            problem = open_problem(ctx.session, source=ProblemSource.CONTACT, category=d["category"],
                                   content=d["content"], now=ctx.now, actor=ctx.cadre,
                                   household_id=household.id if household else None,
                                   raiser_name=household.name if household else None,
                                   raiser_phone=household.phone if household else None)
            ctx.say(texts.VISIT_PROBLEM_LEDGER.format(id=problem.id))


FEATURE = Feature("contact", Role.CADRE, texts.FLOW_NAMES["contact"], help=texts.HELP_CONTACT, words=("日常走访", "日常"),
                  flow=lambda settings: ContactFlow(page_size=settings.household_page_size),
                  menu=Menu(texts.WECHAT_MENU["contact"], group=texts.WECHAT_MENU["visits"]))
