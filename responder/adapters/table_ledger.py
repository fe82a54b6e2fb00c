"""The VM ledger on Azure Table storage (`azure-data-tables`, async client).

Row keys: PartitionKey = subscription id, RowKey = "resourcegroup|vmname", both
lower case, so every spelling of one resource id lands on the same row and
one subscription's VMs can be listed together. `|` can't occur in either name.
Concurrency is optimistic: every write carries the ETag it read (If-Match), so
two events for one VM handled at once can't overwrite each other.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from responder.adapters._errors import table_call, table_failures
from responder.adapters.optimistic import OptimisticUpdates
from responder.decisions.errors import LedgerConflict
from responder.decisions.model import (
    CleanupStatus,
    DeviceMapping,
    EventKind,
    Finding,
    FindingSource,
    Incarnation,
    PowerState,
    Severity,
    SuppressionState,
    VmRecord,
    VmRef,
)

T = TypeVar("T")

_LAST_EVENT_COLUMNS: dict[EventKind, str] = {
    EventKind.CREATED: "LastCreatedAt",
    EventKind.DEALLOCATED: "LastDeallocatedAt",
    EventKind.POWERED_OFF: "LastPoweredOffAt",
    EventKind.STARTED: "LastStartedAt",
    EventKind.DELETED: "LastDeletedAt",
}


class TableLedger(OptimisticUpdates):
    """`responder.ports.Ledger` on one Azure table."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def ensure_table(self) -> None:
        """Create the table when it is missing (Bicep creates it in Azure)."""
        with contextlib.suppress(ResourceExistsError):
            await table_call(self._table.create_table())

    async def get(self, vm: VmRef) -> VmRecord | None:
        try:
            entity = await table_call(self._table.get_entity(*row_key(vm)))
        except ResourceNotFoundError:
            return None
        return record_from_entity(entity, entity.metadata["etag"])

    async def insert(self, record: VmRecord) -> VmRecord:
        try:
            metadata = await table_call(self._table.create_entity(entity_from_record(record)))
        except ResourceExistsError as error:
            raise LedgerConflict(f"ledger row for {record.ref.resource_id} already exists") from error
        return _with_etag(record, metadata)

    async def replace(self, record: VmRecord) -> VmRecord:
        if record.etag is None:
            raise ValueError("replace needs the ETag of the row that was read")
        try:
            metadata = await table_call(
                self._table.update_entity(
                    entity_from_record(record),
                    mode=UpdateMode.REPLACE,
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            )
        except (ResourceModifiedError, ResourceNotFoundError) as error:
            raise LedgerConflict(f"ledger row for {record.ref.resource_id} changed since it was read") from error
        return _with_etag(record, metadata)

    async def records(self) -> AsyncIterator[VmRecord]:
        with table_failures():
            async for entity in self._table.list_entities():
                yield record_from_entity(entity, entity.metadata["etag"])


def row_key(vm: VmRef) -> tuple[str, str]:
    return vm.subscription_id, f"{vm.resource_group}|{vm.name}"


def entity_from_record(record: VmRecord) -> dict[str, Any]:
    """One row, one column a field: the incarnation's and the device's columns among the rest."""
    partition_key, row = row_key(record.ref)
    incarnation, device = record.incarnation, record.device
    entity: dict[str, Any] = {
        "PartitionKey": partition_key,
        "RowKey": row,
        "ResourceId": record.ref.resource_id,
        "VmId": incarnation.vm_id,
        "ComputerName": incarnation.computer_name,
        "OsType": incarnation.os_type,
        "CreatedAt": incarnation.created_at,
        "OsDiskId": incarnation.os_disk_id,
        "MachineSince": incarnation.machine_since,
        "JoinKind": incarnation.join_kind,
        "ArmId": incarnation.arm_id,
        "ManagedDeviceId": device.managed_device_id,
        "EntraDeviceId": device.entra_device_id,
        "EntraObjectId": device.entra_object_id,
        "DeviceVmId": device.learnt_for_vm_id,
        "PowerState": record.power_state.value,
        "PowerStateAt": record.power_state_at,
        "Suppression": record.suppression.value,
        "MarkedAt": record.marked_at,
        "RecentEventIds": json.dumps(list(record.recent_event_ids)),
        "PendingEventIds": json.dumps(list(record.pending_event_ids)) if record.pending_event_ids else None,
        "Findings": json.dumps([_finding_json(finding) for finding in record.findings]),
        "CleanupStatus": record.cleanup_status.value,
        "DeletedAt": record.deleted_at,
        "LastPlan": json.dumps(list(record.last_plan)) if record.last_plan else None,
        "OptedOut": record.opted_out or None,
        "CheckFingerprint": record.check_fingerprint,
        "DeviceCheckDue": record.device_check_due,
        "DeviceCheckedAt": record.device_checked_at,
        "DeviceGroups": record.device_groups,
        "LeaseOwner": record.lease_owner,
        "LeaseUntil": record.lease_until,
    }
    for kind, column in _LAST_EVENT_COLUMNS.items():
        entity[column] = record.last_event_at.get(kind)
    # Azure Tables has no null: an absent property is the null.
    return {name: value for name, value in entity.items() if value is not None}


def record_from_entity(entity: Mapping[str, Any], etag: str | None) -> VmRecord:
    resource_group, _, name = str(entity["RowKey"]).partition("|")
    return VmRecord(
        ref=VmRef(subscription_id=str(entity["PartitionKey"]), resource_group=resource_group, name=name),
        incarnation=Incarnation(
            vm_id=entity.get("VmId"),
            computer_name=entity.get("ComputerName"),
            os_type=entity.get("OsType"),
            created_at=_moment(entity.get("CreatedAt")),
            join_kind=entity.get("JoinKind"),
            arm_id=entity.get("ArmId"),
            os_disk_id=entity.get("OsDiskId"),
            machine_since=_moment(entity.get("MachineSince")),
        ),
        device=DeviceMapping(
            learnt_for_vm_id=entity.get("DeviceVmId"),
            managed_device_id=entity.get("ManagedDeviceId"),
            entra_device_id=entity.get("EntraDeviceId"),
            entra_object_id=entity.get("EntraObjectId"),
        ),
        power_state=PowerState(entity.get("PowerState", PowerState.UNKNOWN.value)),
        power_state_at=_moment(entity.get("PowerStateAt")),
        suppression=SuppressionState(entity.get("Suppression", SuppressionState.NONE.value)),
        marked_at=_moment(entity.get("MarkedAt")),
        last_event_at={
            kind: moment
            for kind, column in _LAST_EVENT_COLUMNS.items()
            if (moment := _moment(entity.get(column))) is not None
        },
        recent_event_ids=tuple(json.loads(entity.get("RecentEventIds", "[]"))),
        pending_event_ids=tuple(json.loads(entity.get("PendingEventIds", "[]"))),
        findings=tuple(_finding(item) for item in json.loads(entity.get("Findings", "[]"))),
        cleanup_status=CleanupStatus(entity.get("CleanupStatus", CleanupStatus.NONE.value)),
        deleted_at=_moment(entity.get("DeletedAt")),
        last_plan=tuple(json.loads(entity.get("LastPlan", "[]"))),
        opted_out=bool(entity.get("OptedOut", False)),
        check_fingerprint=entity.get("CheckFingerprint"),
        device_check_due=_moment(entity.get("DeviceCheckDue")),
        device_checked_at=_moment(entity.get("DeviceCheckedAt")),
        device_groups=entity.get("DeviceGroups"),
        lease_owner=entity.get("LeaseOwner"),
        lease_until=_moment(entity.get("LeaseUntil")),
        etag=etag,
    )


# Rows written before findings named their source said "create" for the power stage's findings too.
_POWER_FINDINGS_OF_OLDER_ROWS = frozenset(
    {"suppression-not-configured", "needs-review", "no-intune-device", "no-entra-device", "action-refused"}
)


def _finding(item: dict[str, str]) -> Finding:
    return Finding(
        item["rule_id"],
        Severity(item["severity"]),
        item["message"],
        item.get("evidence", ""),
        item.get("doc", ""),
        phase=_source(item),
    )


def _source(item: dict[str, str]) -> FindingSource:
    stored = item.get("phase", FindingSource.CREATE.value)  # rows written before device-side checks existed
    if stored == FindingSource.CREATE.value and item["rule_id"] in _POWER_FINDINGS_OF_OLDER_ROWS:
        return FindingSource.POWER
    return FindingSource(stored) if stored in FindingSource._value2member_map_ else FindingSource.CREATE


def _finding_json(finding: Finding) -> dict[str, str]:
    return {
        "rule_id": finding.rule_id,
        "severity": finding.severity.value,
        "message": finding.message,
        "evidence": finding.evidence,
        "doc": finding.doc,
        "phase": finding.phase.value,
    }


def _moment(value: object) -> datetime | None:
    """Table datetimes come back as a datetime subclass; keep plain datetimes."""
    if isinstance(value, datetime):
        return datetime.fromtimestamp(value.timestamp(), tz=value.tzinfo)
    return None


def _with_etag(record: VmRecord, metadata: Mapping[str, Any]) -> VmRecord:
    return replace(record, etag=metadata.get("etag"))
