"""The VM ledger on Azure Table storage, through the real SDK against Azurite (design §2)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from responder.adapters.table_ledger import TableLedger, record_from_entity
from responder.decisions.errors import LedgerConflict
from responder.decisions.events import vm_ref_from_resource_id
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

VM = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg-avd-prod", "vm-win11-01")
T0 = datetime(2026, 11, 20, 19, 0, 2, 555000, tzinfo=UTC)


def full_record() -> VmRecord:
    return VmRecord(
        ref=VM,
        power_state=PowerState.DEALLOCATED,
        power_state_at=T0,
        suppression=SuppressionState.SUPPRESSED,
        last_event_at={EventKind.CREATED: T0, EventKind.DEALLOCATED: T0},
        recent_event_ids=("e1", "e2"),
        findings=(
            Finding(
                "os-edition",
                Severity.ERROR,
                "Windows Server is not supported",
                "sku=2022",
                "doc",
                phase=FindingSource.CREATE,
            ),
        ),
        cleanup_status=CleanupStatus.NEEDS_REVIEW,
        deleted_at=T0,
        device_groups="3f2a9c0d1e4b5a69",
        incarnation=Incarnation(
            vm_id="a3c6f0d2-1b2c-4d5e-8f90-123456789abc", computer_name="VM-WIN11-01", os_type="Windows"
        ),
        device=DeviceMapping(
            managed_device_id="9b2f6c1e-0000-4000-8000-00000000d001",
            entra_device_id="5c7e1a9b-0000-4000-8000-00000000e001",
        ),
    )


async def test_a_record_round_trips_every_field(ledger: TableLedger) -> None:
    stored = await ledger.insert(full_record())

    read = await ledger.get(VM)

    assert read == full_record()
    assert read is not None
    assert read.etag == stored.etag


async def test_a_vm_never_seen_has_no_record(ledger: TableLedger) -> None:
    assert await ledger.get(VM) is None


async def test_every_spelling_of_a_resource_id_reaches_the_same_row(ledger: TableLedger) -> None:
    spelled = vm_ref_from_resource_id(
        "/SUBSCRIPTIONS/6B1C2E8A-3F4D-4C1A-9E2B-7D5F0A1B2C3D/resourceGroups/RG-AVD-PROD"
        "/providers/Microsoft.Compute/virtualMachines/VM-WIN11-01"
    )
    assert spelled is not None
    await ledger.insert(VmRecord(ref=spelled, incarnation=Incarnation(computer_name="VM-WIN11-01")))

    read = await ledger.get(VM)

    assert read is not None
    assert read.incarnation.computer_name == "VM-WIN11-01"


async def test_inserting_an_existing_row_is_a_conflict(ledger: TableLedger) -> None:
    await ledger.insert(VmRecord(ref=VM))

    with pytest.raises(LedgerConflict):
        await ledger.insert(VmRecord(ref=VM))


async def test_a_write_with_a_stale_etag_is_refused(ledger: TableLedger) -> None:
    await ledger.insert(VmRecord(ref=VM))
    first = await ledger.get(VM)
    second = await ledger.get(VM)
    assert first is not None
    assert second is not None

    await ledger.replace(replace(first, power_state=PowerState.RUNNING))
    with pytest.raises(LedgerConflict):
        await ledger.replace(replace(second, power_state=PowerState.DEALLOCATED))

    read = await ledger.get(VM)
    assert read is not None
    assert read.power_state is PowerState.RUNNING


async def test_concurrent_updates_of_one_vm_are_all_applied(ledger: TableLedger) -> None:
    def add(event_id: str):  # type: ignore[no-untyped-def]
        def decide(record: VmRecord) -> tuple[VmRecord, str]:
            return replace(record, recent_event_ids=(*record.recent_event_ids, event_id)), event_id

        return decide

    ids = [f"event-{n}" for n in range(8)]
    await asyncio.gather(*(ledger.update(VM, add(event_id)) for event_id in ids))

    read = await ledger.get(VM)
    assert read is not None
    assert sorted(read.recent_event_ids) == ids


async def test_an_update_from_a_row_read_before_another_write_loses_nothing(ledger: TableLedger) -> None:
    stale = await ledger.insert(VmRecord(ref=VM))
    await ledger.update(VM, lambda record: (replace(record, power_state=PowerState.DEALLOCATED), None))

    updated, _ = await ledger.update(
        VM, lambda record: (replace(record, incarnation=replace(record.incarnation, vm_id="vm-1")), None), read=stale
    )

    assert (updated.power_state, updated.incarnation.vm_id) == (PowerState.DEALLOCATED, "vm-1")


async def test_an_update_that_changes_nothing_does_not_write(ledger: TableLedger) -> None:
    stored = await ledger.insert(VmRecord(ref=VM))

    unchanged, result = await ledger.update(VM, lambda record: (record, "same"))

    assert result == "same"
    assert unchanged.etag == stored.etag


async def test_records_lists_every_vm(ledger: TableLedger) -> None:
    other = VmRef(VM.subscription_id, "rg-lab", "vm-lab-01")
    await ledger.insert(VmRecord(ref=VM))
    await ledger.insert(VmRecord(ref=other))

    listed = {record.ref async for record in ledger.records()}

    assert listed == {VM, other}


def test_a_row_written_before_findings_named_their_source_reads_the_power_stage_findings_as_its() -> None:
    """Such rows said "create" for every finding but the device check's: the power stage's are known by
    their rule ids, so it still replaces them and the next create-time check keeps them."""
    old = [
        {"rule_id": "os-edition", "severity": "error", "message": "Windows Server", "phase": "create"},
        {"rule_id": "no-intune-device", "severity": "info", "message": "No Intune device", "phase": "create"},
        {"rule_id": "tpm-profile", "severity": "warning", "message": "BitLocker", "phase": "device"},
        {"rule_id": "join", "severity": "warning", "message": "No enrolment"},
    ]
    entity = {"PartitionKey": "sub", "RowKey": "rg|vm", "Findings": json.dumps(old)}

    record = record_from_entity(entity, None)

    assert [(finding.rule_id, finding.phase) for finding in record.findings] == [
        ("os-edition", FindingSource.CREATE),
        ("no-intune-device", FindingSource.POWER),
        ("tpm-profile", FindingSource.DEVICE),
        ("join", FindingSource.CREATE),
    ]
