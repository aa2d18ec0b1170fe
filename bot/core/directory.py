"""The WeCom / 政务微信 directory (通讯录) matched to the roster: binding without codes.

``WeComMember`` (storage.models) is one member of the organisation's directory as ``python -m bot
wecom-sync`` last read it (within the app's visible range): userid, name, mobile where the
directory shows it, and the cadre whose roster mobile matched. ``save_directory`` writes what a
sync read and binds each matched member's userid to the cadre (a ``ChatAccount`` on channel
"wecom", bound_by "wecom", with an audit row), so a cadre who opens the app is known without a
binding code. It changes nothing in the roster; members without a mobile bind with a code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

from sqlmodel import Session, select

from bot.core import binding
from bot.core.phones import normalize_mobile
from storage import audit
from storage.models import Cadre, ChatAccount, Unit, WeComMember

CHANNEL = "wecom"


@dataclass(frozen=True)
class DirectoryMember:
    """One member as the directory API gives them."""

    userid: str
    name: str
    mobile: str | None
    departments: tuple[str, ...] = ()


@dataclass
class SyncReport:
    """What a sync found: who matched, who is only in the roster, who only in the directory."""

    matched: list[tuple[str, str, str]] = field(default_factory=list)  # (cadre name, unit, userid)
    roster_only: list[tuple[str, str]] = field(default_factory=list)  # (cadre name, unit)
    directory_only: list[tuple[str, str]] = field(default_factory=list)  # (member name, userid)
    no_mobile: list[tuple[str, str]] = field(default_factory=list)  # (member name, userid): 绑定码 as fallback
    bound: int = 0  # accounts newly bound (or moved to this userid)


def save_directory(session: Session, members: Iterable[DirectoryMember], now: datetime) -> SyncReport:
    """Stores the members read, matches them to active cadres by mobile and binds the matched ones
    (each new binding in the audit log)."""
    cadres = {c.mobile: c for c in session.exec(select(Cadre).where(Cadre.active == True)).all()}  # noqa: E712
    units = {u.id: u.name for u in session.exec(select(Unit)).all()}
    accounts = {a.external_user_id: a for a in session.exec(select(ChatAccount)
                                                            .where(ChatAccount.channel == CHANNEL)).all()}
    report = SyncReport()
    seen_cadres: set[int] = set()
    for member in members:
        mobile = normalize_mobile(member.mobile or "") if member.mobile else None
        cadre = cadres.get(mobile) if mobile else None
        row = session.get(WeComMember, member.userid)
        if row is None:
            row = WeComMember(userid=member.userid, name=member.name[:64], synced_at=now)
        row.name, row.mobile, row.synced_at = member.name[:64], mobile, now
        row.departments = "、".join(member.departments)[:300]
        row.cadre_id = cadre.id if cadre else None
        session.add(row)
        if cadre is None:
            (report.directory_only if mobile else report.no_mobile).append((member.name, member.userid))
            continue
        seen_cadres.add(cadre.id)
        report.matched.append((cadre.name, units.get(cadre.unit_id, ""), member.userid))
        account = accounts.get(member.userid)
        if account is None or account.cadre_id != cadre.id:
            binding.bind(session, cadre, CHANNEL, member.userid, "wecom", now)
            audit.record(session, at=now, actor="cli:wecom-sync", action="binding.directory",
                         target=f"cadre:{cadre.id}", channel=CHANNEL, detail=f"userid {member.userid}, mobile matched")
            report.bound += 1
    for cadre in cadres.values():
        if cadre.id not in seen_cadres:
            report.roster_only.append((cadre.name, units.get(cadre.unit_id, "")))
    report.roster_only.sort(key=lambda item: (item[1], item[0]))
    return report
