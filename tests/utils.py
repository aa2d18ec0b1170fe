"""Builders of test data and a scripted chat against the core; shared by the test modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bot.core.engine import Engine
from bot.core.types import Inbound, Location, Outcome, Reply, SharedContact
from storage.db import session_scope, utcnow
from storage.models import Cadre, ChatAccount, Household, Role, ServiceObject, ServiceWindow, Unit, WindowDuty


@dataclass
class Roster:
    unit: Unit
    cadre: Cadre
    supervisor: Cadre
    admin: Cadre
    households: list[Household] = field(default_factory=list)


def make_roster(db, *, households: int = 3, objects: int = 10, village: bool = False) -> Roster:
    """One unit with a cadre (with households and service objects), a supervisor and an admin."""
    with session_scope(db) as s:
        unit = Unit(name="市住建局", kind="市直部门")
        s.add(unit)
        s.flush()
        cadre = Cadre(name="李明", unit_id=unit.id, mobile="13800000003", role=Role.CADRE)
        supervisor = Cadre(name="王芳", unit_id=unit.id, mobile="13800000002", role=Role.SUPERVISOR)
        admin = Cadre(name="赵强", unit_id=unit.id, mobile="13800000001", role=Role.ADMIN)
        s.add_all([cadre, supervisor, admin])
        s.flush()
        hs = [Household(address=f"幸福路{i + 1}号", name=f"住户{i + 1}", phone=f"1390000000{i}",
                        area_kind="村" if village else "居", area_name="幸福社区", cadre_id=cadre.id)
              for i in range(households)]
        s.add_all(hs)
        s.add_all([ServiceObject(name=f"对象{i}", workplace=f"某企业{i}", phone=f"1370000{i:04d}", cadre_id=cadre.id,
                                 unit_id=unit.id) for i in range(objects)])
        s.flush()
        return Roster(unit, cadre, supervisor, admin, hs)


def rows(db, model) -> list:
    """Every row of the table of ``model``, as the database holds it now."""
    from sqlmodel import select

    with session_scope(db) as s:
        return list(s.exec(select(model)).all())


def bind(db, cadre: Cadre, channel: str, user_id: str, now: datetime) -> None:
    with session_scope(db) as s:
        s.add(ChatAccount(channel=channel, external_user_id=user_id, cadre_id=cadre.id, bound_at=now, bound_by="code"))


class Chat:
    """A user talking to the core, as a dialogue table would: say something, read the answer."""

    def __init__(self, core: Engine, user_id: str = "u1", channel: str = "test"):
        self.core, self.user_id, self.channel = core, user_id, channel
        self.last: Reply | None = None  # the newest reply that carried options
        self.outcomes: list[Outcome] = []

    def _send(self, **kwargs) -> str:
        outcome = self.core.handle(Inbound(channel=self.channel, user_id=self.user_id, **kwargs))
        self.outcomes.append(outcome)
        for reply in outcome.replies:
            if reply.options:
                self.last = reply
        return "\n".join(r.text for r in outcome.replies)

    def say(self, text: str) -> str:
        if text.startswith("/"):
            command, _, args = text[1:].partition(" ")
            return self._send(command=command, args=args)
        return self._send(text=text)

    def press(self, label: str, reply: Reply | None = None) -> str:
        """Presses the button whose label contains ``label`` on the newest (or given) message."""
        reply = reply or self.last
        matches = [o for o in reply.flat_options() if label in o.label]
        assert matches, f"no button {label!r} in {[o.label for o in reply.flat_options()]}"
        return self._send(token=matches[0].token)

    def token(self, token: str) -> str:
        return self._send(token=token)

    def labels(self) -> list[str]:
        return [o.label for o in self.last.flat_options()] if self.last else []

    def photo(self, ref: str) -> str:
        return self._send(photo_ref=ref)

    def location(self, lat: float, lon: float) -> str:
        return self._send(location=Location(lat, lon))

    def contact(self, phone: str, user_id: str | None = None) -> str:
        return self._send(contact=SharedContact(phone=phone, user_id=user_id))


def make_window(db, roster: Roster, *, name: str = "不动产登记窗口", on_duty: list[Cadre] = ()) -> ServiceWindow:
    """A service window of the roster's unit with the given cadres on duty."""
    with session_scope(db) as s:
        window = ServiceWindow(name=name, unit_id=roster.unit.id)
        s.add(window)
        s.flush()
        s.add_all([WindowDuty(window_id=window.id, cadre_id=c.id) for c in on_duty])
        return window


def token_for(db, settings, kind: str, target_id: int) -> str:
    """The current evaluation token of a cadre or window (issuing its code if it has none)."""
    from bot.core import evaluation

    with session_scope(db) as s:
        code = evaluation.code_for(s, kind, target_id, utcnow())
        return evaluation.make_token(settings.evaluation_key, code.id, code.version)


def make_visit(db, cadre: Cadre, household: Household, at: datetime, half: str | None = None) -> int:
    """A completed four-ones visit of ``household`` by ``cadre`` at ``at`` (half-year from the date)."""
    from zoneinfo import ZoneInfo

    from bot.core.periods import half_of
    from storage.models import Visit

    with session_scope(db) as s:
        visit = Visit(cadre_id=cadre.id, household_id=household.id, half=half or half_of(at, ZoneInfo("Asia/Shanghai")),
                      visited_at=at, card_left=True, survey={}, leaflet_given=True, channel="test")
        s.add(visit)
        s.flush()
        return visit.id


def make_rating(db, cadre: Cadre, level: int, at: datetime, *, misuse: bool = False, n: int = 0) -> None:
    """One citizen rating of ``cadre`` (``n`` tells apart raters of the same moment)."""
    from bot.core.evaluation import code_for
    from storage.models import Rating, TargetKind

    with session_scope(db) as s:
        code = code_for(s, TargetKind.CADRE, cadre.id, at)
        s.add(Rating(code_id=code.id, target_kind=TargetKind.CADRE, cadre_id=cadre.id, unit_id=cadre.unit_id,
                     level=level, channel="web", rater_key=f"r{cadre.id}-{at.timestamp()}-{level}-{n}-{misuse}",
                     rated_at=at, rated_on=at.date().isoformat(), misuse=misuse))


def make_problem(db, at: datetime, **fields) -> int:
    """A ledger item recorded at ``at``; ``fields`` are Problem's columns (source, category, content default)."""
    from storage.models import Problem

    values = {"source": "visit", "category": "城建", "content": "路灯不亮", "created_at": at, "updated_at": at, **fields}
    with session_scope(db) as s:
        problem = Problem(**values)
        s.add(problem)
        s.flush()
        return problem.id


def free_port() -> int:
    """A loopback port nothing listens on now (for a server started in another process)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process, timeout: float = 10.0) -> None:
    """Stops a process started by a test as an operator would (SIGTERM), killing it if it lingers."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_for(predicate, timeout: float = 15.0) -> bool:
    """Polls ``predicate`` until it holds (True) or the time is up (False): for what a worker does
    on its own schedule, which no reply signals."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
