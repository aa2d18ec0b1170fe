"""干部联系服务对象: logging a contact with a service object, and the problem they raised, if any.

A problem is filed as 行业领域 (within the cadre's own unit's remit: the unit fixes it itself) or
公共方面 (public services: the work-style office assigns it); 附件4 reports the two apart.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from bot import texts
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature
from bot.core.ledger import open_problem
from bot.core.survey import CATEGORIES
from storage.models import ProblemSource, Role, ServiceObject

NONE = "__none__"
REMITS = ("行业领域", "公共方面")


class ServiceObjectFlow(Flow):
    name = "object"

    def __init__(self, text_limit: int = 500, page_size: int = 8):
        categories = list(dict.fromkeys(CATEGORIES["居"] + CATEGORIES["村"]))
        self.steps = {step.key: step for step in [
            Step("who", "choice", lambda c: texts.OBJECT_PICK, self._on_who, options=self._objects, per_row=1,
                 page_size=page_size),
            Step("remit", "choice", lambda c: texts.OBJECT_ASK_PROBLEM, self._on_remit,
                 options=lambda c: [(NONE, texts.OBJECT_NO_PROBLEM)] + [(r, r) for r in REMITS], per_row=3),
            Step("category", "choice", lambda c: texts.OBJECT_ASK_CATEGORY, self._store("category", "content"),
                 options=lambda c: [(x, x) for x in categories], per_row=3),
            Step("content", "text", lambda c: texts.ASK_DIFFICULTY_CONTENT.format(limit=text_limit),
                 self._store("content", None), max_len=text_limit),
        ]}

    @staticmethod
    def _store(key: str, then: str | None):
        def on_answer(ctx: Context, value: Any) -> str | None:
            ctx.data[key] = value
            return then
        return on_answer

    def start(self, ctx: Context) -> None:
        if not self._objects(ctx):
            ctx.say(texts.OBJECT_NONE)
            return
        ctx.start_flow(self.name, "who")
        self.prompt(ctx)

    def _objects(self, ctx: Context) -> list[tuple[Any, str]]:
        rows = ctx.session.exec(select(ServiceObject).where(ServiceObject.cadre_id == ctx.cadre.id,
                                                            ServiceObject.active == True)  # noqa: E712
                                .order_by(ServiceObject.name)).all()
        return [(o.id, f"{o.name} · {o.workplace}") for o in rows]

    def _on_who(self, ctx: Context, value: int) -> str:
        obj = ctx.session.get(ServiceObject, value)
        if obj is None or obj.cadre_id != ctx.cadre.id or not obj.active:
            raise InputError(texts.HOUSEHOLD_GONE)
        ctx.data["object"] = obj.id
        return "remit"

    def _on_remit(self, ctx: Context, value: str) -> str | None:
        if value == NONE:
            ctx.data["remit"] = None
            return None
        ctx.data["remit"] = value
        return "category"

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        obj = ctx.session.get(ServiceObject, d["object"])
        if not d.get("remit"):
            ctx.say(texts.OBJECT_SAVED_NO_PROBLEM.format(name=obj.name))
            return
        problem = open_problem(ctx.session, source=ProblemSource.SERVICE_OBJECT, category=d["category"],
                               content=d["content"], now=ctx.now, actor=ctx.cadre, service_object_id=obj.id,
                               remit=d["remit"], raiser_name=obj.name, raiser_phone=obj.phone)
        ctx.say(texts.OBJECT_SAVED.format(name=obj.name, remit=d["remit"], id=problem.id))


FEATURE = Feature("object", Role.CADRE, texts.FLOW_NAMES["object"], help=texts.HELP_OBJECT, words=("服务对象",),
                  flow=lambda settings: ServiceObjectFlow(page_size=settings.household_page_size))
