"""Console channel: talk to the core in a terminal, no messenger account needed.

The local operator is trusted: the console user is bound to the cadre whose mobile is given
(``--as``), by default the first cadre of the roster. Options are shown numbered, and answered
with the number or the words. ``:photo NAME``, ``:location LAT,LON`` and ``:contact PHONE`` stand
in for what a phone would send; ``:quit`` leaves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

from bot.core import binding
from bot.core.dialogue import parse_location
from bot.core.engine import Engine
from bot.core.types import File, Inbound, SharedContact
from storage.models import Cadre

CHANNEL = "console"


def console_login(core: Engine, mobile: str | None) -> Cadre | None:
    """Binds the console user to a cadre (the given mobile, or the first cadre) and returns it."""
    return asyncio.run(core.run(binding.bind_console, CHANNEL, "local", mobile, core.clock()))


def parse_line(line: str) -> Inbound | None:
    """What a typed line means; None for an empty line."""
    line = line.strip()
    # Options are numbered lines here, and a phone is shared by typing it (:contact).
    base = {"channel": CHANNEL, "user_id": "local", "buttons": False, "share_contact": False}
    if not line:
        return None
    if line.startswith(":photo"):
        return Inbound(photo_ref="console:" + (line[6:].strip() or "photo"), **base)
    if line.startswith(":location"):
        location = parse_location(line[9:])
        return Inbound(location=location, **base) if location else Inbound(text=line[9:].strip(), **base)
    if line.startswith(":contact"):
        return Inbound(contact=SharedContact(line[8:].strip(), "local"), **base)
    if line.startswith("/"):
        head, _, args = line[1:].partition(" ")
        return Inbound(command=head.lower(), args=args.strip(), **base)
    return Inbound(text=line, **base)


def save_file(file: File, folder: Path = Path("exports")) -> Path:
    """Writes a file the bot sent into ./exports (the console cannot show it) and returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(file.filename).name
    path.write_bytes(file.content)
    return path


def run_console(core: Engine, mobile: str | None = None, *, read: Callable[[str], str] = input,
                write: Callable[[str], None] = print) -> int:
    cadre = console_login(core, mobile)
    if cadre is None:
        write(f"花名册中没有{'手机号为 ' + mobile + ' 的' if mobile else '可用的'}干部，请先导入花名册。")
        return 1
    write(f"控制台渠道：已以 {cadre.name}（{cadre.mobile}）身份登录。输入 /help 查看命令，:quit 退出。")
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            write("")
            return 0
        if line.strip() in (":quit", ":q", ":exit"):
            return 0
        inbound = parse_line(line)
        if inbound is None:
            continue
        for reply in asyncio.run(core.dispatch(inbound)).replies:
            write(reply.numbered_text())
            for file in reply.files:
                write(f"（文件已保存：{save_file(file)}）")
            write("")
