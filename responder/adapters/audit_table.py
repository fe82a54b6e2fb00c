"""The audit table: one row per cleanup decision, done, skipped, refused or parked.

Partitioned by day, so an admin can list a day's decisions cheaply; nothing in
a row identifies a person (resource and device ids, names of machines, reasons).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from responder.audit import AuditEntry
from responder.blast_radius import CapState, Reservation, reserve
from responder.errors import TransientError

CAP_ROW = ("blast-radius", "deletions")
CURSOR_ROW = ("reconcile", "cursor")
BOOKKEEPING_ROWS = {CAP_ROW, CURSOR_ROW}
CAP_ATTEMPTS = 10


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
        """The decision rows (the cap's bookkeeping row left out)."""
        return [
            dict(entity)
            async for entity in self._table.list_entities()
            if (entity["PartitionKey"], entity["RowKey"]) not in BOOKKEEPING_ROWS
        ]

    async def reconcile_cursor(self) -> int:
        """How many items the unfinished reconciliation pass has already looked at (0: start over)."""
        try:
            entity = await self._table.get_entity(*CURSOR_ROW)
        except ResourceNotFoundError:
            return 0
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise TransientError(f"reconciliation cursor unavailable: {error}") from error
        return int(str(entity.get("Offset", 0)))

    async def save_reconcile_cursor(self, offset: int) -> None:
        row = {"PartitionKey": CURSOR_ROW[0], "RowKey": CURSOR_ROW[1], "Offset": offset}
        try:
            await self._table.upsert_entity(row, mode=UpdateMode.REPLACE)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise TransientError(f"reconciliation cursor unavailable: {error}") from error

    async def reserve_deletions(self, wanted: int, cap: int) -> Reservation:
        """Take slots under the rolling-hour cap, shared by every instance (ETag-guarded row)."""
        for _ in range(CAP_ATTEMPTS):
            now = datetime.now(UTC)
            try:
                entity = await self._table.get_entity(*CAP_ROW)
                state, etag = _cap_state(entity), entity.metadata["etag"]
            except ResourceNotFoundError:
                state, etag = CapState(), None
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
                raise TransientError(f"blast-radius state unavailable: {error}") from error
            new_state, reservation = reserve(state, wanted, cap, now)
            row = {
                "PartitionKey": CAP_ROW[0],
                "RowKey": CAP_ROW[1],
                "Deletions": json.dumps([[minute.isoformat(), count] for minute, count in new_state.buckets]),
                "LastWarningAt": new_state.last_warning_at.isoformat() if new_state.last_warning_at else "",
            }
            try:
                if etag is None:
                    await self._table.create_entity(row)
                else:
                    await self._table.update_entity(
                        row, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, ResourceModifiedError):
                # Another instance counted first: count again, after a short random pause.
                await asyncio.sleep(random.uniform(0, 0.05))  # noqa: S311 - spreading retries, not security
                continue
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
                raise TransientError(f"blast-radius state unavailable: {error}") from error
            return reservation
        raise TransientError("too many concurrent updates of the blast-radius state")

    async def close(self) -> None:
        await self._table.close()


def _cap_state(entity: dict[str, object]) -> CapState:
    deletions = tuple(
        (datetime.fromisoformat(minute), int(count))
        for minute, count in json.loads(str(entity.get("Deletions") or "[]"))
    )
    warned = str(entity.get("LastWarningAt") or "")
    return CapState(deletions, datetime.fromisoformat(warned) if warned else None)
