"""VM deleted → cleanup queued on a real Azurite queue → worker run as the host runs it.

Through the real delete handler and queue-trigger function, against Azurite
and the Graph/ARM simulators (design §5, issue "Queue and carry out cleanup").
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import pytest
from azure.functions.queue import QueueMessage as WorkerQueueMessage

from handlers import cleanup_worker, vm_created, vm_deleted, vm_power
from handlers._eventgrid import trigger_input
from localdev.azurite import Azurite
from localdev.queue_host import HostRun, queue_client, run_queue_trigger
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services, get_services
from responder.decisions.model import CleanupStatus, VmRef
from responder.ports import Services
from tests.conftest import deployed_services, ledger_row, load_event

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
OLD = VmRef(SUB, "rg-avd-prod", "vm-old-09")  # deleted 2026-11-22T16:45:10Z; its records remain
OLD_MANAGED = "7d1e0009-aaaa-4bbb-8ccc-000000000009"
OLD_ENTRA = "e0b10009-1111-4222-8333-000000000009"
QUEUE = "vm-cleanup"
DELAY = 1  # seconds: the real visibility delay, shortened by the setting

on_vm_deleted = vm_deleted.on_vm_deleted.build().get_user_function()
on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()


@pytest.fixture
async def services(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    """The app's services in enforce mode, with settings fixed before anything builds them."""
    monkeypatch.setenv("RESPONDER_MODE", "enforce")
    monkeypatch.setenv("RESPONDER_CLEANUP_DELAY_SECONDS", str(DELAY))
    # A fresh queue and audit table per test, as a fresh ledger table.
    monkeypatch.setenv("RESPONDER_CLEANUP_QUEUE", f"cleanup-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_AUDIT_TABLE", f"audit{table_name[-12:]}")
    yield await deployed_services()
    await close_services()


def delete_event(vm: str = "vm-old-09", event_id: str | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-delete.json"))
    raw["subject"] = raw["subject"].replace("vm-old-09", vm)
    raw["data"]["resourceUri"] = raw["data"]["resourceUri"].replace("vm-old-09", vm)
    if event_id:
        raw["id"] = event_id
    return raw


async def deliver(raw: dict[str, Any]) -> None:
    await on_vm_deleted(trigger_input(raw))


async def learn(vm: str) -> None:
    """The VM's write event, while it exists: how the ledger learns its vmId and computer name."""
    raw = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    raw["subject"] = raw["data"]["resourceUri"] = VmRef(SUB, "rg-avd-prod", vm).resource_id
    raw["id"] = f"write-{vm}"
    await on_vm_created(trigger_input(raw))


async def seen_then_deleted(simulators: Simulators, vm: str = "vm-old-09") -> None:
    """As in Azure: the responder saw the VM while it existed, then ARM deleted it."""
    await learn(vm)
    simulators.world.delete_vm(VmRef(SUB, "rg-avd-prod", vm).resource_id)


async def work_queue(services: Services, azurite: Azurite, wait: float = DELAY + 0.5) -> HostRun:
    await asyncio.sleep(wait)
    return await run_queue_trigger(azurite.connection_string, services.settings.cleanup.queue, on_cleanup_message)


async def audit_rows(services: Services) -> list[dict[str, Any]]:
    return [dict(row) for row in await services.audit.entries()]


async def poison_messages(services: Services, azurite: Azurite) -> list[dict[str, Any]]:
    async with queue_client(azurite.connection_string, services.settings.cleanup.poison_queue) as poison:
        return [json.loads(message.content) async for message in poison.receive_messages(max_messages=32)]


def deleted_requests(simulators: Simulators) -> list[str]:
    return [request.path.removeprefix("/v1.0/") for request in simulators.graph.served() if request.method == "DELETE"]


async def test_a_deletion_ends_with_both_records_gone_and_an_audit_row(
    services: Services, simulators: Simulators, azurite: Azurite, ledger: TableLedger
) -> None:
    await seen_then_deleted(simulators)
    await deliver(delete_event())
    run = await work_queue(services, azurite)

    assert run.completed == 1
    assert OLD_MANAGED not in simulators.tenant.managed_devices
    assert OLD_ENTRA not in simulators.tenant.devices
    (row,) = await audit_rows(services)
    assert (row["Decision"], row["ResourceId"], row["Mode"]) == ("delete", OLD.resource_id, "enforce")
    record = await ledger_row(ledger, OLD)
    assert record.cleanup_status is CleanupStatus.DONE


async def test_the_message_stays_invisible_for_the_configured_delay(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await seen_then_deleted(simulators)
    await deliver(delete_event())

    early = await work_queue(services, azurite, wait=0)
    late = await work_queue(services, azurite)

    assert (early.completed, late.completed) == (0, 1)


async def test_a_duplicated_delete_event_yields_one_cleanup(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await seen_then_deleted(simulators)
    await deliver(delete_event())
    await deliver(delete_event())  # Event Grid's retry: same id
    await deliver(delete_event(event_id="another-delivery-of-the-same-deletion"))

    await work_queue(services, azurite)

    assert len(deleted_requests(simulators)) == 2  # the Intune record and the Entra object, once each
    assert [row["Decision"] for row in await audit_rows(services)] == ["delete"]  # one cleanup, one row


async def test_a_vm_recreated_with_the_same_name_within_the_delay_is_not_cleaned(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await learn("vm-win11-01")
    await deliver(delete_event(vm="vm-win11-01"))  # ARM still (again) has vm-win11-01

    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Decision"] == "skipped"


async def test_a_device_that_checked_in_after_the_deletion_is_refused(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    simulators.tenant.managed_devices[OLD_MANAGED]["lastSyncDateTime"] = "2026-11-23T09:00:00Z"

    await seen_then_deleted(simulators)
    await deliver(delete_event())
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Decision"] == "refused"
    assert "reused" in row["Reason"]


async def test_an_ambiguous_match_is_refused_for_review(
    services: Services, simulators: Simulators, azurite: Azurite, ledger: TableLedger
) -> None:
    await seen_then_deleted(simulators, "vm-dup-04")

    await deliver(delete_event(vm="vm-dup-04"))
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Decision"] == "needs-review"


async def test_a_hybrid_device_loses_its_intune_record_and_keeps_its_synced_entra_object(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await seen_then_deleted(simulators, "vm-hybrid-06")

    await deliver(delete_event(vm="vm-hybrid-06"))
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == ["deviceManagement/managedDevices/7d1e0006-aaaa-4bbb-8ccc-000000000006"]
    (row,) = await audit_rows(services)
    assert "delete-in-ad" in row["Findings"]
    (published,) = [
        event
        for event in simulators.topic_router.events
        if event["eventType"] == "IntuneVmResponder.DeleteInActiveDirectory"
    ]
    assert published["subject"].endswith("/vm-hybrid-06")


async def test_a_throttled_graph_still_completes_the_cleanup(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    simulators.graph.throttle.every = 3

    await seen_then_deleted(simulators)
    await deliver(delete_event())
    await work_queue(services, azurite)

    assert simulators.graph.throttle.refused >= 1
    assert OLD_MANAGED not in simulators.tenant.managed_devices
    assert OLD_ENTRA not in simulators.tenant.devices


async def test_an_unreadable_message_is_parked_with_its_reason(services: Services, azurite: Azurite) -> None:
    async with queue_client(azurite.connection_string, services.settings.cleanup.queue) as queue:
        await queue.send_message('{"schema": 99}')

    run = await work_queue(services, azurite, wait=0)

    (parked,) = await poison_messages(services, azurite)
    assert run.completed == 1
    assert "unknown schema version 99" in parked["reason"]
    assert parked["message"] == '{"schema": 99}'


def _message(**changes: object) -> str:
    base = {
        "schema": 2,
        "event_id": "delete-1",
        "resource_id": OLD.resource_id,
        "subscription_id": SUB,
        "resource_group": "rg-avd-prod",
        "vm_name": "vm-old-09",
        "deleted_at": "2026-11-22T16:45:10+00:00",
        "vm_id": "vmid-old-09",
    }
    return json.dumps({**base, **changes})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_message(deleted_at="2026-11-22T16:45:10"), "no time zone"),
        (_message(vm_name=["vm-old-09"]), "vm_name must be a string"),
        (_message(managed_device_id=42), "managed_device_id must be a string"),
        (b"\xff\xfe{not utf-8", "not UTF-8"),
    ],
    ids=["deleted_at without a time zone", "a list for a name", "a number for an id", "not UTF-8"],
)
async def test_a_malformed_message_is_parked_with_its_reason_on_the_first_delivery(
    services: Services, simulators: Simulators, azurite: Azurite, body: str | bytes, reason: str
) -> None:
    raw = body if isinstance(body, bytes) else body.encode()
    await on_cleanup_message(WorkerQueueMessage(id="m1", body=raw, dequeue_count=1))  # returns: not retried

    async with queue_client(azurite.connection_string, services.settings.cleanup.poison_queue) as poison:
        (parked,) = [json.loads(message.content) async for message in poison.receive_messages(max_messages=32)]
    assert reason in parked["reason"]
    assert deleted_requests(simulators) == []


async def test_a_message_that_keeps_failing_lands_in_the_poison_queue_with_its_reason(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    simulators.graph.throttle.every = 1
    simulators.graph.throttle.status = HTTPStatus.INTERNAL_SERVER_ERROR

    await seen_then_deleted(simulators)
    await deliver(delete_event())
    run = await work_queue(services, azurite)

    (parked,) = await poison_messages(services, azurite)
    # Parked by the worker at the last but one delivery (the last is kept for parking should storage fail).
    assert (run.retried, run.completed, run.poisoned) == (3, 1, 0)
    assert "still failing after 4 attempts" in parked["reason"]
    assert OLD_MANAGED in simulators.tenant.managed_devices


@pytest.mark.parametrize("mode", ["audit"])
async def test_audit_mode_deletes_nothing_and_records_the_plan(
    mode: str, monkeypatch: pytest.MonkeyPatch, services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    await close_services()  # rebuilt below in audit mode
    monkeypatch.setenv("RESPONDER_MODE", mode)
    services = await get_services()

    await seen_then_deleted(simulators)
    await deliver(delete_event())
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Mode"] == "audit"
    assert f"audit: would delete Intune managed device {OLD_MANAGED}" in row["Actions"]


async def test_a_vm_that_carried_the_opt_out_tag_is_not_cleaned(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    tagged = VmRef(SUB, "rg-avd-prod", "vm-optout-10")
    simulators.world.set_power_state(tagged.resource_id, "deallocated")
    deallocate = copy.deepcopy(load_event("eventgrid-vm-deallocate.json"))
    deallocate["subject"] = deallocate["data"]["resourceUri"] = tagged.resource_id
    await vm_power.on_vm_power_changed.build().get_user_function()(trigger_input(deallocate))
    simulators.world.delete_vm(tagged.resource_id)

    await deliver(delete_event(vm="vm-optout-10"))
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert (row["Decision"], row["Reason"]) == (
        "refused",
        "the VM carried the opt-out tag: its records are left alone",
    )


async def test_a_vm_never_seen_alive_whose_records_carry_no_anchor_is_not_matched_by_name(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    # vm-hybrid-06's Intune record carries its name, but its hybrid Entra object no physicalIds anchor.
    simulators.world.delete_vm(VmRef(SUB, "rg-avd-prod", "vm-hybrid-06").resource_id)

    await deliver(delete_event(vm="vm-hybrid-06"))
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Decision"] == "skipped"
    assert "nothing is matched by its resource name" in row["Reason"]


async def test_an_unknown_computer_name_is_never_replaced_by_the_resource_name(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    # Class 4 of the ownership issue: ARM reports no computer name (a VM from a specialized disk
    # has no osProfile); the resource name vm-hybrid-06 is also the name of an Intune record.
    document = simulators.world.vms[VmRef(SUB, "rg-avd-prod", "vm-hybrid-06").resource_id]
    document["properties"].pop("osProfile", None)
    document["properties"]["instanceView"].pop("computerName", None)
    await seen_then_deleted(simulators, "vm-hybrid-06")

    await deliver(delete_event(vm="vm-hybrid-06"))
    await work_queue(services, azurite)

    assert deleted_requests(simulators) == []
    (row,) = await audit_rows(services)
    assert row["Decision"] == "skipped"
    assert "computer name is unknown" in row["Reason"]


async def test_concurrent_first_sends_share_one_queue_client(azurite: Azurite) -> None:
    import asyncio
    import uuid

    from azure.storage.queue.aio import QueueServiceClient

    from responder.adapters.storage_queue import StorageWorkQueue

    made: list[QueueServiceClient] = []

    def connect() -> QueueServiceClient:
        made.append(QueueServiceClient.from_connection_string(azurite.connection_string))
        return made[-1]

    name = f"first-{uuid.uuid4().hex[:10]}"
    queue = StorageWorkQueue(connect, name, f"{name}-poison")
    await asyncio.gather(queue.send("one", 0), queue.send("two", 0), queue.send_poison("three", "test"))
    await queue.close()

    assert len(made) == 1  # a second client would never be closed
