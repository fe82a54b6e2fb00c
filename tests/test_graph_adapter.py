"""The Graph adapter through msgraph-sdk's real HTTP stack against the local Graph."""

from __future__ import annotations

import inspect
import re
from http import HTTPStatus

import pytest

from localdev.sim_http import Request
from localdev.simulators import Simulators
from responder.adapters.graph import GraphDeviceDirectory
from responder.decisions.errors import RequestRefused, TransientError
from responder.decisions.facts import DeviceReads, EntraDevice, ManagedDevice
from responder.decisions.suppression import AddToGroup, RemoveFromGroup, SetAttribute, SyncDevice
from responder.ports import DeviceDirectory, Services

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
WIN11_MANAGED = "7d1e0001-aaaa-4bbb-8ccc-000000000001"
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"
WIN11_DEVICE_ID = "c3a10001-0d0e-4f00-9a00-000000000001"
HYBRID_ENTRA = "e0b10006-1111-4222-8333-000000000006"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
MISSING = "00000000-0000-4000-8000-000000000000"


async def by_name(directory: DeviceDirectory, name: str) -> list[ManagedDevice]:
    return list((await directory.read_devices(DeviceReads(names=(name,)))).by_name[name])


async def by_anchor(directory: DeviceDirectory, resource_id: str) -> tuple[EntraDevice, ...]:
    return (await directory.read_devices(DeviceReads(anchors=(resource_id,)))).by_anchor[resource_id]


def vm_resource_id(name: str) -> str:
    return f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/{name}"


async def test_the_anchor_lookup_asks_in_arm_casing_as_entra_stores_it(services: Services) -> None:
    from responder.decisions.model import VmRef

    lower_cased = VmRef(SUB, "rg-avd-prod", "vm-win11-01")  # how the responder keeps ids

    (device,) = await by_anchor(services.directory, lower_cased.arm_cased_id)

    assert device.display_name == "vm-win11-01"


async def test_a_name_lookup_is_exact_and_never_a_prefix_match(services: Services) -> None:
    found = await by_name(services.directory, "vm-win11-01")

    assert [device.id for device in found] == [WIN11_MANAGED]


async def test_a_name_lookup_ignores_case_as_windows_does(services: Services) -> None:
    found = await by_name(services.directory, "VM-Win11-01")

    assert [device.device_name for device in found] == ["vm-win11-01"]


async def test_two_devices_with_one_name_are_both_returned(services: Services) -> None:
    found = await by_name(services.directory, "vm-dup-04")

    assert len(found) == 2


async def test_a_name_lookup_asks_graph_for_equality_and_only_the_needed_fields(
    services: Services, simulators: Simulators
) -> None:
    await by_name(services.directory, "vm-win11-01")

    (request,) = simulators.graph.calls("GET", "managedDevices")
    assert request.query["$filter"] == "deviceName eq 'vm-win11-01'"
    assert "userPrincipalName" not in request.query["$select"]
    assert "emailAddress" not in request.query["$select"]


async def test_a_quote_in_a_name_is_escaped_not_injected(services: Services, simulators: Simulators) -> None:
    assert await by_name(services.directory, "x' or deviceName eq 'vm-win11-01") == []


async def test_a_missing_managed_device_reads_as_none(services: Services) -> None:
    assert await services.directory.get_managed_device(MISSING) is None


async def test_a_managed_device_reads_without_user_fields(services: Services) -> None:
    device = await services.directory.get_managed_device(WIN11_MANAGED)

    assert device is not None
    assert (device.device_name, device.azure_ad_device_id, device.model) == (
        "vm-win11-01",
        WIN11_DEVICE_ID,
        "Virtual Machine",
    )


async def test_deleting_a_managed_device_removes_it_once(services: Services, simulators: Simulators) -> None:
    assert await services.directory.delete_records(WIN11_MANAGED, None) == {"managed": True}
    assert await services.directory.delete_records(WIN11_MANAGED, None) == {"managed": False}

    assert WIN11_MANAGED not in simulators.tenant.managed_devices


async def test_sync_device_reaches_the_device_and_a_missing_one_reports_false(
    services: Services, simulators: Simulators
) -> None:
    assert await services.directory.apply([SyncDevice(WIN11_MANAGED), SyncDevice(MISSING)]) == [True, False]

    assert simulators.tenant.synced == [WIN11_MANAGED]


async def test_windows_virtual_machines_follows_every_page_and_skips_physical_pcs(
    services: Services, simulators: Simulators
) -> None:
    simulators.graph_router.page_size = 3

    names = [device.device_name async for device in services.directory.windows_virtual_machines()]

    assert "vm-win11-01-pc" not in names  # a Surface Laptop with a VM-like name
    assert len(names) == 9
    assert len(simulators.graph.calls("GET", "managedDevices")) == 3


async def test_an_entra_device_is_found_by_its_device_id(services: Services) -> None:
    (device,) = (await services.directory.read_devices(DeviceReads(device_ids=(WIN11_DEVICE_ID,)))).by_device_id[
        WIN11_DEVICE_ID
    ]

    assert device.object_id == WIN11_ENTRA
    assert device.trust_type == "AzureAd"
    assert not device.is_hybrid


async def test_an_entra_device_is_found_by_the_vm_resource_id_in_its_physical_ids(
    services: Services, simulators: Simulators
) -> None:
    (device,) = await by_anchor(services.directory, vm_resource_id("vm-win11-01"))

    assert device.object_id == WIN11_ENTRA
    (request,) = simulators.graph.calls("GET", "/devices")
    assert request.headers["consistencylevel"] == "eventual"  # inside the batch too: an advanced query


async def test_a_vm_without_a_physical_id_entry_finds_no_entra_device(services: Services) -> None:
    assert await by_anchor(services.directory, vm_resource_id("vm-dup-04")) == ()


async def test_a_hybrid_device_reads_as_hybrid(services: Services) -> None:
    (device,) = (await services.directory.read_devices(DeviceReads(entra_object_ids=(HYBRID_ENTRA,)))).entra

    assert device.is_hybrid


async def test_deleting_an_entra_device_removes_it_once(services: Services, simulators: Simulators) -> None:
    assert await services.directory.delete_records(None, WIN11_ENTRA) == {"entra": True}
    assert await services.directory.delete_records(None, WIN11_ENTRA) == {"entra": False}

    assert (await services.directory.read_devices(DeviceReads(entra_object_ids=(WIN11_ENTRA,)))).entra == ()


async def test_an_extension_attribute_is_set_and_cleared(services: Services, simulators: Simulators) -> None:
    await services.directory.apply([SetAttribute(WIN11_ENTRA, 7, "deallocated 2026-11-20T19:00:02Z")])
    marked = dict(simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"])
    await services.directory.apply([SetAttribute(WIN11_ENTRA, 7, None)])

    assert marked["extensionAttribute7"] == "deallocated 2026-11-20T19:00:02Z"
    assert simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"]["extensionAttribute7"] is None


async def test_a_hybrid_device_takes_an_extension_attribute(services: Services, simulators: Simulators) -> None:
    # Graph: a device's extensionAttributes are mastered in Entra, synced from on-premises or not.
    assert await services.directory.apply([SetAttribute(HYBRID_ENTRA, 7, "deallocated")]) == [True]

    assert simulators.tenant.devices[HYBRID_ENTRA]["extensionAttributes"]["extensionAttribute7"] == "deallocated"


async def test_there_are_only_fifteen_extension_attributes(services: Services) -> None:
    with pytest.raises(ValueError, match="1 to 15"):
        await services.directory.apply([SetAttribute(WIN11_ENTRA, 16, "x")])


async def test_group_membership_is_added_and_removed_idempotently(services: Services, simulators: Simulators) -> None:
    added = [await services.directory.apply([AddToGroup(GROUP, WIN11_ENTRA)]) for _ in range(2)]
    members = simulators.tenant.members_of(GROUP)
    removed = [await services.directory.apply([RemoveFromGroup(GROUP, WIN11_ENTRA)]) for _ in range(2)]

    assert (added, members, removed) == ([[True], [False]], [WIN11_ENTRA], [[True], [False]])
    assert simulators.tenant.members_of(GROUP) == []


async def test_a_throttled_graph_still_serves_every_operation(services: Services, simulators: Simulators) -> None:
    simulators.graph.throttle.every = 3  # every third operation: 429 with Retry-After: 1, inside batches too
    directory = services.directory

    found = await directory.read_devices(
        DeviceReads(
            managed_ids=(WIN11_MANAGED,),
            entra_object_ids=(WIN11_ENTRA,),
            anchors=(vm_resource_id("vm-win11-01"),),
            names=("vm-win11-01",),
            device_ids=(WIN11_DEVICE_ID,),
        )
    )
    outcomes = [
        (len(found.managed), len(found.entra), len(found.by_anchor[vm_resource_id("vm-win11-01")])),
        (len(found.by_name["vm-win11-01"]), len(found.by_device_id[WIN11_DEVICE_ID])),
        (await directory.get_managed_device(WIN11_MANAGED)) is not None,
        len([device async for device in directory.windows_virtual_machines()]),
        len(await directory.find_entra_devices(WIN11_DEVICE_ID)),
        await directory.apply(
            [
                SetAttribute(WIN11_ENTRA, 7, "deallocated"),
                AddToGroup(GROUP, WIN11_ENTRA),
                SyncDevice(WIN11_MANAGED),
            ]
        ),
        await directory.apply([RemoveFromGroup(GROUP, WIN11_ENTRA)]),
        await directory.delete_records(WIN11_MANAGED, WIN11_ENTRA) == {"managed": True, "entra": True},
    ]

    assert outcomes == [(1, 1, 1), (1, 1), True, 9, 1, [True, True, True], [True], True]
    assert simulators.graph.throttle.refused >= 4


async def test_a_service_unavailable_graph_is_retried_too(services: Services, simulators: Simulators) -> None:
    simulators.graph.throttle.every = 2
    simulators.graph.throttle.status = HTTPStatus.SERVICE_UNAVAILABLE

    assert await services.directory.apply([SyncDevice(WIN11_MANAGED)]) == [True]
    assert await services.directory.apply([SyncDevice(WIN11_MANAGED)]) == [True]
    assert simulators.graph.throttle.refused >= 1


async def test_a_failing_graph_surfaces_as_a_transient_error(services: Services, simulators: Simulators) -> None:
    simulators.graph.throttle.every = 1
    simulators.graph.throttle.status = HTTPStatus.INTERNAL_SERVER_ERROR

    with pytest.raises(TransientError, match="500"):
        await services.directory.delete_records(WIN11_MANAGED, None)

    assert WIN11_MANAGED in simulators.tenant.managed_devices


DESTRUCTIVE = re.compile(r"wipe|retire|reset|lock|fresh|autopilot|bitlocker|rotate|clean", re.IGNORECASE)


@pytest.mark.parametrize("surface", [DeviceDirectory, GraphDeviceDirectory])
def test_the_directory_offers_no_wipe_retire_reset_lock_or_key_rotation(surface: type) -> None:
    names = [name for name, _ in inspect.getmembers(surface) if not name.startswith("__")]

    assert names
    assert [name for name in names if DESTRUCTIVE.search(name)] == []


def test_the_local_graph_has_no_device_actions_either(simulators: Simulators) -> None:
    for action in ("wipe", "retire", "remoteLock", "cleanWindowsDevice", "rotateBitLockerKeys"):
        path = f"/v1.0/deviceManagement/managedDevices/{WIN11_MANAGED}/{action}"
        response = simulators.graph_router(Request("POST", path, {}, {}, None))
        assert response.status == HTTPStatus.NOT_FOUND


async def test_a_batched_delete_and_read_back_report_what_changed(services: Services, simulators: Simulators) -> None:
    first = await services.directory.delete_records(WIN11_MANAGED, WIN11_ENTRA)
    again = await services.directory.delete_records(WIN11_MANAGED, WIN11_ENTRA)
    left = await services.directory.records_exist(WIN11_MANAGED, WIN11_ENTRA)

    assert (first, again, left) == (
        {"managed": True, "entra": True},
        {"managed": False, "entra": False},
        {"managed": False, "entra": False},
    )


async def test_throttled_requests_inside_a_batch_are_sent_again(services: Services, simulators: Simulators) -> None:
    simulators.graph.throttle.every = 2  # every second operation, inside batches too

    assert await services.directory.delete_records(WIN11_MANAGED, WIN11_ENTRA) == {"managed": True, "entra": True}
    assert simulators.graph.throttle.refused >= 1
    assert WIN11_MANAGED not in simulators.tenant.managed_devices


async def test_an_anchor_in_a_mixed_case_resource_group_is_found_by_the_id_as_arm_spells_it(
    services: Services, simulators: Simulators
) -> None:
    from responder.decisions.model import Incarnation, VmRef
    from responder.decisions.ownership import Subject
    from responder.stages.matching import gather_candidates

    arm_id = f"/subscriptions/{SUB}/resourceGroups/RG-AVD-Prod/providers/Microsoft.Compute/virtualMachines/AVD-Host-7"
    simulators.tenant.devices["obj-mixed"] = {
        "id": "obj-mixed",
        "deviceId": "dev-mixed",
        "displayName": "renamed-host",  # only the anchor can find it
        "trustType": "AzureAd",
        "physicalIds": [f"[AzureResourceId]:{arm_id}"],
        "extensionAttributes": {},
    }
    vm = VmRef(SUB, "rg-avd-prod", "avd-host-7")  # how the responder keeps ids: lower case

    _, unknown_spelling = await gather_candidates(Subject(vm), None, services.directory)
    _, known_spelling = await gather_candidates(Subject(vm, Incarnation(arm_id=arm_id)), None, services.directory)

    assert [obj.object_id for obj in unknown_spelling] == []
    assert [obj.object_id for obj in known_spelling] == ["obj-mixed"]


async def test_a_plans_writes_go_in_one_call_each_answered_on_its_own(
    services: Services, simulators: Simulators
) -> None:
    """A refused write is answered as the refusal; the others still happen."""
    simulators.graph.faults.fail = [403]
    simulators.graph.faults.path_prefix = f"/v1.0/groups/{GROUP}"

    outcomes = await services.directory.apply([AddToGroup(GROUP, WIN11_ENTRA), SetAttribute(WIN11_ENTRA, 7, "x")])

    assert isinstance(outcomes[0], RequestRefused)
    assert outcomes[1] is True
    assert len(simulators.graph.requests) == 1  # one round trip
    assert simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"]["extensionAttribute7"] == "x"


async def test_a_round_of_lookups_is_one_call(services: Services, simulators: Simulators) -> None:
    await services.directory.read_devices(
        DeviceReads(anchors=(vm_resource_id("vm-win11-01"),), names=("vm-win11-01",), device_ids=(WIN11_DEVICE_ID,))
    )

    assert len(simulators.graph.requests) == 1
    assert len(simulators.graph.operations) == 3
