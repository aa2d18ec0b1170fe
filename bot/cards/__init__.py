"""Printable evaluation cards (评价卡): one PNG per card and one A4 PDF of them for cutting.

Modules: ``render`` draws one card (亮牌 layout: name, unit, post,
duties, the QR code, "扫码评价我的服务"); ``sheet`` lays PNG cards out on A4 pages of a PDF
without re-encoding them; ``job`` chooses the cards, issues their codes and runs the batch over
the processor's cores with a progress bar.
"""

from bot.cards.job import CardError, CardsWritten, card_specs, find_targets, write_cards
from bot.cards.render import CardSpec, render_card

__all__ = ["CardError", "CardSpec", "CardsWritten", "card_specs", "find_targets", "render_card", "write_cards"]
