"""The audit log (审计日志): one append-only row per access to personal data or privileged action.

``record`` adds the row in the caller's transaction, so an action and its audit row are committed
together or not at all. Nothing here updates or deletes rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from storage.models import AuditLog


def record(session: Session, *, at: datetime, actor: str, action: str, target: str | None = None,
           address: str | None = None, channel: str | None = None, detail: str | None = None) -> None:
    """Adds one audit row (who, when, what, which record, from where) to the session's transaction."""
    session.add(AuditLog(at=at, actor=actor[:130], action=action[:40], target=target[:130] if target else None,
                         address=address[:64] if address else None, channel=channel,
                         detail=detail[:500] if detail else None))
