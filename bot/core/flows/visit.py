"""入户走访: the four-ones visit (四个一), step by step, with 回头看 before the first step.

Steps: household → contact card (联系卡) → survey (调查卷, one step per question) → difficulty
(困难事: category, content, solved on the spot?) → leaflet (宣传纸) → optional photo and
location → summary and confirmation. Nothing is written to the visit tables before the
confirmation; an unsolved difficulty then becomes a problem on the ledger.
"""

from __future__ import annotations

from typing import Any

from bot import texts
from bot.core import evidence
from bot.core.dialogue import Context, Flow, InputError, Step
from bot.core.feature import Feature, Menu
from bot.core.ledger import open_problem
from bot.core.progress import cadre_progress, households_with_status
from bot.core.survey import Question, categories_for, load_survey
from bot.core.types import Location
from storage.models import Household, Problem, ProblemSource, ProblemStatus, Role, Visit
from storage import hot

YES_NO = [(True, texts.YES), (False, texts.NO)]
NONE = "__none__"

def _yes_no(ctx: Context) -> list[tuple[Any, str]]:
    return YES_NO


class VisitFlow(Flow):
    name = "visit"

    def __init__(self, survey: tuple[Question, ...], text_limit: int = 500, page_size: int = 8):
        self.survey = survey
        self.text_limit = text_limit
        steps = [
            Step("household", "choice", lambda c: texts.PICK_HOUSEHOLD, self._on_household,
                 options=self._household_options, per_row=1, page_size=page_size),
            Step("card", "choice", lambda c: texts.ASK_CARD, self._store("card", self._after_card), options=_yes_no),
        ]
        for index, question in enumerate(survey):
            steps.append(self._survey_step(index, question))
        steps += [
            Step("category", "choice", lambda c: texts.ASK_DIFFICULTY_CATEGORY, self._on_category,
                 options=self._category_options, per_row=3),
            Step("content", "text", lambda c: texts.ASK_DIFFICULTY_CONTENT.format(limit=text_limit),
                 self._store("content", lambda c: "solved"), max_len=text_limit),
            Step("solved", "choice", lambda c: texts.ASK_DIFFICULTY_SOLVED, self._store("solved", lambda c: "leaflet"),
                 options=lambda c: [(True, texts.SOLVED_YES), (False, texts.SOLVED_NO)], per_row=1),
            Step("leaflet", "choice", lambda c: texts.ASK_LEAFLET, self._store("leaflet", lambda c: "photo"),
                 options=_yes_no),
            Step("photo", "photo", lambda c: texts.ASK_PHOTO, self._on_photo, optional=True),
            Step("location", "location", lambda c: texts.ASK_LOCATION, self._on_location, optional=True),
            Step("confirm", "choice", self._summary, lambda c, v: None,
                 options=lambda c: [("confirm", texts.CONFIRM)]),
        ]
        self.steps = {step.key: step for step in steps}

    # -- starting ------------------------------------------------------------------------------

    def start(self, ctx: Context) -> None:
        if not self._households(ctx):
            ctx.say(texts.NO_HOUSEHOLDS)
            return
        ctx.start_flow(self.name, "household", {"survey": {}})
        self.prompt(ctx)

    # -- steps ---------------------------------------------------------------------------------

    @staticmethod
    def _store(key: str, then):
        def on_answer(ctx: Context, value: Any) -> str | None:
            ctx.data[key] = value
            return then(ctx)
        return on_answer

    @staticmethod
    def _households(ctx: Context):
        # Starting a visit asks for them up to three times (any at all? how many pages? this page).
        key = ("households", ctx.cadre.id, ctx.half)
        if key not in ctx.memo:
            ctx.memo[key] = households_with_status(ctx.db, ctx.cadre.id, ctx.half)
        return ctx.memo[key]

    def _household_options(self, ctx: Context) -> list[tuple[Any, str]]:
        return [
            (item.id, texts.HOUSEHOLD_LABEL.format(mark="✅ " if item.visited else "", name=item.name,
                                                   address=item.address))
            for item in self._households(ctx)
        ]

    def _on_household(self, ctx: Context, household_id: int) -> str:
        household = hot.household(ctx.db, household_id)
        if household is None or household.cadre_id != ctx.cadre.id or not household.active:
            raise InputError(texts.HOUSEHOLD_GONE)
        ctx.data.update(household=household.id, household_label=f"{household.name}（{household.address}）",
                        area_kind=household.area_kind)
        ctx.say(self._lookback(ctx, household))
        return "card"

    def _lookback(self, ctx: Context, household: hot.HouseholdRow) -> str:
        """回头看: what this household raised before, and how many items stay open around it."""
        problems = hot.lookback(ctx.db, household.id)
        if not problems:
            lines = [texts.LOOKBACK_NONE.format(name=household.name, address=household.address)]
        else:
            lines = [texts.LOOKBACK_HEADER.format(name=household.name, address=household.address)]
            for p in problems:
                local = p.created_at.astimezone(ctx.settings.tz)
                lines.append(texts.LOOKBACK_ITEM.format(
                    category=p.category, content=_short(p.content),
                    status=texts.STATUS_NAMES.get(p.status, p.status),
                    date=f"{local.year}-{local.month:02d}-{local.day:02d}"))
        if household.area_name:
            open_nearby = hot.open_nearby(ctx.db, household.area_name, household.id)
            if open_nearby:
                lines.append(texts.LOOKBACK_AREA.format(area=household.area_name, count=open_nearby))
        return "\n".join(lines)

    def _after_card(self, ctx: Context) -> str:
        return f"survey:{self.survey[0].id}" if self.survey else "category"

    def _survey_step(self, index: int, question: Question) -> Step:
        def prompt(ctx: Context) -> str:
            text = texts.SURVEY_QUESTION.format(index=index + 1, count=len(self.survey), text=question.text)
            return (texts.SURVEY_INTRO.format(count=len(self.survey)) + "\n" + text) if index == 0 else text

        def on_answer(ctx: Context, value: Any) -> str:
            ctx.data.setdefault("survey", {})[question.id] = value
            return f"survey:{self.survey[index + 1].id}" if index + 1 < len(self.survey) else "category"

        if question.kind == "choice":
            return Step(f"survey:{question.id}", "choice", prompt, on_answer,
                        options=lambda c: [(o, o) for o in question.options], per_row=3)
        return Step(f"survey:{question.id}", "text", prompt, on_answer, optional=question.optional,
                    max_len=self.text_limit)

    def _category_options(self, ctx: Context) -> list[tuple[Any, str]]:
        return [(c, c) for c in categories_for(ctx.data.get("area_kind", "居"))] + [(NONE, texts.NO_DIFFICULTY)]

    def _on_category(self, ctx: Context, value: str) -> str:
        if value == NONE:
            for key in ("category", "content", "solved"):
                ctx.data.pop(key, None)
            return "leaflet"
        ctx.data["category"] = value
        return "content"

    def _on_photo(self, ctx: Context, value: str | None) -> str:
        ctx.data["photo"] = value
        ctx.data.pop("photo_facts", None)
        if value is not None:
            facts = evidence.keep_photo(ctx.inbound.photo, ctx.settings) if ctx.inbound.photo else None
            ctx.data["photo_facts"] = {"sha256": facts.sha256 if facts else None, "phash": facts.phash if facts else None,
                                       "forwarded": ctx.inbound.forwarded}
        return "location"

    def _on_location(self, ctx: Context, value: Location | None) -> str:
        ctx.data.pop("location_check", None)
        if value is None:
            ctx.data["location"] = None
            return "confirm"
        if ctx.inbound.forwarded and value.note is None:
            value = Location(value.latitude, value.longitude, value.accuracy, value.datum, "forwarded")
        check = evidence.check_location(value, ctx.session.get(Household, ctx.data["household"]), ctx.settings)
        ctx.data["location"] = [check.latitude, check.longitude]
        ctx.data["location_check"] = check.as_data()
        ctx.say(check.message(ctx.settings))  # at once, and never a refusal
        return "confirm"

    def _summary(self, ctx: Context) -> str:
        d = ctx.data
        survey = "".join(
            texts.SUMMARY_SURVEY_ITEM.format(text=q.label, answer=d.get("survey", {}).get(q.id) or "—")
            for q in self.survey)
        if d.get("category"):
            difficulty = texts.SUMMARY_DIFFICULTY.format(
                category=d["category"], content=_short(d.get("content", "")),
                solved=texts.SOLVED_YES if d.get("solved") else texts.SOLVED_NO)
        else:
            difficulty = texts.SUMMARY_NO_DIFFICULTY
        return texts.SUMMARY_HEADER + "\n" + texts.SUMMARY_LINES.format(
            household=d.get("household_label", ""), card=_yn(d.get("card")), survey=survey, difficulty=difficulty,
            leaflet=_yn(d.get("leaflet")), photo=texts.PRESENT if d.get("photo") else texts.ABSENT,
            location=texts.PRESENT if d.get("location") else texts.ABSENT)

    # -- finishing -----------------------------------------------------------------------------

    def finish(self, ctx: Context) -> None:
        d = ctx.data
        household = ctx.session.get(Household, d["household"])
        if household is None or household.cadre_id != ctx.cadre.id or not household.active:
            raise InputError(texts.HOUSEHOLD_GONE)
        location = d.get("location")
        check = d.get("location_check") or {}
        photo = d.get("photo_facts") or {}
        visit = Visit(
            cadre_id=ctx.cadre.id, household_id=household.id, half=ctx.half, visited_at=ctx.now,
            card_left=bool(d.get("card")), survey=dict(d.get("survey", {})),
            difficulty_category=d.get("category"), difficulty_content=d.get("content"),
            difficulty_solved=d.get("solved") if d.get("category") else None,
            leaflet_given=bool(d.get("leaflet")), photo_ref=d.get("photo"),
            latitude=location[0] if location else None, longitude=location[1] if location else None,
            channel=ctx.inbound.channel, location_accuracy=check.get("accuracy"), location_note=check.get("note"),
            distance_m=check.get("distance"), photo_sha256=photo.get("sha256"), photo_phash=photo.get("phash"),
            photo_forwarded=bool(photo.get("forwarded")))
        visit.evidence = evidence.level(visit, ctx.settings)  # inserted with it: no UPDATE after (on_confirmed)
        ctx.session.add(visit)
        ctx.session.flush()
        evidence.on_confirmed(ctx.session, visit, household, ctx.settings, ctx.now)
        lines = []
        progress = cadre_progress(ctx.db, ctx.cadre, ctx.half)
        lines.append(texts.VISIT_SAVED.format(done=progress.visited, total=progress.assigned))
        if d.get("category"):
            problem = open_problem(
                ctx.session, source=ProblemSource.VISIT, category=d["category"], content=d["content"],
                now=ctx.now, actor=ctx.cadre,
                status=ProblemStatus.SOLVED_ON_SPOT if d.get("solved") else ProblemStatus.NEW,
                household_id=household.id, visit_id=visit.id, raiser_name=household.name,
                raiser_phone=household.phone)
            lines.append((texts.VISIT_PROBLEM_SOLVED if d.get("solved") else texts.VISIT_PROBLEM_LEDGER)
                         .format(id=problem.id))
        lines.append(texts.VISIT_OFFER_CONFIRMATION)  # the household's own confirmation (一事一评)
        ctx.say("\n".join(lines))


def _yn(value: Any) -> str:
    return texts.YES if value else texts.NO


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


FEATURE = Feature("visit", Role.CADRE, texts.FLOW_NAMES["visit"], help=texts.HELP_VISIT, words=("走访", "入户走访", "开始走访"),
                  flow=lambda settings: VisitFlow(load_survey(settings.survey_file), page_size=settings.household_page_size),
                  menu=Menu(texts.WECHAT_MENU["visit"], group=texts.WECHAT_MENU["visits"]))
