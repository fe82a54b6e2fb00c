"""Never touch the wrong device (design §2, §5): generated tenants full of look-alikes run
through the real delete handler and cleanup worker against Azurite and the simulators."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers import cleanup_worker, vm_created, vm_deleted
from handlers._eventgrid import trigger_input
from localdev.azurite import Azurite
from localdev.queue_host import queue_client, run_queue_trigger
from localdev.simulators import Simulators
from responder.composition import close_services, get_services
from responder.decisions.model import VmRef
from responder.ports import Services
from tests.conftest import load_event, log_lines

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
OTHER_SUB = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"
DELETED_AT = datetime(2026, 11, 22, 16, 45, 10, 999000, tzinfo=UTC)  # the sample delete event's time
BEFORE, AFTER = DELETED_AT - timedelta(days=3), DELETED_AT + timedelta(hours=5)

on_vm_deleted = vm_deleted.on_vm_deleted.build().get_user_function()
on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()
counter = itertools.count()


@dataclass(frozen=True)
class Device:
    """One generated Intune record (and its Entra object)."""

    name: str
    model: str = "Virtual Machine"
    enrolled: datetime = BEFORE
    last_sync: datetime = BEFORE
    hybrid: bool = False
    anchor: str | None = None  # the resource id its Entra object's physicalIds name (ARM casing)


def arm_id(subscription: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/RG-AVD-PROD/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def own(base: str) -> st.SearchStrategy[Device]:
    """The deleted VM's own record: Entra-joined like the VM, anchored to it (in ARM casing)."""
    return st.builds(Device, name=st.just(base), anchor=st.just(arm_id(SUB, base)))


def look_alikes(base: str) -> st.SearchStrategy[Device]:
    return st.one_of(
        st.builds(
            Device, name=st.sampled_from([f"{base}0", f"{base}-pc", f"x{base}", base[:-1]])
        ),  # prefixes, suffixes
        st.builds(Device, name=st.just(base.upper())),  # the same name again: a duplicate
        st.builds(Device, name=st.just(base), model=st.sampled_from(["Surface Laptop 5", "OptiPlex 7010"])),
        st.builds(Device, name=st.just(base), enrolled=st.just(AFTER), last_sync=st.just(AFTER)),  # name reused
        st.builds(Device, name=st.just(base), last_sync=st.just(AFTER)),  # checked in after the deletion
        # the same computer name on a VM of another subscription, anchored there
        st.builds(Device, name=st.just(base), anchor=st.just(arm_id(OTHER_SUB, base))),
        st.builds(Device, name=st.just(base), hybrid=st.just(True)),  # hybrid-joined: not an Entra-joined VM's
    )


@st.composite
def tenants(draw: st.DrawFn) -> tuple[str, list[Device]]:
    base = f"vm{draw(st.integers(1, 9))}"
    devices = draw(st.lists(look_alikes(base), max_size=4))
    if draw(st.booleans()):
        devices.append(draw(own(base)))
    return base, draw(st.permutations(devices))


def seed_tenant(simulators: Simulators, devices: list[Device]) -> dict[str, Device]:
    """Replace the simulated tenant with these devices; returns them by managed device id."""
    simulators.tenant.managed_devices.clear()
    simulators.tenant.devices.clear()
    by_id = {}
    for index, device in enumerate(devices):
        managed_id, object_id, device_id = (f"{prefix}-{index:04d}" for prefix in ("md", "obj", "dev"))
        simulators.tenant.managed_devices[managed_id] = {
            "id": managed_id,
            "deviceName": device.name,
            "model": device.model,
            "operatingSystem": "Windows",
            "azureADDeviceId": device_id,
            "enrolledDateTime": device.enrolled.isoformat(),
            "lastSyncDateTime": device.last_sync.isoformat(),
        }
        simulators.tenant.devices[object_id] = {
            "id": object_id,
            "deviceId": device_id,
            "displayName": device.name,
            "trustType": "ServerAd" if device.hybrid else "AzureAd",
            "onPremisesSyncEnabled": device.hybrid or None,
            "physicalIds": [f"[AzureResourceId]:{device.anchor}"] if device.anchor else [],
            "extensionAttributes": {},
        }
        by_id[managed_id] = device
    return by_id


def expected_deletion(base: str, devices: dict[str, Device]) -> str | None:
    """The record that is provably the deleted VM's: anchored to it, and quiet since its deletion."""
    mine = arm_id(SUB, base)
    for key, device in devices.items():
        if device.anchor == mine and device.enrolled <= DELETED_AT and device.last_sync <= DELETED_AT:
            return key
    return None


def add_vm(simulators: Simulators, name: str) -> VmRef:
    """A VM in the simulated ARM like the sample's vm-win11-01, created well before the generated records."""
    ref = VmRef(SUB, "rg-avd-prod", name)
    document = copy.deepcopy(simulators.world.vms[VmRef(SUB, "rg-avd-prod", "vm-win11-01").resource_id])
    document["id"] = document["id"].replace("vm-win11-01", name)
    document["name"] = name
    document["properties"]["vmId"] = f"vmid-{name}"
    document["properties"]["timeCreated"] = (BEFORE - timedelta(days=30)).isoformat()
    document["properties"]["osProfile"]["computerName"] = name
    document["properties"].get("instanceView", {})["computerName"] = name
    simulators.world.create_vm(document)
    return ref


async def seen_then_deleted(simulators: Simulators, name: str) -> None:
    """The VM's write event reaches the responder while it exists (the ledger learns it); then it is deleted."""
    ref = add_vm(simulators, name)
    raw = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    raw["subject"] = raw["data"]["resourceUri"] = ref.resource_id
    raw["id"] = f"write-{name}-{next(counter)}"
    await on_vm_created(trigger_input(raw))
    simulators.world.delete_vm(ref.resource_id)


def delete_event(vm: str) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-delete.json"))
    raw["subject"] = raw["data"]["resourceUri"] = VmRef(SUB, "rg-avd-prod", vm).resource_id
    raw["id"] = f"delete-{vm}-{next(counter)}"
    return raw


@pytest.fixture
async def enforcing(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    monkeypatch.setenv("RESPONDER_MODE", "enforce")
    monkeypatch.setenv("RESPONDER_CLEANUP_DELAY_SECONDS", "0")
    monkeypatch.setenv("RESPONDER_CLEANUP_QUEUE", f"cleanup-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_AUDIT_TABLE", f"audit{table_name[-12:]}")
    yield await get_services()
    await close_services()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenant=tenants())
def test_cleanup_deletes_the_vms_own_record_and_nothing_else(
    tenant: tuple[str, list[Device]], enforcing: Services, simulators: Simulators, azurite: Azurite
) -> None:
    generated_base, generated_devices = tenant
    # A fresh VM name per example (the ledger remembers earlier deletions), look-alikes renamed alike.
    base = f"vm{next(counter)}"
    generated = [
        Device(
            name=device.name.replace(generated_base, base).replace(generated_base.upper(), base.upper()),
            model=device.model,
            enrolled=device.enrolled,
            last_sync=device.last_sync,
            hybrid=device.hybrid,
        )
        for device in generated_devices
    ]

    async def scenario() -> None:
        devices = seed_tenant(simulators, generated)
        simulators.graph.reset_calls()
        # Each example is its own loop: services are per loop, so build them here.
        services = await get_services()
        try:
            await seen_then_deleted(simulators, base)
            await on_vm_deleted(trigger_input(delete_event(base)))
            await run_queue_trigger(azurite.connection_string, services.settings.cleanup.queue, on_cleanup_message)
        finally:
            await close_services()
        deleted = set(devices) - set(simulators.tenant.managed_devices)
        owed = expected_deletion(base, devices)
        assert deleted == ({owed} if owed else set()), (base, generated)
        entra_deleted = {f"obj-{key[3:]}" for key in devices} - set(simulators.tenant.devices)
        own_cloud_object = {f"obj-{owed[3:]}"} if owed and not devices[owed].hybrid else set()
        assert entra_deleted == own_cloud_object

    asyncio.run(scenario())


async def test_the_cap_holds_under_a_burst_with_two_concurrent_workers(
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    table_name: str,
    simulators: Simulators,
    azurite: Azurite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("RESPONDER_MODE", "enforce")
    monkeypatch.setenv("RESPONDER_CLEANUP_DELAY_SECONDS", "0")
    monkeypatch.setenv("RESPONDER_CLEANUP_QUEUE", f"burst-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_AUDIT_TABLE", f"audit{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_MAX_DELETIONS_PER_HOUR", "6")
    caplog.set_level(logging.INFO, logger="responder")
    names = [f"burst{index}" for index in range(8)]
    seed_tenant(simulators, [Device(name, anchor=arm_id(SUB, name)) for name in names])  # 8 x 2 = 16 deletions owed
    services = await get_services()
    for name in names:
        await seen_then_deleted(simulators, name)
        await on_vm_deleted(trigger_input(delete_event(name)))

    queue = services.settings.cleanup.queue
    await asyncio.gather(
        run_queue_trigger(azurite.connection_string, queue, on_cleanup_message),
        run_queue_trigger(azurite.connection_string, queue, on_cleanup_message),
    )

    deletions = [request for request in simulators.graph.served() if request.method == "DELETE"]
    assert len(deletions) == 6  # three VMs' two records each, then the cap
    async with queue_client(azurite.connection_string, queue) as waiting:
        properties = await waiting.get_queue_properties()
    assert properties.approximate_message_count == 5  # the rest waits in the queue, delayed
    (warning,) = log_lines(caplog, "blast-radius")
    assert warning["maxPerHour"] == 6
    await close_services()
