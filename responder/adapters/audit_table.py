"""The audit table: one row per cleanup decision, done, skipped, refused or parked.

Partitioned by day, so an admin can list a day's decisions cheaply; nothing in
a row identifies a person (resource and device ids, names of machines, reasons).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables.aio import TableClient

from responder.errors import TransientError


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


class AuditTable:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def ensure_table(self) -> None:
        try:
            await self._table.create_table()
        except ResourceExistsError:
            pass
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise TransientError(f"audit table unavailable: {error}") from error

    async def record(self, entry: AuditEntry) -> None:
        row = {
            "PartitionKey": entry.at.strftime("%Y-%m-%d"),
            "RowKey": f"{entry.at.strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}",
            "EventId": entry.event_id or "",
            "ResourceId": entry.resource_id or "",
            "Decision": entry.decision,
            "Reason": entry.reason,
            "Mode": entry.mode,
            "Actions": json.dumps(list(entry.actions)),
            "Findings": json.dumps(list(entry.findings)),
            "At": entry.at,
        }
        try:
            await self._table.create_entity(row)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise TransientError(f"could not write the audit row: {error}") from error

    async def entries(self) -> list[dict[str, object]]:
        return [dict(entity) async for entity in self._table.list_entities()]

    async def close(self) -> None:
        await self._table.close()
