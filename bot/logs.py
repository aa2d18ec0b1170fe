"""Logging for every command: plain lines for a terminal, or ``LOG_FORMAT=json`` (one JSON object a
line, via ``python-json-logger``) for a log collector.

JSON fields: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, plus ``exc_info`` when
a traceback is attached and any ``extra={...}`` the call gave (e.g. ``channel``, ``retry_in``).
Repeated failures (a messenger that cannot be reached) log one line per backoff step, never a
traceback per try: see handlers.telegram.
"""

from __future__ import annotations

import logging
import sys

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Chatter that would bury the console conversation or the operator's own lines.
NOISY = ("alembic", "httpx", "apscheduler", "telegram.ext.Updater", "telegram.ext._utils.networkloop")


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("{asctime}{levelname}{name}{message}", style="{", json_ensure_ascii=False,
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         datefmt="%Y-%m-%dT%H:%M:%S%z")


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> None:
    """Configures the root logger once for this process (replacing any handler already there)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if level.upper() != "DEBUG":
        for noisy in NOISY:
            logging.getLogger(noisy).setLevel(logging.WARNING)
