"""The error tree: every error this project raises on purpose, by who caused it and what follows.

Two kinds of people cause errors, and each kind meets them differently:

- a **user** (a cadre in chat, a citizen on the rating page, a request to a webhook) gets a clear
  answer where they are, and **nothing changes**;
- an **operator** (whoever sets the settings, hands files to the commands) is stopped by the
  command line with a Chinese message naming the setting or the file and the fix, **no
  traceback**: a wrong setting stops the program at start with exit code 2, a wrong file or
  argument given to one command stops that command with exit code 1 (nothing written).

A third branch is for services outside the machine that fail; they are retried or reported, and
they are nobody's input error. The tree (where each class lives; every name stays importable
from there, and each is re-exported here)::

    BotError                          everything raised on purpose
    ├── UserError                     answered where the user is; nothing changes
    │   ├── InputError                bot.core.dialogue: an answer a dialogue step does not accept
    │   ├── LedgerError               bot.core.ledger: a ledger action the rules refuse (台账 RULES)
    │   └── RequestRefused            a web request turned away with its HTTP ``status``
    │       ├── RatingRefused         handlers.web.Refused: the rating page, a page saying why
    │       └── WebhookRefused        handlers.wechat.crypto.Refused: bad signature, stale, too big, bad XML
    ├── OperatorError                 the CLI prints the message and exits with ``exit_code``
    │   ├── SettingsError             bot.config: a setting missing or wrong (exit 2, at start)
    │   │   └── SettingFileError      a file a setting names is missing, unreadable or malformed
    │   │       ├── SurveyFileError   bot.core.survey: SURVEY_FILE
    │   │       ├── HolidayFileError  bot.core.workdays: HOLIDAY_FILE
    │   │       └── FontNotFound      bot.fonts: CARD_FONT, or no Chinese font on the system
    │   └── CommandInputError         a file or argument given to one command is wrong (exit 1)
    │       ├── RosterError           bot.imports.roster: the roster's rows, every issue listed
    │       │   └── HotlineError      bot.imports.hotline: the hotline file's rows
    │       ├── CardError             bot.cards: the card filters or settings do not allow printing
    │       ├── QrLimitReached        handlers.wechat.account: WECHAT_QR_LIMIT would be passed
    │       └── CommandRefused        bot.reports.cli: a bad --half, --form or --unit
    └── ServiceError                  a service outside the machine failed
        └── WeChatApiError            handlers.wechat.api: WeChat's API answered an error

Not in the tree, on purpose: the engine's internal signals (``_Decline``, ``ConcurrentUpdate`` in
bot.core.engine) are control flow that never reaches a person, and pydantic's ``ValidationError``
from reading the settings, which ``settings_error`` turns into a ``SettingsError``, and
storage.crypto's ``DataKeyError`` (a phone number at rest that DATA_KEY does not open; storage may
not import this module), which the CLI reports as a settings error (exit 2).

This module imports nothing of the project, so any layer may raise its nodes. The leaves are
defined where they are raised; ``__getattr__`` below finds them by name on first use (importing
them here eagerly would pull the whole project into every import of this module).
"""

from __future__ import annotations

import importlib
import re


class BotError(Exception):
    """Any error this project raises on purpose."""


class UserError(BotError):
    """A user caused it: the message is their answer, shown where they are; nothing changed."""


class RequestRefused(UserError):
    """A web request that is turned away; ``status`` is the HTTP status to answer."""

    status: int = 400


class OperatorError(BotError):
    """The operator caused it: the command line prints the message (Chinese, naming the setting or
    file and the fix) without a traceback and exits with ``exit_code``."""

    exit_code: int = 2


class SettingsError(OperatorError, RuntimeError):
    """A setting is missing or wrong; the message names it and says how to fix it. Stops at start."""

    exit_code = 2


class SettingFileError(SettingsError):
    """A file a setting names (SURVEY_FILE, HOLIDAY_FILE, CARD_FONT) is missing, unreadable or
    malformed; the message names the setting, the file, where in it, and the fix."""


class CommandInputError(OperatorError):
    """A file or an argument given to one command is wrong; nothing was written. Exit code 1."""

    exit_code = 1


class ServiceError(BotError):
    """A service outside the machine (WeChat's API) answered with an error."""


# The leaves, by the name this module re-exports them under: (module, name there).
_LEAVES = {
    "InputError": ("bot.core.dialogue", "InputError"),
    "LedgerError": ("bot.core.ledger", "LedgerError"),
    "RatingRefused": ("handlers.web", "Refused"),
    "WebhookRefused": ("handlers.wechat.crypto", "Refused"),
    "SurveyFileError": ("bot.core.survey", "SurveyFileError"),
    "HolidayFileError": ("bot.core.workdays", "HolidayFileError"),
    "FontNotFound": ("bot.fonts", "FontNotFound"),
    "RosterError": ("bot.imports.roster", "RosterError"),
    "HotlineError": ("bot.imports.hotline", "HotlineError"),
    "CardError": ("bot.cards.job", "CardError"),
    "QrLimitReached": ("handlers.wechat.account", "QrLimitReached"),
    "CommandRefused": ("bot.reports.cli", "CommandRefused"),
    "WeChatApiError": ("handlers.wechat.api", "WeChatApiError"),
}

__all__ = ["BotError", "UserError", "RequestRefused", "OperatorError", "SettingsError", "SettingFileError",
           "CommandInputError", "ServiceError", "settings_error", *_LEAVES]


def __getattr__(name: str):
    """The leaves of the tree, imported from where they are defined when first asked for."""
    if name in _LEAVES:
        module, attribute = _LEAVES[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings_error(exc: Exception) -> SettingsError:
    """A ``SettingsError`` naming each setting pydantic refused, in the operator's words.

    pydantic's ValidationError names the field in lower case and explains in English; the operator
    wrote the setting in upper case in the environment or .env, so that is the name shown.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):  # pydantic-settings could not parse a value (a list or dict setting's JSON)
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1).upper() if field else "?"
        return SettingsError(f"设置 {name} 的值无法解析：列表和字典类的设置须写成 JSON，例如 [7, 3, 1, 0] 或 "
                             f"{{\"visit\": 10}}。请按 .env.example 中该项的说明改正，或删除该设置以使用默认值。")
    lines = []
    for error in errors():
        loc = error.get("loc") or ("?",)
        name = str(loc[0]).upper()
        value = error.get("input")
        shown = f"“{value}”" if isinstance(value, (str, int, float)) else ""
        lines.append(f"设置 {name} 的值{shown}不合要求（{error.get('msg', '')}）：请按 .env.example 中该项的说明改正，"
                     "或删除该设置以使用默认值。")
    return SettingsError("\n".join(lines) or str(exc))
