"""/flags (走访凭证): per cadre of the supervisor's scope, the half-year's visits by strength of evidence,
and the visits flagged as possibly in name only (走过场), each with its reason."""

from __future__ import annotations

from bot import texts
from bot.core import evidence
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.periods import half_label
from bot.core.scope import unit_scope
from storage.models import Role

FLAG_LINES = 40  # a chat message stays readable; the console lists them all


def cmd_flags(ctx: Context) -> None:
    """Shows each cadre's visits by evidence and the flagged visits, within the supervisor's scope."""
    scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
    rows = evidence.summary(ctx.session, ctx.half, scope)
    if not rows:
        return ctx.say(texts.FLAGS_NONE)
    lines = [texts.FLAGS_HEADER.format(half_label=half_label(ctx.half))]
    for row in rows:
        lines.append(texts.FLAGS_CADRE_LINE.format(
            name=row.name, shares=row.shares(), flagged=texts.FLAGS_FLAGGED.format(count=row.flags) if row.flags else ""))
    flags = evidence.flags_of(ctx.session, ctx.half, scope, limit=FLAG_LINES + 1)
    if flags:
        lines.append(texts.FLAGS_LIST_HEADER)
        for name, visit_id, at, kind, reason in flags[:FLAG_LINES]:
            lines.append(texts.FLAGS_LIST_LINE.format(name=name, visit=visit_id, date=at.date().isoformat(),
                                                      kind=texts.FLAG_NAMES.get(kind, kind), reason=reason))
        if len(flags) > FLAG_LINES:
            lines.append(texts.FLAGS_MORE.format(count=len(evidence.flags_of(ctx.session, ctx.half, scope)) - FLAG_LINES))
    ctx.say("\n".join(lines))


FLAGS = Feature("flags", Role.SUPERVISOR, "走访凭证", help=texts.HELP_FLAGS, words=("凭证", "走过场"), run=cmd_flags,
                long=True, reads_only=True)
