"""Operator actions on the WeCom app: the directory sync (通讯录同步) and the app's menu.

``sync_directory`` reads the departments and members within the app's visible range
(department/list, user/list_id, user/get), hands them to ``bot.core.directory.save_directory``, which
matches them to the roster's cadres by mobile and binds the matched members (no binding code),
and returns the report: matched, in the roster only, in the directory only, without a mobile
(the directory shows mobiles only to apps allowed to see them; those members bind with a code).

``menu_from_features`` builds the app's menu (at most 3 buttons of at most 5 entries, click keys =
feature names) from the features' menu places (bot.core.features), as the WeChat menu has them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable

from sqlalchemy.engine import Engine as DbEngine

from bot import texts
from bot.core.features import REGISTRY
from handlers.wecom.api import WeComApi
from storage.db import session_scope
from bot.core.directory import DirectoryMember, SyncReport, save_directory

MENU_BUTTONS, MENU_ENTRIES, MENU_NAME_BYTES = 3, 5, 16  # WeCom's menu limits (a name: 8 Chinese characters)


def menu_from_features(features: Iterable[tuple[str, str, str]] | None = None) -> list[dict]:
    """The app's menu: ``features`` are (group, command, name) in order; by default the features' menu
    places (bot.core.features), as the WeChat menu has them."""
    if features is None:
        features = [(label, f.name, f.menu.label) for label, items in REGISTRY.menu_tree() for f in items]
    groups: dict[str, list[dict]] = {}
    for group, command, name in features:
        entries = groups.setdefault(group, [])
        if len(entries) < MENU_ENTRIES:
            entries.append({"type": "click", "name": _fit(name), "key": command})
    menu = []
    for group, entries in list(groups.items())[:MENU_BUTTONS]:
        if len(entries) == 1:
            menu.append(entries[0])
        else:
            menu.append({"name": _fit(texts.WECOM_MENU_GROUPS.get(group, group)), "sub_button": entries})
    return menu


def _fit(name: str) -> str:
    """A menu name within WeCom's 16 bytes."""
    while len(name.encode()) > MENU_NAME_BYTES:
        name = name[:-1]
    return name


def read_directory(api: WeComApi, progress: Callable[[int], None] | None = None) -> list[DirectoryMember]:
    """Every member within the app's visible range, with department names and mobile where shown."""
    departments = {int(d["id"]): str(d.get("name", "")) for d in api.departments()}
    members = []
    for userid in api.member_ids():
        data = api.member(userid)
        names = tuple(departments.get(int(d), str(d)) for d in data.get("department") or [])
        members.append(DirectoryMember(userid=userid, name=str(data.get("name") or userid),
                                       mobile=str(data.get("mobile") or "") or None, departments=names))
        if progress is not None:
            progress(len(members))
    return members


def sync_directory(db: DbEngine, api: WeComApi, now: datetime) -> tuple[int, SyncReport]:
    """Reads the directory and stores it, matched to the roster; (members read, the report)."""
    members = read_directory(api)
    with session_scope(db) as session:
        return len(members), save_directory(session, members, now)


def report_lines(count: int, report: SyncReport) -> list[str]:
    """The sync's report as printed by ``python -m bot wecom-sync``."""
    lines = [texts.WECOM_SYNC_HEADER.format(members=count, matched=len(report.matched), bound=report.bound)]
    sections = [(texts.WECOM_SYNC_MATCHED, [f"  {unit} {name}（{userid}）" for name, unit, userid in report.matched]),
                (texts.WECOM_SYNC_ROSTER_ONLY, [f"  {unit} {name}" for name, unit in report.roster_only]),
                (texts.WECOM_SYNC_DIRECTORY_ONLY, [f"  {name}（{userid}）" for name, userid in report.directory_only]),
                (texts.WECOM_SYNC_NO_MOBILE, [f"  {name}（{userid}）" for name, userid in report.no_mobile])]
    for title, items in sections:
        if items:
            lines.append(title)
            lines.extend(items)
    return lines
