"""The feature list: one declaration per feature, and everything derived from it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import texts
from bot.core.feature import Feature, Menu
from bot.core.features import FEATURES, REGISTRY, Registry
from bot.core.types import Inbound
from handlers.telegram import bot_commands
from handlers.wechat.account import menu_buttons
from storage.models import Role
from tests.utils import Chat, bind, make_roster


def test_every_word_of_every_feature_starts_it(core, db, clock):
    roster = make_roster(db)
    bind(db, roster.admin, "test", "u1", clock())
    for feature in FEATURES:
        for word in feature.words:
            if feature.name in ("cancel", "resume", "start"):
                continue
            chat = Chat(core)
            answer = chat.say(word)
            assert texts.UNKNOWN_INPUT not in answer, (word, answer)
            chat.say("/cancel")


def test_help_lists_each_feature_a_user_may_use_and_no_other(core, db, clock):
    roster = make_roster(db)
    for cadre in (roster.cadre, roster.supervisor, roster.admin, None):
        text = REGISTRY.help_text(cadre)
        for feature in FEATURES:
            if feature.help is None:
                continue
            shown = feature.allowed(cadre) and feature.command and not (feature.unbound_only and cadre)
            assert (feature.help in text) == shown, (cadre and cadre.role, feature.name)


def test_a_new_feature_is_one_declaration(core, db, clock, monkeypatch):
    """Declared and listed: routed by its command and its word, in /help, in the menus, role checked."""
    said = []
    extra = Feature("weather", Role.SUPERVISOR, "天气", help="/weather — 今日天气", words=("天气",),
                    run=lambda ctx: said.append(ctx.say("晴")), menu=Menu("天气", group="走访"))
    registry = Registry(FEATURES[:-1] + (extra, FEATURES[-1]))
    monkeypatch.setattr(core.router, "registry", registry)
    roster = make_roster(db)
    bind(db, roster.supervisor, "test", "boss", clock())
    bind(db, roster.cadre, "test", "cadre", clock())
    assert Chat(core, "boss").say("/weather") == "晴" and Chat(core, "boss").say("天气") == "晴"
    assert Chat(core, "cadre").say("/weather") == texts.ROLE_FORBIDDEN.format(command="weather", role="主管（作风办）")
    assert "/weather — 今日天气" in registry.help_text(roster.supervisor)
    assert "weather" in [name for name, _d in registry.commands_for(Role.SUPERVISOR, bound=True)]
    assert "weather" not in [name for name, _d in registry.commands_for(Role.CADRE, bound=True)]
    assert {"type": "click", "name": "天气", "key": "weather"} in menu_buttons(registry)[0]["sub_button"]


def test_mistakes_in_declarations_stop_at_import():
    with pytest.raises(ValueError, match="claimed by"):
        Registry(FEATURES + (Feature("walk", None, "走", words=("走访",), run=lambda ctx: None),))
    with pytest.raises(ValueError, match="declared twice"):
        Registry(FEATURES + (replace(FEATURES[0]),))
    with pytest.raises(ValueError, match="more than"):
        Registry(FEATURES + tuple(Feature(f"x{i}", None, "x", menu=Menu(f"菜单{i}"), run=lambda ctx: None)
                                  for i in range(3)))
    with pytest.raises(ValueError, match="exactly one"):
        Feature("both", None, "x")


def test_the_menus_come_from_the_features():
    assert menu_buttons() == [
        {"name": "走访", "sub_button": [{"type": "click", "name": "入户走访", "key": "visit"},
                                      {"type": "click", "name": "日常走访", "key": "contact"}]},
        {"type": "click", "name": "我的进度", "key": "progress"},
        {"type": "click", "name": "帮助", "key": "help"}]
    everyone = [c.command for c in bot_commands(None, bound=False)]
    assert everyone == ["bind", "report", "mine", "status", "cancel", "help"]
    admin = [c.command for c in bot_commands(Role.ADMIN, bound=True)]
    assert "bindcode" in admin and "bind" not in admin and "export" in admin


def test_long_features_are_never_run_on_the_event_loop(core):
    for feature in FEATURES:
        inbound = Inbound("test", "u", command=feature.name)
        assert core.router.is_long(inbound) == feature.long
        if feature.long:
            assert core.handle_now(inbound) is None
