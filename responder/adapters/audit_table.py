"""The audit table: one row per cleanup, and one per other decision (deferred, poisoned, reconcile).

A cleanup's row (partition `cleanup`, keyed by the deletion) holds its decision and
its progress, record by record, so there is exactly one row for every deletion
however often its message is delivered. Other rows are partitioned by day, so an
admin can list a day's decisions cheaply. Nothing in a row identifies a person
(resource and device ids, names of machines, reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from responder.adapters._errors import table_failures_mapped
from responder.decisions.errors import LedgerConflict, TransientError
from responder.decisions.model import parse_moment

if TYPE_CHECKING:  # loaded where a cleanup or the cap needs them: other events only create the table
    from responder.decisions.audit import AuditEntry
    from responder.decisions.blast_radius import CapState, Reservation
    from responder.decisions.cleanup import CleanupRecord

CLEANUP_PARTITION = "cleanup"
CLAIM_PARTITION = "claim"  # one row per Intune or Entra record a cleanup deletes: whose it is to delete
# A claim whose cleanup row was never written (its worker died in between) passes on after this long.
UNSAVED_CLAIM = timedelta(minutes=10)
CAP_ROW = ("blast-radius", "deletions")
CURSOR_ROW = ("reconcile", "cursor")
BOOKKEEPING_ROWS = {CAP_ROW, CURSOR_ROW}
CAP_ATTEMPTS = 10


class AuditTable:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    @table_failures_mapped
    async def ensure_table(self) -> None:
        with contextlib.suppress(ResourceExistsError):  # made by an earlier start
            await self._table.create_table()

    @table_failures_mapped
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
        await self._table.create_entity(row)

    @table_failures_mapped
    async def cleanup_record(self, key: str) -> CleanupRecord | None:
        """The decision and progress of one cleanup, or None when it was never decided."""
        try:
            entity = await self._table.get_entity(CLEANUP_PARTITION, key)
        except ResourceNotFoundError:
            return None
        return cleanup_record_from_entity(entity, entity.metadata["etag"])

    @table_failures_mapped
    async def save_cleanup(self, record: CleanupRecord) -> CleanupRecord:
        """Insert (no ETag yet) or replace under the ETag read: a concurrent worker's change wins."""
        entity = entity_from_cleanup_record(record)
        try:
            if record.etag is None:
                metadata = await self._table.create_entity(entity)
            else:
                metadata = await self._table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=record.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as error:
            raise LedgerConflict(f"cleanup {record.key} was changed by another worker") from error
        return replace(record, etag=metadata.get("etag"))

    @table_failures_mapped
    async def claim_records(self, key: str, record_ids: tuple[str, ...]) -> str | None:
        """Each record's claim row, inserted (or taken over from a finished cleanup) under ETags."""
        for record_id in record_ids:
            row = {"PartitionKey": CLAIM_PARTITION, "RowKey": record_id, "Cleanup": key, "At": datetime.now(UTC)}
            try:
                await self._table.create_entity(row)
                continue
            except ResourceExistsError:
                pass
            try:
                current = await self._table.get_entity(CLAIM_PARTITION, record_id)
                holder = str(current.get("Cleanup", ""))
                if holder == key:
                    continue
                if await self._still_holds(holder, _plain(current.get("At"))):
                    return holder
                await self._table.update_entity(
                    row,
                    mode=UpdateMode.REPLACE,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError) as error:
                raise LedgerConflict(f"the claim on {record_id} changed while cleanup {key} took it") from error
        return None

    async def _still_holds(self, holder: str, claimed_at: datetime | None) -> bool:
        record = await self.cleanup_record(holder)
        if record is None:
            return claimed_at is not None and datetime.now(UTC) - claimed_at < UNSAVED_CLAIM
        return not record.finished

    @table_failures_mapped
    async def entries(self) -> list[dict[str, object]]:
        """The decision rows (the cap's bookkeeping row and the claims left out)."""
        return [
            dict(entity)
            async for entity in self._table.list_entities()
            if (entity["PartitionKey"], entity["RowKey"]) not in BOOKKEEPING_ROWS
            and entity["PartitionKey"] != CLAIM_PARTITION
        ]

    @table_failures_mapped
    async def reconcile_cursor(self) -> int:
        """How many items the unfinished reconciliation pass has already looked at (0: start over)."""
        try:
            entity = await self._table.get_entity(*CURSOR_ROW)
        except ResourceNotFoundError:
            return 0
        return int(str(entity.get("Offset", 0)))

    @table_failures_mapped
    async def save_reconcile_cursor(self, offset: int) -> None:
        row = {"PartitionKey": CURSOR_ROW[0], "RowKey": CURSOR_ROW[1], "Offset": offset}
        await self._table.upsert_entity(row, mode=UpdateMode.REPLACE)

    @table_failures_mapped
    async def reserve_deletions(self, wanted: int, cap: int) -> Reservation:
        """Take slots under the rolling-hour cap, shared by every instance (ETag-guarded row)."""
        from responder.decisions.blast_radius import CapState, reserve

        for _ in range(CAP_ATTEMPTS):
            now = datetime.now(UTC)
            try:
                entity = await self._table.get_entity(*CAP_ROW)
                state, etag = _cap_state(entity), entity.metadata["etag"]
            except ResourceNotFoundError:
                state, etag = CapState(), None
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
            return reservation
        raise TransientError("too many concurrent updates of the blast-radius state")

    async def close(self) -> None:
        await self._table.close()


def _cap_state(entity: dict[str, object]) -> CapState:
    from responder.decisions.blast_radius import CapState

    deletions = tuple(
        (datetime.fromisoformat(minute), int(count))
        for minute, count in json.loads(str(entity.get("Deletions") or "[]"))
    )
    warned = str(entity.get("LastWarningAt") or "")
    return CapState(deletions, datetime.fromisoformat(warned) if warned else None)


def entity_from_cleanup_record(record: CleanupRecord) -> dict[str, Any]:
    targets = [
        {**asdict(target), "deleted_at": target.deleted_at.isoformat() if target.deleted_at else None}
        for target in record.targets
    ]
    entity: dict[str, Any] = {
        "PartitionKey": CLEANUP_PARTITION,
        "RowKey": record.key,
        "EventId": record.event_id,
        "ResourceId": record.resource_id,
        "Decision": record.decision.value,
        "Reason": record.reason,
        "Mode": record.mode,
        "Targets": json.dumps(targets),
        "Actions": json.dumps(list(record.actions)),
        "Findings": json.dumps(list(record.findings)),
        "At": record.started_at,
        "FinishedAt": record.finished_at,
        "DeletedAt": record.deleted_at,
    }
    return {name: value for name, value in entity.items() if value is not None}


def cleanup_record_from_entity(entity: dict[str, Any], etag: str | None) -> CleanupRecord:
    from responder.decisions.cleanup import CleanupRecord, Decision, Target

    targets = tuple(
        Target(
            kind=str(item["kind"]),
            record_id=str(item["record_id"]),
            name=item.get("name"),
            deleted_at=parse_moment(item.get("deleted_at")),
            attempted=bool(item.get("attempted")),
            already_gone=bool(item.get("already_gone")),
        )
        for item in json.loads(str(entity.get("Targets") or "[]"))
    )
    return CleanupRecord(
        key=str(entity["RowKey"]),
        event_id=str(entity.get("EventId", "")),
        resource_id=str(entity.get("ResourceId", "")),
        mode=str(entity.get("Mode", "")),
        decision=Decision(str(entity["Decision"])),
        reason=str(entity.get("Reason", "")),
        started_at=_plain(entity.get("At")) or datetime.now(UTC),
        targets=targets,
        findings=tuple(json.loads(str(entity.get("Findings") or "[]"))),
        finished_at=_plain(entity.get("FinishedAt")),
        deleted_at=_plain(entity.get("DeletedAt")),
        etag=etag,
    )


def _plain(value: object) -> datetime | None:
    """Table datetimes come back as a datetime subclass; keep plain datetimes."""
    if isinstance(value, datetime):
        return datetime.fromtimestamp(value.timestamp(), tz=value.tzinfo or UTC)
    return None
