"""Step-by-step flows over a persisted dialogue state: prompts, options, back, skip, cancel, paging.

A flow is a set of named steps. Each step says what it accepts (a choice, text, a photo, a
location), how to prompt, which options to offer, and what to do with an answer (store it and
name the next step, or ``None`` to finish). The runner here does everything common: matching a
button token, a number or an option's words; refusing input of the wrong kind without changing
anything; ``上一步`` through a history stack; ``跳过`` on optional steps; paging long option lists.

Option tokens are "<version>.<index>". The version changes with every change of the dialogue, so a
button from an older message (or the loser of two racing presses) is recognised as stale.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlmodel import Session

from bot import texts
from bot.config import Settings
from bot.core.periods import half_of
from bot.core.types import Inbound, Location, Option, Reply
from bot.core.binding import BoundCadre
from bot.errors import UserError

BACK, CANCEL, SKIP, NEXT_PAGE, PREV_PAGE = "__back__", "__cancel__", "__skip__", "__next__", "__prev__"
NAV_LABELS = {BACK: texts.BACK, CANCEL: texts.CANCEL, SKIP: texts.SKIP, NEXT_PAGE: texts.NEXT_PAGE,
              PREV_PAGE: texts.PREV_PAGE}


class InputError(UserError):
    """The answer is not acceptable; the message is shown and nothing changes."""


@dataclass
class Dialogue:
    """The mutable copy of a DialogueState row that one inbound event works on."""

    flow: str | None
    step: str | None
    data: dict[str, Any]
    version: int

    def snapshot(self) -> tuple:
        return (self.flow, self.step, repr(self.data))


@dataclass
class Context:
    """Everything one inbound event is handled with; replies are collected, not sent."""

    connection: Any  # the event's SQLAlchemy Connection, in the event's transaction
    open_session: Callable[[], Session]
    inbound: Inbound
    dialogue: Dialogue
    settings: Settings
    now: datetime
    cadre: BoundCadre | None  # read-only; a step that changes the cadre loads the ORM row
    replies: list[Reply | Callable[[int], Reply]] = field(default_factory=list)
    chosen: str | None = None
    stale: bool = False
    _session: Session | None = field(default=None, repr=False)

    memo: dict[Any, Any] = field(default_factory=dict, repr=False)  # reads shared by the steps of one event

    @property
    def session(self) -> Session:
        """The event's ORM session, in the event's transaction; opened on first use."""
        if self._session is None:
            self._session = self.open_session()
        return self._session

    @property
    def db(self):
        """Where prepared statements (storage/prepared.py) run: the session once one is open (it is
        flushed first, so they see its writes), else the bare connection."""
        return self._session if self._session is not None else self.connection

    @property
    def data(self) -> dict[str, Any]:
        return self.dialogue.data

    @property
    def half(self) -> str:
        return half_of(self.now, self.settings.tz)

    def rebind(self, connection, open_session: Callable[[], Session]) -> None:
        """Moves the context to another transaction (a long read's step, recorded in a write one)."""
        self.connection, self.open_session, self._session = connection, open_session, None

    def say(self, text: str, **kwargs) -> None:
        self.replies.append(Reply(text, **kwargs))

    def start_flow(self, flow: str, step: str, data: dict[str, Any] | None = None) -> None:
        self.dialogue.flow, self.dialogue.step, self.dialogue.data = flow, step, dict(data or {})

    def end_flow(self) -> None:
        self.dialogue.flow, self.dialogue.step, self.dialogue.data = None, None, {}


@dataclass
class Step:
    """One question of a flow. ``on_answer(ctx, value)`` stores the value and returns the next step."""

    key: str
    kind: str  # "choice", "text", "photo" or "location"
    prompt: Callable[[Context], str]
    on_answer: Callable[[Context, Any], str | None]
    options: Callable[[Context], list[tuple[Any, str]]] | None = None
    optional: bool = False
    max_len: int = 500
    per_row: int = 2
    page_size: int | None = None


class Flow:
    """A named set of steps; subclasses build ``steps`` and implement ``finish``."""

    name: str = ""
    steps: dict[str, Step]
    requires_cadre: bool = True  # False for flows citizens may run (e.g. rating a cadre)

    def finish(self, ctx: Context) -> None:
        raise NotImplementedError

    def step(self, ctx: Context) -> Step:
        return self.steps[ctx.dialogue.step]

    # -- rendering ---------------------------------------------------------------------------

    def options(self, ctx: Context, step: Step, own: list[tuple[Any, str]] | None = None) -> list[list[tuple[Any, str]]]:
        """Rows of (value, label): the step's own options (one page of them), then navigation."""
        rows: list[list[tuple[Any, str]]] = []
        if own is None:
            own = step.options(ctx) if step.options else []
        nav: list[tuple[Any, str]] = []
        if step.page_size and len(own) > step.page_size:
            pages = (len(own) + step.page_size - 1) // step.page_size
            page = min(max(ctx.data.get(f"_page:{step.key}", 0), 0), pages - 1)
            own = own[page * step.page_size:(page + 1) * step.page_size]
            if page > 0:
                nav.append((PREV_PAGE, texts.PREV_PAGE))
            if page < pages - 1:
                nav.append((NEXT_PAGE, texts.NEXT_PAGE))
        for i in range(0, len(own), step.per_row):
            rows.append(own[i:i + step.per_row])
        if nav:
            rows.append(nav)
        tail: list[tuple[Any, str]] = []
        if step.optional:
            tail.append((SKIP, texts.SKIP))
        if ctx.data.get("_history"):
            tail.append((BACK, texts.BACK))
        tail.append((CANCEL, texts.CANCEL))
        rows.append(tail)
        return rows

    def prompt(self, ctx: Context) -> None:
        """Queues the current step's question; its buttons get tokens once the version is known."""
        step = self.step(ctx)
        text = step.prompt(ctx)
        own = step.options(ctx) if step.options else []
        if step.page_size:
            pages = (len(own) + step.page_size - 1) // step.page_size
            if pages > 1:
                page = min(max(ctx.data.get(f"_page:{step.key}", 0), 0), pages - 1)
                text += texts.PICK_HOUSEHOLD_PAGE.format(page=page + 1, pages=pages)
        rows = self.options(ctx, step, own)
        # What was offered is kept with the state: a button or a number answers THIS list, even if
        # the options computed from the database have changed since (another user acted meanwhile).
        ctx.data["_offered"] = [value for row in rows for value, _label in row]

        def render(version: int) -> Reply:
            index = 0
            out: list[list[Option]] = []
            for row in rows:
                out_row = []
                for _value, label in row:
                    out_row.append(Option(label, f"{version}.{index}"))
                    index += 1
                out.append(out_row)
            return Reply(text, options=out, request_location=step.kind == "location")

        ctx.replies.append(render)

    # -- answering ---------------------------------------------------------------------------

    def feed(self, ctx: Context) -> None:
        """Takes the inbound event as the answer to the current step, or explains why not."""
        step = self.step(ctx)
        inbound = ctx.inbound
        flat = [pair for row in self.options(ctx, step) for pair in row]
        offered = ctx.data.get("_offered", [value for value, _label in flat])
        value: Any
        if inbound.token is not None:
            picked = _token_index(inbound.token, ctx.dialogue.version)
            if picked is None or picked >= len(offered) or not _still_offered(offered[picked], flat):
                ctx.stale = True
                ctx.say(texts.STALE_BUTTON)
                self.prompt(ctx)
                return
            value = offered[picked]
            ctx.chosen = next(label for v, label in flat if v == value)
        elif inbound.photo_ref is not None:
            if step.kind != "photo":
                return self._refuse(ctx, texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_PHOTO))
            value = inbound.photo_ref
        elif inbound.location is not None:
            if step.kind != "location":
                return self._refuse(ctx, texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_LOCATION))
            value = inbound.location
        elif inbound.contact is not None:
            return self._refuse(ctx, texts.NOT_EXPECTED_HERE.format(what=texts.WHAT_CONTACT))
        else:
            text = (inbound.text or "").strip()
            matched = _match_option(text, flat, offered)
            if matched is None and step.kind == "choice":
                # A part of an option typed (a household's name, or a piece of its address), on any
                # page of the list: taken when exactly one option has it.
                matched = _match_part(text, step.options(ctx) if step.options else [])
            if matched is _GONE:
                ctx.stale = True
                return self._refuse(ctx, texts.STALE_BUTTON if inbound.buttons else texts.STALE_OPTION_TYPED)
            if matched is not None:
                value = matched
            elif step.kind == "text":
                value = text
            elif step.kind == "location":
                location = parse_location(text)
                if location is None:
                    return self._refuse(ctx, texts.LOCATION_INVALID)
                value = location
            elif step.kind == "photo":
                return self._refuse(ctx, texts.NEED_PHOTO)
            else:
                pick = texts.PICK_AN_OPTION if inbound.buttons else texts.PICK_AN_OPTION_TYPED
                return self._refuse(ctx, pick.format(count=len(flat)))

        if value == CANCEL:
            name = texts.FLOW_NAMES.get(self.name, "")
            ctx.end_flow()
            ctx.say(texts.CANCELLED.format(flow=name))
            return
        if value == BACK:
            history = ctx.data.get("_history") or []
            if history:
                ctx.dialogue.step = history.pop()
                ctx.data["_history"] = history
            self.prompt(ctx)
            return
        if value in (NEXT_PAGE, PREV_PAGE):
            key = f"_page:{step.key}"
            ctx.data[key] = ctx.data.get(key, 0) + (1 if value == NEXT_PAGE else -1)
            self.prompt(ctx)
            return
        if value == SKIP:
            value = None
        elif step.kind == "text":
            try:
                value = clean_text(value, step.max_len)
            except InputError as exc:
                return self._refuse(ctx, str(exc))

        try:
            next_key = step.on_answer(ctx, value)
        except InputError as exc:
            return self._refuse(ctx, str(exc))
        if next_key is None:
            try:
                self.finish(ctx)
            except InputError as exc:
                return self._refuse(ctx, str(exc))
            ctx.end_flow()
            return
        if next_key != step.key:  # a step that repeats itself (ticking several options) is one step back
            ctx.data.setdefault("_history", []).append(step.key)
        ctx.dialogue.step = next_key
        self.prompt(ctx)

    def _refuse(self, ctx: Context, message: str) -> None:
        ctx.say(message)
        self.prompt(ctx)


def _token_index(token: str, version: int) -> int | None:
    """The option index a token names, or None when the token is not for this version."""
    try:
        token_version, index = token.split(".", 1)
        if int(token_version) != version:
            return None
        return int(index)
    except (ValueError, AttributeError):
        return None


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _plain(text: str) -> str:
    return _NON_WORD.sub("", unicodedata.normalize("NFKC", text)).lower()


_GONE = object()  # a number that named an option no longer on offer


def _still_offered(value: Any, flat: list[tuple[Any, str]]) -> bool:
    return any(v == value for v, _label in flat)


def _match_option(text: str, flat: list[tuple[Any, str]], offered: list[Any]) -> Any | None:
    """An option chosen by its number (1-based, as numbered when it was offered) or by its words."""
    if not text or len(text) > 60:
        return None
    normal = unicodedata.normalize("NFKC", text).strip()
    if normal.isdigit():
        n = int(normal)
        if not 1 <= n <= len(offered):
            return None
        return offered[n - 1] if _still_offered(offered[n - 1], flat) else _GONE
    plain = _plain(normal)
    if not plain:
        return None
    for value, label in flat:
        if _plain(label) == plain:
            return value
    return None


PART_SEPARATOR = " · "  # between the parts of an option's label: 住户1 · 幸福路1号


def _match_part(text: str, own: list[tuple[Any, str]]) -> Any | None:
    """The one option a typed part names: first a whole part of its label (the name in
    ``name · address``), else a piece of at least two characters of the label; None when no option
    or more than one has it."""
    plain = _plain(unicodedata.normalize("NFKC", text or "").strip()) if text and len(text) <= 60 else ""
    if len(plain) < 2:
        return None
    whole = [value for value, label in own if any(_plain(part) == plain for part in label.split(PART_SEPARATOR))]
    if len(whole) == 1:
        return whole[0]
    if whole:
        return None
    pieces = [value for value, label in own if plain in _plain(label)]
    return pieces[0] if len(pieces) == 1 else None


def clean_text(text: str, limit: int) -> str:
    """Free text as stored: control characters dropped, length checked, some real words required."""
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C").strip()
    if len(text) > limit:
        raise InputError(texts.TEXT_TOO_LONG.format(length=len(text), limit=limit))
    if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
        raise InputError(texts.TEXT_EMPTY)
    return text


def parse_location(text: str) -> Location | None:
    match = re.fullmatch(r"\s*(-?\d{1,2}(?:\.\d+)?)\s*[,，\s]\s*(-?\d{1,3}(?:\.\d+)?)\s*", text or "")
    if not match:
        return None
    lat, lon = float(match.group(1)), float(match.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return Location(lat, lon, note="typed")  # numbers anyone can type: kept, but no evidence
