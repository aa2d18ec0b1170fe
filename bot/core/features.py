"""The list of features, and everything derived from it: routing tables, /help, the channels' menus.

Each feature module declares its ``Feature`` (bot/core/feature.py); this list names them, one line
each, in the order /help and the menus show them. Nothing else lists commands: the router, /help,
Telegram's command menu (per role), the WeChat and WeCom menus all read the ``Registry`` built here,
and a mistake in a declaration (a word claimed twice, a name reused, a menu too big for WeChat) stops
the program at import, not when a user stumbles on it.
"""

from __future__ import annotations

from bot import texts
from bot.core import commands
from bot.core.feature import CONTROL, RANK, Feature, rank
from bot.core.flows import appeal, contact, ledger, rating, service_object, spotcheck, visit
from bot.core import appeals, evaluation, evidence_views, login, rating_views, service_qr
from bot.reports import commands as reports

FEATURES: tuple[Feature, ...] = (
    commands.START,
    commands.BIND,
    visit.FEATURE,
    contact.FEATURE,
    commands.PROGRESS,
    service_object.FEATURE,
    ledger.TODO,
    ledger.REPORT,
    ledger.MINE,
    evaluation.STATUS,
    service_qr.SERVICE_QR,
    appeal.FEATURE,
    commands.UNIT,
    commands.MUTE,
    commands.UNMUTE,
    ledger.LEDGER,
    rating_views.RATINGS,
    rating_views.CALLBACKS,
    appeals.APPEALS,
    reports.EXPORT,
    reports.RANKING,
    spotcheck.FEATURE,
    evidence_views.FLAGS,
    commands.BINDCODE,
    login.LOGIN,
    rating.FEATURE,
    commands.CANCEL,
    commands.RESUME,
    commands.HELP,
)

# WeChat's custom menu: at most 3 buttons, each with at most 5 in its submenu.
MENU_TOP, MENU_SUB = 3, 5


class Registry:
    """The features, looked up by name and by the words that start them."""

    def __init__(self, features: tuple[Feature, ...]):
        self.features = features
        self.by_name: dict[str, Feature] = {}
        self.words: dict[str, str] = {}
        for feature in features:
            if feature.name in self.by_name:
                raise ValueError(f"feature {feature.name} declared twice")
            self.by_name[feature.name] = feature
            for word in feature.words:
                if word in self.words:
                    raise ValueError(f"word {word!r} claimed by {self.words[word]} and {feature.name}")
                self.words[word] = feature.name
        for name in CONTROL:
            if name not in self.by_name:
                raise ValueError(f"the control command {name} is not declared")
        self.menu_tree()  # refuses a menu WeChat could not show

    def __iter__(self):
        return iter(self.features)

    def get(self, name: str) -> Feature | None:
        return self.by_name.get(name)

    def command_of(self, text: str | None) -> tuple[str, str] | None:
        """The feature a typed text starts by its first word (``走访``), and the rest: (name, args)."""
        if not text:
            return None
        word, _, rest = text.strip().partition(" ")
        name = self.words.get(word)
        return (name, rest.strip()) if name is not None else None

    # -- derived views -------------------------------------------------------------------------

    def available(self, cadre) -> list[Feature]:
        """The features this user may start, in the declared order."""
        return [f for f in self.features if f.command and f.allowed(cadre) and not (f.unbound_only and cadre)]

    def help_text(self, cadre) -> str:
        """/help: a line for every feature this user may use."""
        lines = [f.help for f in self.available(cadre) if f.help]
        return "\n".join([texts.HELP_HEADER, *lines])

    def commands_for(self, role: str | None, *, bound: bool) -> list[tuple[str, str]]:
        """(command, description) for a messenger's command menu, for users of ``role``."""
        reach = RANK[role] if bound else 0
        return [(f.name, f.help.split(" — ", 1)[-1][:256]) for f in self.features
                if f.command and RANK[f.role] <= reach and not (f.unbound_only and bound) and f.help]

    def menu_tree(self) -> list[tuple[str, list[Feature]]]:
        """The channels' menus: (label, features) in declared order; one feature is a button of its own,
        several sharing a group are a submenu under the group's label."""
        tree: list[tuple[str, list[Feature]]] = []
        for feature in self.features:
            if feature.menu is None:
                continue
            group = feature.menu.group
            for label, items in tree:
                if group is not None and label == group:
                    items.append(feature)
                    break
            else:
                tree.append((group or feature.menu.label, [feature]))
        if len(tree) > MENU_TOP or any(len(items) > MENU_SUB for _label, items in tree):
            raise ValueError(f"the menu has more than {MENU_TOP} buttons or {MENU_SUB} in a submenu")
        return tree

    def menu_keys(self) -> frozenset[str]:
        """The feature names a menu click may carry."""
        return frozenset(f.name for _label, items in self.menu_tree() for f in items)


REGISTRY = Registry(FEATURES)

__all__ = ["FEATURES", "REGISTRY", "Registry", "rank"]
