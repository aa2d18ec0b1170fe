"""The card job behind ``python -m bot qr-cards``: which cards, their codes, and the batch run.

Choosing the cards issues an evaluation code to every chosen cadre or window that has none yet
(inside the caller's transaction). Cards are printed only for people who serve the public: not for
an admin or a 作风办 member unless the roster has them serving (``serves_public``). Drawing them is
CPU work, so a large batch is spread over the processor's cores (one process each; PNG bytes come back for the PDF) with a progress bar.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session, select
from tqdm import tqdm

from bot import texts
from bot.cards.render import CardSpec, render_card
from bot.cards.sheet import PER_PAGE, write_sheets
from bot.config import Settings
from bot.core import evaluation
from bot.core.phones import normalize_mobile
from bot.errors import CommandInputError
from storage.models import Cadre, Household, Role, ServiceWindow, TargetKind, Unit, WeChatQrCode, WindowDuty

PDF_NAME = "评价卡-A4.pdf"
PARALLEL_FROM = 48  # below this, starting worker processes costs more than it saves
CHUNK = 2 * PER_PAGE
_UNSAFE = re.compile(r"[^\w\u3400-\u9fff-]+")


class CardError(CommandInputError):
    """The filters or settings do not allow printing; the message says what to change."""


def payload_for(settings: Settings, token: str, encode: str) -> str:
    """What a card's QR code says: the rating page's address, or the Telegram deep link."""
    if encode == "telegram":
        if not settings.telegram_bot_username:
            raise CardError("二维码设为 Telegram 链接（--encode telegram），但未设置 TELEGRAM_BOT_USERNAME。")
        return f"https://t.me/{settings.telegram_bot_username.lstrip('@')}?start={token}"
    return f"{settings.public_url}/r/{token}"


def _wechat_url(session: Session, token: str, name: str) -> str:
    """The content of the target's permanent WeChat scene QR code, made by ``python -m bot wechat-qr``."""
    code = session.exec(select(WeChatQrCode).where(WeChatQrCode.scene == token)).first()
    if code is None:
        raise CardError(f"{name} 还没有当前评价码的微信二维码：请先运行 python -m bot wechat-qr（同样的筛选条件）。")
    return code.url


def _filename(kind: str, target_id: int, name: str) -> str:
    return f"{'干部' if kind == TargetKind.CADRE else '窗口'}-{target_id:04d}-{_UNSAFE.sub('_', name)[:40]}.png"


def _active(session: Session, model, unit: Unit | None, *conditions) -> list:
    """Active rows of ``model`` (cadres or windows) meeting the conditions, of ``unit`` if given."""
    query = select(model).where(model.active == True, *conditions)  # noqa: E712
    if unit is not None:
        query = query.where(model.unit_id == unit.id)
    return list(session.exec(query.order_by(model.unit_id, model.id)).all())


def find_targets(session: Session, *, unit: str | None = None, cadre: str | None = None,
                 window: str | None = None) -> list[tuple[str, Cadre | ServiceWindow]]:
    """(kind, row) for what the filters choose, in unit order: every active cadre and window by
    default; with ``cadre`` (mobile or name) or ``window`` (name) just those; ``unit`` narrows any."""
    unit_row = None
    if unit:
        unit_row = session.exec(select(Unit).where(Unit.name == unit.strip())).first()
        if unit_row is None:
            raise CardError(f"没有名为“{unit}”的单位。")
    found: list[tuple[str, Cadre | ServiceWindow]] = []
    if cadre or not window:
        mobile = normalize_mobile(cadre) if cadre else None
        match = [Cadre.mobile == mobile if mobile else Cadre.name == cadre.strip()] if cadre else []
        cadres = _active(session, Cadre, unit_row, *match)
        if cadre and not cadres:
            raise CardError(f"花名册中没有在册的干部“{cadre}”（可填手机号或姓名）。")
        found += [(TargetKind.CADRE, row) for row in cadres]
    if window or not cadre:
        windows = _active(session, ServiceWindow, unit_row, *([ServiceWindow.name == window.strip()] if window else []))
        if window and not windows:
            raise CardError(f"没有在用的窗口“{window}”。")
        found += [(TargetKind.WINDOW, row) for row in windows]
    return found


def serves_public(session: Session, cadre: Cadre) -> bool:
    """Whether a card is printed for this person: cadres and unit supervisors serve the public; an
    admin or 作风办 member only when the roster has them serving (households assigned, or on duty at a
    window)."""
    if cadre.role not in (Role.ADMIN, Role.OFFICE):
        return True
    on_duty = session.exec(select(WindowDuty).where(WindowDuty.cadre_id == cadre.id)).first()
    households = session.exec(select(Household.id).where(Household.cadre_id == cadre.id,
                                                         Household.active == True)).first()  # noqa: E712
    return on_duty is not None or households is not None


def card_specs(session: Session, settings: Settings, now: datetime, *, unit: str | None = None,
               cadre: str | None = None, window: str | None = None, encode: str = "web") -> list[CardSpec]:
    """The cards the filters choose (see ``find_targets``), issuing codes to targets that have none."""
    specs = []
    key = settings.evaluation_key
    found = find_targets(session, unit=unit, cadre=cadre, window=window)
    serving = [(kind, row) for kind, row in found if kind != TargetKind.CADRE or serves_public(session, row)]
    if cadre and found and not serving:
        raise CardError(texts.CARD_NOT_SERVING.format(name=found[0][1].name,
                                                      role=texts.ROLE_NAMES.get(found[0][1].role, "")))
    for kind, row in serving:
        target = evaluation.target_of(session, evaluation.code_for(session, kind, row.id, now))
        if target is None:
            continue
        duties = "、".join(target.on_duty) if kind == TargetKind.WINDOW else target.duties
        specs.append(CardSpec(
            filename=_filename(kind, row.id, target.name),
            payload=_wechat_url(session, evaluation.token_of(key, target), target.name) if encode == "wechat"
            else payload_for(settings, evaluation.token_of(key, target), encode),
            kind=kind, name=target.name, unit=target.unit, post=target.post, duties=duties or None,
            serial=f"No.{target.code_id}-{target.version}",
            issuer=settings.issuer_name, supervision_phone=settings.supervision_phone))
    return specs


def _render_chunk(specs: list[CardSpec], font_path: str, out_dir: str) -> list[bytes]:
    """Draws and writes some cards (in a worker process); returns their PNG bytes for the PDF."""
    pngs = []
    for spec in specs:
        png = render_card(spec, font_path)
        (Path(out_dir) / spec.filename).write_bytes(png)
        pngs.append(png)
    return pngs


@dataclass
class CardsWritten:
    pngs: list[Path]
    pdf: Path
    pages: int


def write_cards(specs: list[CardSpec], out_dir: str | Path, font_path: str | Path, *, progress: bool = True,
                workers: int | None = None) -> CardsWritten:
    """Writes one PNG per card and the A4 PDF into ``out_dir``; parallel when the batch is large."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [specs[i:i + CHUNK] for i in range(0, len(specs), CHUNK)]
    workers = workers or os.cpu_count() or 1
    pngs: list[bytes] = []
    with tqdm(total=len(specs), desc="印制评价卡", unit="张", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        if workers > 1 and len(specs) >= PARALLEL_FROM:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_render_chunk, chunk, str(font_path), str(out)) for chunk in chunks]
                for future, chunk in zip(futures, chunks):  # in order, so the PDF follows the list
                    pngs += future.result()
                    bar.update(len(chunk))
        else:
            for chunk in chunks:
                pngs += _render_chunk(chunk, str(font_path), str(out))
                bar.update(len(chunk))
    pdf = out / PDF_NAME
    pages = write_sheets(pngs, pdf)
    return CardsWritten([out / spec.filename for spec in specs], pdf, pages)
