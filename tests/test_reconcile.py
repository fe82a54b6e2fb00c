"""Reconciliation through the real timer function: drift of each kind is repaired, look-alikes
are left alone, and a bounded run resumes where it stopped (design §6)."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from handlers import cleanup_worker, reconcile_timer
from localdev.azurite import Azurite
from localdev.queue_host import queue_client, run_queue_trigger
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services, get_services
from responder.decisions.model import DeviceMapping, Finding, FindingSource, Severity, SuppressionState, VmRecord, VmRef
from responder.ports import Services
from tests.conftest import deployed_services, log_lines

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
WIN10 = VmRef(SUB, "rg-avd-prod", "vm-win10-02")
WIN11_MANAGED, WIN11_ENTRA = "7d1e0001-aaaa-4bbb-8ccc-000000000001", "e0b10001-1111-4222-8333-000000000001"
WIN10_ENTRA = "e0b10002-1111-4222-8333-000000000002"
OLD_MANAGED = "7d1e0009-aaaa-4bbb-8ccc-000000000009"
LOOK_ALIKE_MANAGED = "7d1e0010-aaaa-4bbb-8ccc-000000000010"  # vm-win11-010: a VM record, recently active
PHYSICAL_PC = "7d1e0011-aaaa-4bbb-8ccc-000000000011"  # vm-win11-01-pc: a Surface Laptop

on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()


@pytest.fixture
async def drifted(
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    table_name: str,
    simulators: Simulators,
    ledger: TableLedger,
) -> AsyncIterator[Services]:
    """Enforce mode, both suppression mechanisms, and drift of every kind."""
    for name, value in {
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_SUPPRESSION_ATTRIBUTE": "7",
        "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
        "RESPONDER_RECONCILE_STALE_DAYS": "1",
        "RESPONDER_CLEANUP_QUEUE": f"recon-{table_name[-12:]}",
        "RESPONDER_DEVICE_CHECK_QUEUE": f"recon-checks-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
    }.items():
        monkeypatch.setenv(name, value)
    # A deallocated VM whose deallocate event was missed (hybrid: the group only).
    simulators.world.set_power_state(WIN10.resource_id, "deallocated")
    # A running VM whose start event was missed: still marked.
    await ledger.insert(
        VmRecord(
            WIN11,
            suppression=SuppressionState.SUPPRESSED,
            device=DeviceMapping(managed_device_id=WIN11_MANAGED, entra_object_id=WIN11_ENTRA),
        )
    )
    simulators.tenant.groups[GROUP]["members"].append(WIN11_ENTRA)
    simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"]["extensionAttribute7"] = "deallocated earlier"
    # A VM deleted while its events were missed: its records are orphans.
    simulators.world.delete_vm(VmRef(SUB, "rg-avd-prod", "vm-old-09").resource_id)
    # A look-alike VM record that is still in use somewhere.
    simulators.tenant.managed_devices[LOOK_ALIKE_MANAGED]["lastSyncDateTime"] = datetime.now(UTC).isoformat()
    yield await deployed_services()
    await close_services()


async def run_timer() -> None:
    await on_reconcile_timer(TimerRequest(past_due=False))  # what the worker builds


async def summaries(services: Services) -> list[dict[str, Any]]:
    rows = [row for row in await services.audit.entries() if row["Decision"] == "reconcile"]
    return [json.loads(str(row["Reason"])) for row in sorted(rows, key=lambda row: str(row["RowKey"]))]


async def test_each_kind_of_drift_is_repaired_and_look_alikes_are_left_alone(
    drifted: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await run_timer()
    await run_queue_trigger(azurite.connection_string, drifted.settings.cleanup.queue, on_cleanup_message)

    (summary,) = await summaries(drifted)
    assert (summary["repaired"], summary["refused"], summary["queued"], summary["complete"]) == (2, 1, 1, True)
    assert simulators.tenant.members_of(GROUP) == [WIN10_ENTRA]  # win11 lifted, win10 marked
    assert simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"]["extensionAttribute7"] is None
    assert simulators.tenant.synced == [WIN11_MANAGED]
    assert OLD_MANAGED not in simulators.tenant.managed_devices  # orphan: cleaned through the guarded worker
    assert LOOK_ALIKE_MANAGED in simulators.tenant.managed_devices
    assert PHYSICAL_PC in simulators.tenant.managed_devices
    assert len(simulators.tenant.managed_devices) == 9


async def test_a_vm_that_can_not_be_read_is_reported_and_the_walk_goes_on_with_the_next(
    drifted: Services, simulators: Simulators, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="responder")
    win10 = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win10-02"
    simulators.arm.faults.fail, simulators.arm.faults.path_prefix = [403], win10  # its own read only

    await run_timer()

    (summary,) = await summaries(drifted)
    assert (summary["failed"], summary["complete"]) == (1, False)
    assert summary["repaired"] == 1  # win11's mark lifted all the same
    assert simulators.tenant.members_of(GROUP) == []
    (failure,) = log_lines(caplog, "reconcile-failure")
    assert (failure["vmName"], failure["step"], failure["role"]) == ("vm-win10-02", "align the mark", "Reader")


async def test_the_orphan_sweep_waits_for_a_complete_list_of_vms(
    drifted: Services, simulators: Simulators, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="responder")
    simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}")  # no VM listed: every record would look orphaned

    await run_timer()

    (summary,) = await summaries(drifted)
    assert (summary["queued"], summary["failed"]) == (0, 2)
    assert [line["step"] for line in log_lines(caplog, "reconcile-failure")] == ["list VMs", "sweep orphaned records"]


async def test_a_bounded_run_stops_and_the_next_one_resumes(
    drifted: Services, monkeypatch: pytest.MonkeyPatch, simulators: Simulators
) -> None:
    await close_services()
    monkeypatch.setenv("RESPONDER_RECONCILE_MAX_ITEMS", "4")
    services = await get_services()

    for _ in range(10):
        await run_timer()
        if (await summaries(services))[-1]["complete"]:
            break

    runs = await summaries(services)
    total_items = len(simulators.world.vms) + 9  # VMs, then Intune records of model Virtual Machine
    assert len(runs) == -(-total_items // 4)
    assert all(run["checked"] <= 4 for run in runs)
    assert sum(run["checked"] for run in runs) == total_items
    assert [run["resumed_from"] for run in runs] == list(range(0, total_items, 4))
    assert (sum(run["repaired"] for run in runs), sum(run["queued"] for run in runs)) == (2, 1)


async def test_audit_mode_repairs_nothing(
    drifted: Services, monkeypatch: pytest.MonkeyPatch, simulators: Simulators
) -> None:
    await close_services()
    monkeypatch.setenv("RESPONDER_MODE", "audit")
    await get_services()

    await run_timer()

    assert [request for request in simulators.graph.served() if request.method != "GET"] == []


async def test_an_orphan_of_a_vm_outside_the_allow_lists_is_not_cleaned(
    drifted: Services, simulators: Simulators, azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    await close_services()
    monkeypatch.setenv("RESPONDER_ALLOWED_RESOURCE_GROUPS", f"{SUB}/rg-avd-pool")  # vm-old-09 was in rg-avd-prod
    services = await get_services()

    await run_timer()
    await run_queue_trigger(azurite.connection_string, services.settings.cleanup.queue, on_cleanup_message)

    assert OLD_MANAGED in simulators.tenant.managed_devices
    (row,) = [row for row in await services.audit.entries() if row["PartitionKey"] == "cleanup"]
    assert row["Decision"] == "refused"
    assert "out of scope" in str(row["Reason"])


async def test_an_orphan_of_a_vm_that_carried_the_opt_out_tag_is_not_cleaned(
    drifted: Services, simulators: Simulators, azurite: Azurite, ledger: TableLedger
) -> None:
    await ledger.insert(VmRecord(VmRef(SUB, "rg-avd-prod", "vm-old-09"), opted_out=True))

    await run_timer()
    await run_queue_trigger(azurite.connection_string, drifted.settings.cleanup.queue, on_cleanup_message)

    assert OLD_MANAGED in simulators.tenant.managed_devices
    (row,) = [row for row in await drifted.audit.entries() if row["PartitionKey"] == "cleanup"]
    assert row["Decision"] == "refused"
    assert "opt-out" in str(row["Reason"])


async def test_the_bound_counts_only_vm_records_even_when_graph_ignores_the_filter(
    drifted: Services, simulators: Simulators
) -> None:
    # Graph may drop a $filter clause on a property it does not document as filterable.
    simulators.graph_router.ignored_filter_properties = frozenset({"model", "operatingSystem"})
    for number in range(5):
        simulators.tenant.managed_devices[f"phone-{number}"] = {
            "id": f"phone-{number}",
            "deviceName": f"phone-{number}",
            "model": "iPhone 15",
            "operatingSystem": "iOS",
            "lastSyncDateTime": "2025-01-01T00:00:00Z",
        }

    await run_timer()

    (summary,) = await summaries(drifted)
    assert summary["checked"] == len(simulators.world.vms) + 9  # VMs, then the Intune VM records only
    assert summary["queued"] == 1


async def test_a_windows_vm_never_checked_gets_the_create_time_rules_and_then_its_device_check(
    drifted: Services, azurite: Azurite, ledger: TableLedger
) -> None:
    await run_timer()

    (summary,) = await summaries(drifted)
    records = [record async for record in ledger.records()]
    expected = sorted(record.ref.name for record in records if record.device_check_due is not None)
    assert "vm-linux-08" not in expected  # the Windows rules don't apply
    assert "vm-optout-10" not in expected  # opted out
    assert {"vm-win11-01", "vm-win10-02", "avd-personal-03"} <= set(expected)
    checked = {record.ref.name for record in records if record.check_fingerprint is not None}
    assert set(expected) <= checked  # the create-time rules ran first, and queued each check
    assert summary["create_checks"] == len(checked)
    async with queue_client(azurite.connection_string, drifted.settings.device_check.queue) as client:
        waiting = (await client.get_queue_properties()).approximate_message_count  # delayed: not visible yet
    assert waiting == len(expected)


async def test_an_adopted_windows_server_vm_is_reported_and_never_looked_for_in_intune(
    drifted: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    document = copy.deepcopy(simulators.world.vms[WIN11.resource_id])
    server = VmRef(SUB, "rg-avd-prod", "vm-server-12")
    document["id"] = document["id"].replace("vm-win11-01", server.name)
    document["name"] = document["properties"]["osProfile"]["computerName"] = server.name
    document["properties"]["vmId"] = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a12"
    document["properties"]["storageProfile"]["imageReference"] = {
        "publisher": "MicrosoftWindowsServer",
        "offer": "WindowsServer",
        "sku": "2022-datacenter-azure-edition",
        "version": "latest",
    }
    document["properties"].pop("licenseType", None)
    simulators.world.create_vm(document)  # older than the app: no write event ever came

    await run_timer()

    record = await ledger.get(server)
    assert record is not None
    assert ("os-edition", "error") in {(finding.rule_id, finding.severity) for finding in record.findings}
    assert record.device_check_due is None  # Intune can't manage it: no device is looked for


async def test_a_vm_reported_not_enrolled_is_looked_for_again_but_a_checked_one_is_not(
    drifted: Services, ledger: TableLedger
) -> None:
    checked_at = datetime(2026, 11, 10, tzinfo=UTC)  # over a week ago
    not_enrolled = Finding(
        "not-enrolled", Severity.WARNING, "No Intune record of this VM appeared.", phase=FindingSource.DEVICE
    )

    def checked(vm_id: str, findings: tuple[Finding, ...]) -> Callable[[VmRecord], tuple[VmRecord, None]]:
        def done(row: VmRecord) -> tuple[VmRecord, None]:
            checked_row = replace(
                row, device_checked_at=checked_at, findings=findings, incarnation=replace(row.incarnation, vm_id=vm_id)
            )
            return replace(checked_row, check_fingerprint="checked at create"), None

        return done

    await ledger.update(WIN10, checked("0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a02", (not_enrolled,)))
    await ledger.update(WIN11, checked("0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a01", ()))

    await run_timer()

    again = {record.ref.name async for record in ledger.records() if record.device_check_due is not None}
    assert "vm-win10-02" in again
    assert "vm-win11-01" not in again


async def test_a_device_check_already_done_or_on_its_way_is_not_queued_again(
    drifted: Services, azurite: Azurite, ledger: TableLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_timer()
    await close_services()
    monkeypatch.setenv("RESPONDER_RECONCILE_MAX_ITEMS", "500")
    services = await get_services()

    await run_timer()  # every check queued by the first run is still on its way

    first, second = await summaries(services)
    assert first["create_checks"] > 0  # each queued its device check
    assert (second["create_checks"], second["device_checks_queued"]) == (0, 0)


async def test_a_mark_reconciliation_set_is_reported_still_marked_from_the_day_it_was_set(
    drifted: Services, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    from responder.stages.reconciliation import reconcile

    caplog.set_level(logging.INFO, logger="responder")
    first = datetime.now(UTC)
    await reconcile(drifted, now=first)  # win10's deallocate event was missed: reconciliation marks it
    caplog.clear()

    await reconcile(drifted, now=first + timedelta(days=21))

    (still,) = log_lines(caplog, "still-marked")
    assert (still["vmName"], still["markedDays"]) == ("vm-win10-02", 21)


async def test_a_run_whose_steps_all_fail_stops_says_so_and_keeps_its_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging as logs

    from responder.stages import reconciliation as module
    from tests.conftest import sample_in_process

    monkeypatch.setattr(module, "GIVE_UP_AFTER_FAILURES_IN_A_ROW", 5)  # the sample estate is smaller than 20
    monkeypatch.setattr(module, "MAX_FAILURE_LINES", 2)
    product = sample_in_process({"RESPONDER_WATCHED_SUBSCRIPTIONS": SUB}, lambda: datetime(2026, 12, 3, tzinfo=UTC))
    await product.services.audit.save_reconcile_cursor(3)
    product.ledger.faults.fail = 100  # the ledger is down: no VM can be recorded
    records: list[logs.LogRecord] = []

    class Keep(logs.Handler):
        def emit(self, record: logs.LogRecord) -> None:
            records.append(record)

    handler = Keep(logs.WARNING)
    logs.getLogger("responder").addHandler(handler)
    try:
        summary = await module.reconcile(product.services)
    finally:
        logs.getLogger("responder").removeHandler(handler)

    lines = [json.loads(record.getMessage()) for record in records]
    steps = [line["step"] for line in lines if line["kind"] == "reconcile-failure"]
    assert steps == ["record the VM", "record the VM", "the run"]  # two lines, then the stop: always said
    assert (summary.failed, summary.complete) == (6, False)
    assert await product.services.audit.reconcile_cursor() == 3  # the next run does this run's share again
    assert [line["kind"] for line in lines][-1] == "reconcile"
    await product.services.aclose()
