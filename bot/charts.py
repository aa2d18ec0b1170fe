"""Bar charts (PNG) with Chinese labels: the digests' visit completion and the rankings.

Built on matplotlib's object API (a ``Figure`` of its own, no pyplot state), so two charts drawn
at once in two threads of the web server do not draw into each other.
"""

from __future__ import annotations

import io
from typing import Sequence


def bar_chart(names: Sequence[str], values: Sequence[float], labels: Sequence[str], *, title: str,
              xlabel: str, colors: Sequence[str] | None = None, xmax: float = 100) -> bytes:
    """Horizontal bars, one per name from top to bottom, each with its label (e.g. "12/15") beside it."""
    from matplotlib import font_manager
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bot.fonts import find_cjk_font

    font = font_manager.FontProperties(fname=str(find_cjk_font()))
    fig = Figure(figsize=(6, 0.45 * len(names) + 1.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # barh draws the first name at the bottom; reversed, the list reads top-down as given.
    names, values, labels = list(names)[::-1], list(values)[::-1], list(labels)[::-1]
    colors = list(colors)[::-1] if colors is not None else None
    bars = ax.barh(range(len(names)), values, color=colors, tick_label=names)
    ax.set_xlim(0, xmax)
    ax.set_xlabel(xlabel, fontproperties=font)
    ax.set_title(title, fontproperties=font)
    for label in ax.get_yticklabels():
        label.set_fontproperties(font)
    for bar, text in zip(bars, labels):
        ax.text(min(bar.get_width() + xmax / 100, xmax * 0.8), bar.get_y() + bar.get_height() / 2, text,
                va="center", fontproperties=font, fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
