"""/flags (走访凭证): per cadre of the supervisor's scope, the half-year's visits by strength of evidence,
and the visits flagged as possibly in name only (走过场), each with its reason.

A unit's supervisor sees every cadre. A scope of more cadres than a chat message can list (the 作风办's
2,000) gets the totals and the cadres whose visits are flagged or mostly without evidence, worst first
(``overview_lines``, which the digests use too); the console's unit pages list everyone."""

from __future__ import annotations

from collections import Counter

from sqlmodel import select

from bot import texts
from bot.core import evidence
from bot.core.dialogue import Context
from bot.core.feature import Feature
from bot.core.periods import half_label
from bot.core.scope import unit_scope
from storage.models import Role, Unit

FLAG_LINES = 40  # a chat message stays readable; the console lists them all


def overview_lines(rows: list[evidence.CadreEvidence], unit_names: dict[int, str], limit: int) -> list[str]:
    """The half-year's visits of these cadres by strength of evidence, the flags (走过场), and up to
    ``limit`` cadres whose visits are flagged or at least half without evidence, worst first."""
    counts = Counter()
    for row in rows:
        counts.update(row.counts)
    if not counts:
        return [texts.EVIDENCE_NO_VISITS]
    flagged = [row for row in rows if row.flags]
    lines = [texts.EVIDENCE_TOTAL.format(total=sum(counts.values()), shares=evidence.percentages(counts))
             + (texts.EVIDENCE_FLAGGED_TOTAL.format(count=sum(r.flags for r in flagged), cadres=len(flagged))
                if flagged else "")]
    weak = [row for row in rows if row.flags or row.share(evidence.NONE) >= 0.5]
    weak.sort(key=lambda r: (-r.flags, -r.share(evidence.NONE), r.name))
    if weak:
        lines.append(texts.EVIDENCE_WEAK_HEADER.format(count=len(weak)))
        lines += [texts.EVIDENCE_WEAK_LINE.format(
            name=r.name, unit=unit_names.get(r.unit_id, ""), shares=r.percentages(),
            flagged=texts.FLAGS_FLAGGED.format(count=r.flags) if r.flags else "") for r in weak[:limit]]
        if len(weak) > limit:
            lines.append(texts.EVIDENCE_WEAK_MORE.format(count=len(weak) - limit))
    return lines


def cmd_flags(ctx: Context) -> None:
    """Shows each cadre's visits by evidence and the flagged visits, within the supervisor's scope."""
    scope = unit_scope(ctx.session, ctx.cadre, ctx.settings)
    rows = evidence.summary(ctx.session, ctx.half, scope)
    if not rows:
        return ctx.say(texts.FLAGS_NONE)
    if len(rows) > FLAG_LINES:  # the 作风办: the totals and the weakest cadres
        names = dict(ctx.session.exec(select(Unit.id, Unit.name)).all())
        lines = [texts.FLAGS_HEADER_MANY.format(half_label=half_label(ctx.half), cadres=len(rows))]
        lines += overview_lines(rows, names, FLAG_LINES)
    else:  # a unit: every cadre
        lines = [texts.FLAGS_HEADER.format(half_label=half_label(ctx.half))]
        lines += [texts.FLAGS_CADRE_LINE.format(name=row.name, shares=row.shares(),
                                                flagged=texts.FLAGS_FLAGGED.format(count=row.flags) if row.flags else "")
                  for row in rows]
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
