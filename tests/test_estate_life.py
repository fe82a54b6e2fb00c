"""How real estates live (issue 26; design §2 and §5), each case once, through the real handler functions,
the queue host, Azurite and the simulators in enforce mode: a VM re-created from its kept OS
disk, a deletion Event Grid reports twice."""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from handlers import reconcile_timer
from localdev.azurite import Azurite
from localdev.simulators import Simulators
from responder.composition import close_services
from responder.decisions.events import vm_ref_from_resource_id
from responder.decisions.model import VmRecord, VmRef
from responder.ports import Services
from tests.conftest import deployed_services, ledger_row
from tests.test_wrong_device_regressions import (
    CREATED,
    DAY,
    GROUP,
    SUB,
    add_device,
    add_vm,
    cleanup_rows,
    deletions,
    deliver,
    enforcing,
    seen,
    work_queue,
    writes,
)

__all__ = ["enforcing"]  # the fixture, shared with the wrong-device regressions
vm_ids = itertools.count(1)
on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()


def delete_keeping_the_os_disk(simulators: Simulators, vm: VmRef) -> dict[str, Any]:
    """The VM goes, its OS disk stays (`osDisk.deleteOption: Detach`); returns the deleted VM's document."""
    document = simulators.world.vms[vm.resource_id]
    document["properties"]["storageProfile"]["osDisk"]["deleteOption"] = "Detach"
    return simulators.world.delete_vm(vm.resource_id)


def recreate_from_disk(simulators: Simulators, deleted: dict[str, Any], disk_id: str | None = None) -> str:
    """Created again under the same resource id by attaching an OS disk (the deleted VM's unless
    `disk_id`): a new vmId, no osProfile; the guest reports the computer name it already had."""
    document = copy.deepcopy(deleted)
    properties = document["properties"]
    properties.pop("osProfile", None)
    properties["storageProfile"].pop("imageReference", None)
    os_disk = properties["storageProfile"]["osDisk"]
    os_disk["createOption"] = "Attach"
    if disk_id is not None:
        os_disk["managedDisk"]["id"] = disk_id
    properties["vmId"] = f"vmid-attached-{next(vm_ids)}"
    properties["timeCreated"] = (CREATED + 2 * DAY).isoformat()
    simulators.world.put_vm(document)
    return str(os_disk["managedDisk"]["id"])


# --- same disk, same machine ----------------------------------------------------------------


async def test_the_cleanup_of_a_vm_recreated_from_its_kept_os_disk_deletes_nothing(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-a", "host-a")
    managed, entra = add_device(simulators, "host-a", anchor=vm)
    await seen(vm)
    deleted = delete_keeping_the_os_disk(simulators, vm)
    await deliver("delete", vm, CREATED + DAY)
    disk = recreate_from_disk(simulators, deleted)  # to change its zone: within the cleanup's delay
    await deliver("write", vm, CREATED + 2 * DAY)

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    assert {managed, entra} <= {*simulators.tenant.managed_devices, *simulators.tenant.devices}
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "skipped"
    assert disk.lower() in str(row["Reason"])
    assert "same Windows installation" in str(row["Reason"])


async def test_a_vm_recreated_from_its_kept_os_disk_takes_over_its_device(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-b", "host-b")
    _, entra = add_device(simulators, "host-b", anchor=vm)
    await seen(vm)
    simulators.world.set_power_state(vm.resource_id, "deallocated")
    await deliver("deallocate", vm, CREATED + timedelta(hours=3))  # the ledger learns its device
    simulators.world.set_power_state(vm.resource_id, "running")
    await deliver("start", vm, CREATED + timedelta(hours=4))
    deleted = delete_keeping_the_os_disk(simulators, vm)
    await deliver("delete", vm, CREATED + DAY)
    recreate_from_disk(simulators, deleted)
    await deliver("write", vm, CREATED + 2 * DAY)
    simulators.graph.reset_calls()

    simulators.world.set_power_state(vm.resource_id, "deallocated")
    await deliver("deallocate", vm, CREATED + 3 * DAY)

    assert writes(simulators) == [f"POST /v1.0/groups/{GROUP}/members/$ref"]
    assert simulators.tenant.members_of(GROUP) == [entra]
    row = await ledger_row(enforcing.ledger, vm)
    assert row.device.learnt_for_vm_id == row.incarnation.vm_id
    assert row.incarnation.machine_since is not None
    assert row.incarnation.created_at is not None
    assert (
        row.incarnation.machine_since < row.incarnation.created_at
    )  # the installation is older than the VM that boots it now


async def test_a_vm_recreated_from_another_disk_while_the_deleted_ones_disk_is_unknown_is_left_alone(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    """A ledger row from before OS disks were recorded: which disk the deleted VM booted is unknown, and
    the VM now under its resource id boots an attached disk, so it may be the same installation."""
    vm = add_vm(simulators, "estate-c", "host-c")
    add_device(simulators, "host-c", anchor=vm)
    await seen(vm)

    def unknown_disk(row: VmRecord) -> tuple[VmRecord, None]:
        return replace(row, incarnation=replace(row.incarnation, os_disk_id=None, machine_since=None)), None

    await enforcing.ledger.update(vm, unknown_disk)
    deleted = delete_keeping_the_os_disk(simulators, vm)
    await deliver("delete", vm, CREATED + DAY)
    recreate_from_disk(simulators, deleted)

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "refused"
    assert "attaching an existing OS disk" in str(row["Reason"])


async def test_a_deleted_vms_kept_disk_left_unattached_does_not_stop_its_cleanup(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-d", "host-d")
    managed, entra = add_device(simulators, "host-d", anchor=vm)
    await seen(vm)
    delete_keeping_the_os_disk(simulators, vm)
    await deliver("delete", vm, CREATED + DAY)

    await work_queue(enforcing, azurite)

    assert sorted(deletions(simulators)) == sorted(
        [f"DELETE /v1.0/deviceManagement/managedDevices/{managed}", f"DELETE /v1.0/devices/{entra}"]
    )


# --- duplicated delete events ---------------------------------------------------------------


async def test_two_delete_events_of_one_deletion_make_one_cleanup_and_no_refusal(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-e", "host-e")
    managed, entra = add_device(simulators, "host-e", anchor=vm)
    await seen(vm)
    simulators.world.delete_vm(vm.resource_id)
    first = await deliver("delete", vm, CREATED + DAY)
    await work_queue(enforcing, azurite)
    twin = await deliver("delete", vm, CREATED + DAY + timedelta(seconds=20))  # another event id, same deletion
    await work_queue(enforcing, azurite)

    assert (first.outcome, twin.outcome) == ("recorded", "recorded")
    assert sorted(deletions(simulators)) == sorted(
        [f"DELETE /v1.0/deviceManagement/managedDevices/{managed}", f"DELETE /v1.0/devices/{entra}"]
    )
    assert [row["Decision"] for row in await cleanup_rows(enforcing)] == ["delete"]


# --- an estate older than the responder: one proof on every path ------------------------------


async def test_the_deletion_of_a_vm_never_read_cleans_up_the_record_anchored_to_it(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-f", "host-f")  # there before the responder: no event of it was handled
    managed, entra = add_device(simulators, "host-f", anchor=vm)
    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + DAY)

    await work_queue(enforcing, azurite)

    assert sorted(deletions(simulators)) == sorted(
        [f"DELETE /v1.0/deviceManagement/managedDevices/{managed}", f"DELETE /v1.0/devices/{entra}"]
    )
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "delete"
    assert "physicalIds anchor" in str(row["Reason"])
    assert "opt-out tag is unknown" in str(row["Reason"])


async def test_the_deletion_of_a_vm_never_read_leaves_a_record_of_its_name_without_an_anchor_alone(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    vm = add_vm(simulators, "estate-g", "host-g")
    add_device(simulators, "host-g", anchor=None)  # an on-premises machine, or a join that wrote no anchor
    simulators.world.delete_vm(vm.resource_id)
    await deliver("delete", vm, CREATED + DAY)

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []


async def test_a_stale_anchor_of_a_vm_moved_elsewhere_does_not_pass_for_a_deleted_vms(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    """A VM moved to another resource group keeps its Entra object's old anchor. A VM later created
    under the old resource id and deleted, never read, must not take the moved VM's records along,
    even while the moved VM is deallocated and silent."""
    old_place = add_vm(simulators, "estate-h", "host-h")
    managed, entra = add_device(simulators, "host-h", anchor=old_place)
    moved = simulators.world.delete_vm(old_place.resource_id)  # the move: a new resource id, same vmId
    moved["id"] = moved["id"].replace("/rg-avd-prod/", "/rg-avd-moved/")
    simulators.world.put_vm(moved)
    simulators.world.set_power_state(moved["id"], "deallocated")
    later = add_vm(simulators, "estate-h", "host-h2", created=CREATED + DAY)
    simulators.world.delete_vm(later.resource_id)
    await deliver("delete", later, CREATED + 2 * DAY)

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    assert {managed, entra} <= {*simulators.tenant.managed_devices, *simulators.tenant.devices}
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "refused"
    assert "rg-avd-moved" in str(row["Reason"])


async def test_a_vm_the_ledger_knew_and_moved_elsewhere_keeps_its_records(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    """A move keeps the vmId and sends no event the app hears; a delete event for the old resource
    id (one that did not go through there) must not take the moved VM's records along."""
    vm = add_vm(simulators, "estate-i", "host-i")
    add_device(simulators, "host-i", anchor=vm)
    await seen(vm)
    simulators.world.move_vm(vm.resource_id, "rg-avd-moved")
    await deliver("delete", vm, CREATED + DAY)

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "skipped"
    assert "rg-avd-moved" in str(row["Reason"])


# --- adopting an estate -----------------------------------------------------------------------


async def test_reconciliation_records_every_vm_of_the_estate_whatever_its_bound(
    enforcing: Services, simulators: Simulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_RECONCILE_MAX_ITEMS", "1")
    await close_services()
    services = await deployed_services()

    await on_reconcile_timer(TimerRequest(past_due=False))

    for document in list(simulators.world.vms.values()):
        if not str(document["id"]).lower().startswith(f"/subscriptions/{SUB}/"):
            continue
        ref = vm_ref_from_resource_id(str(document["id"]))
        assert ref is not None
        row = await ledger_row(services.ledger, ref)
        assert row.incarnation.vm_id == document["properties"]["vmId"]
        assert (
            row.incarnation.os_disk_id
            == document["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"].lower()
        )
        assert row.incarnation.created_at is not None
    optout = await ledger_row(services.ledger, VmRef(SUB, "rg-avd-prod", "vm-optout-10"))
    assert optout.opted_out


async def test_a_vm_recreated_from_its_kept_disk_and_then_moved_keeps_its_records(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    """Found by the stateful model: the disk's resource id changes with the move, so ARM answers 404 for
    the deleted VM's disk; the VM booting it elsewhere still carries the disk's name."""
    vm = add_vm(simulators, "estate-j", "host-j")
    add_device(simulators, "host-j", anchor=vm)
    await seen(vm)
    deleted = delete_keeping_the_os_disk(simulators, vm)
    await deliver("delete", vm, CREATED + DAY)
    recreate_from_disk(simulators, deleted)
    simulators.world.move_vm(vm.resource_id, "rg-avd-moved")

    await work_queue(enforcing, azurite)

    assert deletions(simulators) == []
    (row,) = await cleanup_rows(enforcing)
    assert row["Decision"] == "skipped"
    assert "rg-avd-moved" in str(row["Reason"])


# --- hosts rebuilt under the same names ----------------------------------------------------------


async def test_reconciliation_cleans_the_record_of_a_host_rebuilt_under_its_name(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    """A pooled host rebuilt from the image under the same resource and computer name, its deletion
    never heard: the old record is silent while a later VM of its name runs, so only the old one goes."""
    old = add_vm(simulators, "estate-k", "host-k")
    old_managed, old_entra = add_device(simulators, "host-k", anchor=old)
    simulators.world.delete_vm(old.resource_id)  # its delete event was dead-lettered
    rebuilt = add_vm(simulators, "estate-k", "host-k", created=CREATED + 2 * DAY)
    new_managed, new_entra = add_device(
        simulators,
        "host-k",
        anchor=rebuilt,
        enrolled=CREATED + 2 * DAY + timedelta(hours=1),
        last_sync=datetime.now(UTC),
    )

    await on_reconcile_timer(TimerRequest(past_due=False))
    await work_queue(enforcing, azurite)

    assert sorted(deletions(simulators)) == sorted(
        [f"DELETE /v1.0/deviceManagement/managedDevices/{old_managed}", f"DELETE /v1.0/devices/{old_entra}"]
    )
    assert {new_managed, new_entra} <= {*simulators.tenant.managed_devices, *simulators.tenant.devices}


async def test_the_deletion_of_a_host_never_read_and_rebuilt_under_its_name_cleans_the_old_record_only(
    enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    old = add_vm(simulators, "estate-l", "host-l")  # older than the responder
    old_managed, old_entra = add_device(simulators, "host-l", anchor=old)
    simulators.world.delete_vm(old.resource_id)
    await deliver("delete", old, CREATED + DAY)
    rebuilt = add_vm(simulators, "estate-l", "host-l", created=CREATED + DAY + timedelta(minutes=20))
    new_managed, new_entra = add_device(
        simulators, "host-l", anchor=rebuilt, enrolled=CREATED + DAY + timedelta(minutes=40)
    )

    await work_queue(enforcing, azurite)

    assert sorted(deletions(simulators)) == sorted(
        [f"DELETE /v1.0/deviceManagement/managedDevices/{old_managed}", f"DELETE /v1.0/devices/{old_entra}"]
    )
    assert {new_managed, new_entra} <= {*simulators.tenant.managed_devices, *simulators.tenant.devices}
