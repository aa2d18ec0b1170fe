"""Operator actions on the Official Account: permanent scene QR codes for evaluation cards, the menu.

``create_scene_codes`` gives each chosen cadre or window a permanent QR code (QR_LIMIT_STR_SCENE)
whose scene string is its evaluation token, so a scan starts the rating in chat; the ticket and
the URL WeChat returns are saved, and a target whose current token has a code already is skipped
(WeChat allows 100,000 permanent codes per account, WECHAT_QR_LIMIT, and never takes one back).
A revoked card has a new token and so gets a new code. ``MENU`` is the custom menu: click events
whose keys the channel maps to commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import func
from sqlmodel import Session, select

from bot import texts
from bot.config import Settings
from bot.core import evaluation
from bot.core.features import REGISTRY
from bot.errors import CommandInputError
from handlers.wechat.api import WeChatApi
from storage.db import session_scope
from storage.models import WeChatQrCode

SCENE_MAX = 64  # WeChat's limit for scene_str
SHOW_QR_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket={ticket}"  # the QR image for a ticket

def menu_buttons(registry=REGISTRY) -> list[dict]:
    """The custom menu in WeChat's format, derived from the features' menu places: a feature alone
    is a click button keyed by its name, several in one group are a submenu."""
    buttons = []
    for label, features in registry.menu_tree():
        clicks = [{"type": "click", "name": f.menu.label, "key": f.name} for f in features]
        if len(clicks) == 1 and features[0].menu.group is None:
            buttons.append(clicks[0])
        else:
            buttons.append({"name": label, "sub_button": clicks})
    return buttons


MENU = menu_buttons()


class QrLimitReached(CommandInputError):
    """Creating the codes asked for would pass WECHAT_QR_LIMIT."""


@dataclass(frozen=True)
class SceneCode:
    name: str
    unit: str
    scene: str
    ticket: str
    url: str
    created: bool  # False: it existed already


def create_scene_codes(db, api: WeChatApi, settings: Settings, targets: Callable[[Session], list],
                       now: datetime, *, progress: Callable[[SceneCode], None] | None = None) -> list[SceneCode]:
    """One permanent scene QR code per target (kind, row) that has none for its current token."""
    with session_scope(db) as session:
        wanted = []
        for kind, row in targets(session):
            target = evaluation.target_of(session, evaluation.code_for(session, kind, row.id, now))
            if target is not None:
                wanted.append(target)
        tokens = [evaluation.token_of(settings.evaluation_key, t) for t in wanted]
        existing = {row.scene: row for row in session.exec(select(WeChatQrCode)
                                                           .where(WeChatQrCode.scene.in_(tokens))).all()}
        used = session.exec(select(func.count()).select_from(WeChatQrCode)).one()
    missing = sum(1 for token in tokens if token not in existing)
    if used + missing > settings.wechat_qr_limit:
        raise QrLimitReached(f"已创建 {used} 个永久二维码，再建 {missing} 个将超过上限 {settings.wechat_qr_limit}"
                             "（WECHAT_QR_LIMIT）。请缩小范围（--unit / --cadre / --window）。")
    out = []
    for target, token in zip(wanted, tokens):
        assert len(token) <= SCENE_MAX
        row = existing.get(token)
        if row is None:
            # One code, one transaction: a failure later keeps the codes made so far (WeChat keeps them too).
            data = api.create_scene_qr(token)
            with session_scope(db) as session:
                row = WeChatQrCode(scene=token, code_id=target.code_id, ticket=str(data.get("ticket", ""))[:200],
                                   url=str(data.get("url", ""))[:200], created_at=now)
                session.add(row)
        code = SceneCode(target.name, target.unit, token, row.ticket, row.url, created=token not in existing)
        out.append(code)
        if progress is not None:
            progress(code)
    return out
