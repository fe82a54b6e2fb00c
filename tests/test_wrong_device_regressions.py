"""The seven ways a name-matching cleanup tool touches the wrong device or loses a cleanup,
each once, through the real handler functions against Azurite and the simulators in
enforce mode. (Issue "Never the wrong device, never a lost cleanup"; the stateful model in
`test_model.py` searches for new ones.)"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import cleanup_worker, vm_created, vm_deleted, vm_power
from localdev.azurite import Azurite
from localdev.queue_host import run_queue_trigger
from localdev.sim_http import WRITES
from localdev.simulators import Simulators
from responder.composition import close_services, get_services
from responder.decisions.model import VmRef
from responder.ports import Services
from responder.stages.pipeline import Handled
from tests.conftest import load_event, outcome_of

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
OTHER_SUB = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"  # watched, not in the allow-list
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
CREATED = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
ENROLLED = CREATED + timedelta(hours=1)
DAY = timedelta(days=1)
TEMPLATE_VM = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
SAMPLES = {
    "write": "eventgrid-vm-write.json",
    "deallocate": "eventgrid-vm-deallocate.json",
    "start": "eventgrid-vm-start.json",
    "delete": "eventgrid-vm-delete.json",
}
FUNCTIONS = {
    "write": vm_created.on_vm_created.build().get_user_function(),
    "deallocate": vm_power.on_vm_power_changed.build().get_user_function(),
    "start": vm_power.on_vm_power_changed.build().get_user_function(),
    "delete": vm_deleted.on_vm_deleted.build().get_user_function(),
}
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()
numbers = itertools.count(100)


@pytest.fixture
async def enforcing(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    for name, value in {
        "RESPONDER_MODE": "enforce",
        "RESPONDER_CLEANUP_DELAY_SECONDS": "0",
        "RESPONDER_CLEANUP_QUEUE": f"cleanup-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_WATCHED_SUBSCRIPTIONS": f"{SUB},{OTHER_SUB}",
    }.items():
        monkeypatch.setenv(name, value)
    yield await get_services()
    await close_services()


# --- the world -----------------------------------------------------------------------


def add_vm(
    simulators: Simulators,
    name: str,
    computer_name: str | None,
    *,
    subscription: str = SUB,
    created: datetime = CREATED,
    power: str = "running",
) -> VmRef:
    """A VM like the sample's vm-win11-01 under a new resource id; a new vmId each time (an incarnation)."""
    ref = VmRef(subscription, "rg-avd-prod", name)
    document = copy.deepcopy(simulators.world.vms[TEMPLATE_VM.resource_id])
    text = json.dumps(document).replace(f"/subscriptions/{SUB}/", f"/subscriptions/{subscription}/")
    document = json.loads(text.replace("vm-win11-01", name))
    properties = document["properties"]
    properties["vmId"] = f"vmid-{name}-{next(numbers)}"
    properties["timeCreated"] = created.isoformat()
    for view in (properties["osProfile"], properties.get("instanceView", {})):
        view.pop("computerName", None)
        if computer_name is not None:
            view["computerName"] = computer_name
    simulators.world.create_vm(document)
    simulators.world.set_power_state(ref.resource_id, power)
    return ref


def add_device(
    simulators: Simulators,
    name: str,
    *,
    anchor: VmRef | None,
    enrolled: datetime = ENROLLED,
    last_sync: datetime | None = None,
    signed_in: datetime | None = None,
    entra_name: str | None = None,
    links_to: str | None = None,
) -> tuple[str, str]:
    """An Intune record and its Entra object (Entra-joined, ARM-cased anchor); returns their ids.
    `links_to`: the Intune record links to that existing Entra deviceId instead of a new object."""
    number = next(numbers)
    managed_id, object_id, device_id = f"md-reg-{number}", f"obj-reg-{number}", f"dev-reg-{number}"
    simulators.tenant.managed_devices[managed_id] = {
        "id": managed_id,
        "deviceName": name,
        "model": "Virtual Machine",
        "operatingSystem": "Windows",
        "azureADDeviceId": links_to or device_id,
        "enrolledDateTime": enrolled.isoformat(),
        "lastSyncDateTime": (last_sync or enrolled).isoformat(),
    }
    if links_to is None:
        arm_id = anchor.arm_cased_id if anchor else None
        simulators.tenant.devices[object_id] = {
            "id": object_id,
            "deviceId": device_id,
            "displayName": entra_name or name,
            "trustType": "AzureAd",
            "physicalIds": [f"[AzureResourceId]:{arm_id}"] if arm_id else [],
            "registrationDateTime": enrolled.isoformat(),
            "approximateLastSignInDateTime": (signed_in or last_sync or enrolled).isoformat(),
            "extensionAttributes": {},
        }
    return managed_id, object_id


# --- what Event Grid and the host do ---------------------------------------------------


async def deliver(action: str, vm: VmRef, at: datetime) -> Handled:
    """One event about `vm`, through the function its event subscription targets."""
    template = load_event(SAMPLES[action])
    text = json.dumps(template).replace(template["subject"], vm.resource_id)
    raw = json.loads(text)
    raw["subject"] = raw["data"]["resourceUri"] = vm.resource_id
    raw["id"] = f"{action}-{vm.name}-{next(numbers)}"
    raw["eventTime"] = at.isoformat().replace("+00:00", "Z")
    return await outcome_of(FUNCTIONS[action], raw)


async def work_queue(services: Services, azurite: Azurite) -> None:
    await run_queue_trigger(azurite.connection_string, services.settings.cleanup.queue, on_cleanup_message)


def writes(simulators: Simulators) -> list[str]:
    return [f"{r.method} {r.path}" for r in simulators.graph.served() if r.method in WRITES]


def deletions(simulators: Simulators) -> list[str]:
    return [write for write in writes(simulators) if write.startswith("DELETE") and "$ref" not in write]


async def cleanup_rows(services: Services) -> list[dict[str, Any]]:
    return [row for row in await services.audit.entries() if row["PartitionKey"] == "cleanup"]


async def seen(vm: VmRef, at: datetime = CREATED + timedelta(minutes=2)) -> None:
    """The VM's write event reaches the responder while the VM exists: the ledger learns its vmId."""
    assert (await deliver("write", vm, at)).outcome == "recorded"


# --- 1. a name match whose physicalIds anchor it to another VM --------------------------


async def test_a_device_anchored_to_another_running_vm_is_neither_marked_nor_deleted(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-a", "host-1")
    neighbour = add_vm(simulators, "reg-b", "host-1b")
    add_device(simulators, "host-1", anchor=neighbour)  # host-1's name, reg-b's anchor
    await seen(vm)

    simulators.world.set_power_state(vm.resource_id, "deallocated")
    dealloc = await deliver("deallocate", vm, CREATED + DAY)
    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + 2 * DAY)
    await work_queue(enforcing, azurite)

    assert writes(simulators) == []
    assert "anchor" in dealloc.reason
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] in {"refused", "needs-review"}


async def test_a_device_anchored_to_a_vm_outside_the_allow_lists_is_neither_marked_nor_deleted(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-c", "host-2")
    elsewhere = add_vm(simulators, "reg-c", "host-2", subscription=OTHER_SUB)  # same names, another subscription
    add_device(simulators, "host-2", anchor=elsewhere)
    await seen(vm)

    simulators.world.set_power_state(vm.resource_id, "deallocated")
    await deliver("deallocate", vm, CREATED + DAY)
    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + 2 * DAY)
    await work_queue(enforcing, azurite)

    assert writes(simulators) == []


# --- 2. the azureADDeviceId "confirmation" -------------------------------------------


async def test_an_intune_record_linked_to_an_entra_object_named_for_another_vm_is_not_deleted(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-d", "host-3")
    _, other_object = add_device(simulators, "host-9", anchor=None)  # another machine's Entra object
    other_device_id = simulators.tenant.devices[other_object]["deviceId"]
    add_device(simulators, "host-3", anchor=None, links_to=other_device_id)
    await seen(vm)

    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + 2 * DAY)
    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []


async def test_an_entra_object_claimed_by_two_intune_records_is_left_alone(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-e", "host-4")
    _, own_object = add_device(simulators, "host-4", anchor=vm)
    add_device(simulators, "host-4", anchor=None, links_to=simulators.tenant.devices[own_object]["deviceId"])
    await seen(vm)

    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + 2 * DAY)
    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] in {"refused", "needs-review"}


# --- 3. activity after the deletion, on Entra -----------------------------------------


async def test_an_entra_sign_in_after_the_deletion_means_the_name_was_reused(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-f", "host-5")
    deleted_at = CREATED + 2 * DAY
    add_device(simulators, "host-5", anchor=vm, signed_in=deleted_at + timedelta(hours=3))
    await seen(vm)

    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, deleted_at)
    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    (row,) = await cleanup_rows(enforcing)
    assert "signed in to Entra" in row["Reason"]


# --- 4. an unknown computer name ---------------------------------------------------------


async def test_a_vm_without_a_computer_name_is_not_marked_by_its_resource_name(
    enforcing: Services, simulators: Simulators
) -> None:
    vm = add_vm(simulators, "reg-g", None)  # ARM doesn't report a computer name (e.g. a specialized disk)
    add_vm(simulators, "reg-h", "reg-g")  # another running VM whose computer name is reg-g
    add_device(simulators, "reg-g", anchor=None)  # that VM's device
    await seen(vm)

    simulators.world.set_power_state(vm.resource_id, "deallocated")
    await deliver("deallocate", vm, CREATED + DAY)

    assert writes(simulators) == []


# --- 5. a later deletion of the same resource id ------------------------------------------


async def test_a_real_deletion_after_a_cancelled_one_is_cleaned(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-i", "host-6")
    managed, entra = add_device(simulators, "host-6", anchor=vm)
    await seen(vm)
    await deliver("delete", vm, CREATED + DAY)  # the delete failed: ARM still has the VM
    await work_queue(enforcing, azurite)

    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + 2 * DAY)
    await work_queue(enforcing, azurite)

    assert sorted(deletions(simulators)) == [
        f"DELETE /v1.0/deviceManagement/managedDevices/{managed}",
        f"DELETE /v1.0/devices/{entra}",
    ]


async def test_a_recreated_vm_deleted_again_gets_its_own_cleanup(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    first = add_vm(simulators, "reg-j", "host-7")
    first_records = add_device(simulators, "host-7", anchor=first)
    await seen(first)
    simulators.world.delete_vm(first.resource_id)
    await deliver("delete", first, CREATED + DAY)
    await work_queue(enforcing, azurite)

    again = CREATED + 3 * DAY
    second = add_vm(simulators, "reg-j", "host-7", created=again)
    second_records = add_device(simulators, "host-7", anchor=second, enrolled=again + timedelta(hours=1))
    await seen(second, again + timedelta(minutes=2))
    simulators.world.delete_vm(second.resource_id)
    await deliver("delete", second, again + DAY)
    await work_queue(enforcing, azurite)

    gone = {*simulators.tenant.managed_devices, *simulators.tenant.devices}
    assert not {*first_records, *second_records} & gone
    assert [row["Decision"] for row in await cleanup_rows(enforcing)] == ["delete", "delete"]


# --- 6. a saved mapping and a re-created VM -------------------------------------------------


async def test_a_recreated_vm_never_inherits_the_old_device_mapping(
    enforcing: Services, simulators: Simulators
) -> None:
    first = add_vm(simulators, "reg-k", "host-8")
    _, old_object = add_device(simulators, "host-8", anchor=first)
    await seen(first)
    simulators.world.set_power_state(first.resource_id, "deallocated")
    await deliver("deallocate", first, CREATED + DAY)  # the ledger learns host-8's records for this vmId
    simulators.world.set_power_state(first.resource_id, "running")
    await deliver("start", first, CREATED + DAY + timedelta(hours=1))
    simulators.world.delete_vm(first.resource_id)  # its cleanup waits in the queue
    await deliver("delete", first, CREATED + 2 * DAY)

    again = CREATED + 3 * DAY
    second = add_vm(simulators, "reg-k", "host-8", created=again)
    _, new_object = add_device(simulators, "host-8", anchor=second, enrolled=again + timedelta(hours=1))
    await seen(second, again + timedelta(minutes=2))
    simulators.graph.reset_calls()
    simulators.world.set_power_state(second.resource_id, "deallocated")
    await deliver("deallocate", second, again + DAY)

    assert writes(simulators) == [f"POST /v1.0/groups/{GROUP}/members/$ref"]
    (mark,) = [r for r in simulators.graph.served() if r.method == "POST"]
    assert mark.body["@odata.id"].endswith(f"/directoryObjects/{new_object}")
    assert old_object not in json.dumps(mark.body)


# --- 7. a partly done cleanup --------------------------------------------------------------


async def test_a_cleanup_interrupted_after_the_intune_deletion_resumes_from_the_recorded_ids(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "reg-l", "host-9")
    managed, entra = add_device(simulators, "host-9", anchor=vm)
    await seen(vm)
    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + DAY)
    # Entra refuses the deletion past the client's retries, twice: the Intune record is gone by then.
    graph_faults = simulators.graph.faults
    graph_faults.fail, graph_faults.methods, graph_faults.path_prefix = (
        [500, 500],
        frozenset({"DELETE"}),
        "/v1.0/devices/",
    )

    await work_queue(enforcing, azurite)

    assert managed not in simulators.tenant.managed_devices
    assert entra not in simulators.tenant.devices
    searches = [r for r in simulators.graph.served() if r.method == "GET" and r.path.endswith("/managedDevices")]
    assert len(searches) == 1  # the redeliveries resumed from the recorded ids, not from a new search by name
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "delete"
    assert managed in row["Actions"]
    assert entra in row["Actions"]
    assert "already gone" not in row["Actions"]
