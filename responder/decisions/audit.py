"""One audit row: a cleanup or reconciliation decision, as plain data (the table adapter stores it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    event_id: str | None
    resource_id: str | None
    decision: str  # delete | skipped | refused | needs-review | poisoned | failed
    reason: str
    mode: str
    actions: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
