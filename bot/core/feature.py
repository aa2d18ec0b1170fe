"""What a feature is: the one declaration from which routing, help and every channel's menu derive.

A feature module (a flow such as 入户走访, or a one-shot command such as /progress) declares itself once
with a ``Feature``: its name (the command, ``/visit``), who may use it (the least role), the words that
start it when typed (走访), whether it takes long and only reads, its help line, its place in the menus,
and what runs it (a flow built from the settings, or a function of the context). The list of features is
``bot.core.features.FEATURES``: adding a feature is its module plus one line there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from storage.models import Role

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.core.dialogue import Context, Flow

# Least rank needed; a bound account of any role has rank >= 1.
RANK = {None: 0, Role.CADRE: 1, Role.SUPERVISOR: 2, Role.OFFICE: 2, Role.ADMIN: 3}  # 作风办 ranks as a supervisor


def rank(cadre) -> int:
    """How far a user reaches: 0 unbound, then by the bound cadre's role."""
    return RANK.get(cadre.role, 1) if cadre else 0


@dataclass(frozen=True)
class Menu:
    """A feature's place in the channels' menus: its label, and the group (submenu) it sits in."""

    label: str
    group: str | None = None


@dataclass(frozen=True)
class Feature:
    """One thing users can do, declared once.

    ``run`` (a one-shot command) or ``flow`` (a factory of the step-by-step flow, given the settings)
    says what runs it. ``role``: the least role that may use it (None: anyone, bound or not).
    ``words``: typed outside a flow, they start it as its command does (channels without a command
    menu). ``long``: it may take seconds (a unit's or the city's data, charts, files): never run on
    the event loop, and for a flow none of its steps either. ``reads_only``: a long command that
    writes nothing, so on SQLite it reads without the write lock (``bot.core.unit_of_work``).
    ``command``: False for a flow only the core starts (rating, from a card's deep link).
    ``help``: its line in /help (None: not listed). ``menu``: its place in the channels' menus.
    """

    name: str
    role: str | None
    title: str
    help: str | None = None
    words: tuple[str, ...] = ()
    run: Callable[["Context"], None] | None = None
    flow: Callable[["Settings"], "Flow"] | None = None
    long: bool = False
    reads_only: bool = False
    command: bool = True
    menu: Menu | None = None
    unbound_only: bool = False  # listed in /help only for users not bound to a cadre (/bind)

    def __post_init__(self):
        if (self.run is None) == (self.flow is None) and self.name not in CONTROL:
            raise ValueError(f"feature {self.name}: give exactly one of run and flow")
        if self.reads_only and (self.flow is not None or not self.long):
            raise ValueError(f"feature {self.name}: only a long one-shot command can be reads_only")
        if self.role not in RANK:
            raise ValueError(f"feature {self.name}: unknown role {self.role!r}")

    def allowed(self, cadre) -> bool:
        return rank(cadre) >= RANK[self.role]


# Commands that steer the dialogue itself (the router carries them out): declared as features too, so
# they have words, help lines and menu places like any other.
CONTROL = ("cancel", "resume")
