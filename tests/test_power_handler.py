"""Deallocate and start through the real handler function, Azurite and the simulators.

Each test ends by comparing the Graph writes the simulator received with
exactly the ones expected (design §4, issue "Suppress false noncompliance").
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest

from handlers import vm_power
from handlers._eventgrid import trigger_input
from localdev.sim_http import Request
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services
from responder.decisions.errors import TransientError
from responder.decisions.model import SuppressionState, VmRef
from responder.stages.power import VmBusy
from tests.conftest import ledger_row, load_event

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
WIN11_MANAGED = "7d1e0001-aaaa-4bbb-8ccc-000000000001"
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"
DEALLOCATED_AT = "2026-11-20T19:00:02.5550000Z"
STARTED_AT = "2026-11-21T07:30:00.4440000Z"

on_vm_power_changed = vm_power.on_vm_power_changed.build().get_user_function()


@pytest.fixture
def enforce(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_SUPPRESSION_ATTRIBUTE": "extensionAttribute7",
    }.items():
        monkeypatch.setenv(name, value)


def event(sample: str, vm: str = "vm-win11-01", event_id: str | None = None, at: str | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(load_event(sample))
    for key in ("subject",):
        raw[key] = raw[key].replace("vm-win11-01", vm)
    raw["data"]["resourceUri"] = raw["data"]["resourceUri"].replace("vm-win11-01", vm)
    if event_id:
        raw["id"] = event_id
    if at:
        raw["eventTime"] = at
    return raw


async def deliver(raw: dict[str, Any]) -> None:
    await on_vm_power_changed(trigger_input(raw))


def graph_writes(simulators: Simulators) -> list[tuple[str, str]]:
    return [
        (request.method, request.path.removeprefix("/v1.0/"))
        for request in simulators.graph.served()
        if request.method in {"POST", "PATCH", "DELETE"}
    ]


def mark(simulators: Simulators, entra: str = WIN11_ENTRA) -> str | None:
    value: str | None = simulators.tenant.devices[entra]["extensionAttributes"]["extensionAttribute7"]
    return value


def deallocate(simulators: Simulators, vm: VmRef = WIN11) -> None:
    simulators.world.set_power_state(vm.resource_id, "deallocated")


def start(simulators: Simulators, vm: VmRef = WIN11) -> None:
    simulators.world.set_power_state(vm.resource_id, "running")


@pytest.mark.usefixtures("enforce")
async def test_deallocate_then_start_marks_then_unmarks_and_syncs(simulators: Simulators, ledger: TableLedger) -> None:
    deallocate(simulators)
    await deliver(event("eventgrid-vm-deallocate.json"))
    marked = (simulators.tenant.members_of(GROUP), mark(simulators))
    start(simulators)
    await deliver(event("eventgrid-vm-start.json"))

    assert marked == ([WIN11_ENTRA], "deallocated 2026-11-20T19:00:02+00:00")
    assert (simulators.tenant.members_of(GROUP), mark(simulators), simulators.tenant.synced) == (
        [],
        None,
        [WIN11_MANAGED],
    )
    assert graph_writes(simulators) == [
        ("POST", f"groups/{GROUP}/members/$ref"),
        ("PATCH", f"devices/{WIN11_ENTRA}"),
        ("DELETE", f"groups/{GROUP}/members/{WIN11_ENTRA}/$ref"),
        ("PATCH", f"devices/{WIN11_ENTRA}"),
        ("POST", f"deviceManagement/managedDevices/{WIN11_MANAGED}/syncDevice"),
    ]
    record = await ledger_row(ledger, WIN11)
    assert (record.suppression, record.device.managed_device_id, record.device.entra_object_id) == (
        SuppressionState.NONE,
        WIN11_MANAGED,
        WIN11_ENTRA,
    )


@pytest.mark.usefixtures("enforce")
async def test_a_start_that_arrives_before_its_deallocate_leaves_the_device_unmarked(
    simulators: Simulators,
) -> None:
    start(simulators)  # ARM: the VM runs (it was deallocated, then started)
    await deliver(event("eventgrid-vm-start.json"))
    await deliver(event("eventgrid-vm-deallocate.json"))  # older, delivered late

    assert graph_writes(simulators) == []
    assert simulators.tenant.members_of(GROUP) == []


@pytest.mark.usefixtures("enforce")
async def test_a_late_deallocate_newer_than_the_ledger_still_obeys_arm(simulators: Simulators) -> None:
    start(simulators)  # the event says deallocated, ARM says running now

    await deliver(event("eventgrid-vm-deallocate.json"))

    assert graph_writes(simulators) == []


@pytest.mark.usefixtures("enforce")
async def test_a_duplicated_deallocate_marks_once(simulators: Simulators) -> None:
    deallocate(simulators)
    raw = event("eventgrid-vm-deallocate.json")

    await deliver(raw)
    await deliver(raw)

    assert graph_writes(simulators) == [
        ("POST", f"groups/{GROUP}/members/$ref"),
        ("PATCH", f"devices/{WIN11_ENTRA}"),
    ]


@pytest.mark.usefixtures("enforce")
async def test_a_second_deallocate_of_a_marked_vm_changes_nothing(simulators: Simulators) -> None:
    deallocate(simulators)
    await deliver(event("eventgrid-vm-deallocate.json"))
    await deliver(event("eventgrid-vm-deallocate.json", event_id="second-deallocate", at="2026-11-20T20:00:00Z"))

    assert len(graph_writes(simulators)) == 2


@pytest.mark.usefixtures("enforce")
async def test_a_vm_with_no_intune_device_gets_a_finding_and_no_writes(
    simulators: Simulators, ledger: TableLedger
) -> None:
    clone = VmRef(SUB, "rg-avd-prod", "vm-clone-05")
    deallocate(simulators, clone)

    await deliver(event("eventgrid-vm-deallocate.json", vm="vm-clone-05"))

    assert graph_writes(simulators) == []
    record = await ledger_row(ledger, clone)
    assert [finding.rule_id for finding in record.findings] == ["no-intune-device"]


@pytest.mark.usefixtures("enforce")
async def test_two_devices_with_one_name_are_left_alone_for_review(simulators: Simulators, ledger: TableLedger) -> None:
    duplicate = VmRef(SUB, "rg-avd-prod", "vm-dup-04")  # seeded deallocated, two devices named vm-dup-04

    await deliver(event("eventgrid-vm-deallocate.json", vm="vm-dup-04"))

    assert graph_writes(simulators) == []
    record = await ledger_row(ledger, duplicate)
    assert [finding.rule_id for finding in record.findings] == ["needs-review"]
    assert record.suppression is SuppressionState.NONE


@pytest.mark.usefixtures("enforce")
async def test_a_hybrid_device_joins_the_group_and_gets_the_attribute(
    simulators: Simulators, ledger: TableLedger
) -> None:
    hybrid = VmRef(SUB, "rg-avd-prod", "vm-hybrid-06")
    deallocate(simulators, hybrid)

    await deliver(event("eventgrid-vm-deallocate.json", vm="vm-hybrid-06"))

    writes = graph_writes(simulators)
    assert writes[0] == ("POST", f"groups/{GROUP}/members/$ref")
    assert [method for method, _ in writes[1:]] == ["PATCH"]
    record = await ledger_row(ledger, hybrid)
    assert record.findings == ()


async def test_audit_mode_records_the_plan_and_writes_nothing(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, simulators: Simulators, ledger: TableLedger
) -> None:
    monkeypatch.setenv("RESPONDER_SUPPRESSION_GROUP_ID", GROUP)
    deallocate(simulators)

    await deliver(event("eventgrid-vm-deallocate.json"))

    assert graph_writes(simulators) == []
    record = await ledger_row(ledger, WIN11)
    assert record.last_plan == (f"audit: would add Entra device {WIN11_ENTRA} to suppression group {GROUP}",)
    assert record.suppression is SuppressionState.NONE


@pytest.mark.usefixtures("enforce")
async def test_a_throttled_graph_ends_with_exactly_the_same_writes(simulators: Simulators) -> None:
    simulators.graph.throttle.every = 3
    deallocate(simulators)
    await deliver(event("eventgrid-vm-deallocate.json"))
    start(simulators)
    await deliver(event("eventgrid-vm-start.json"))

    assert simulators.graph.throttle.refused >= 1
    writes = graph_writes(simulators)  # a plan's writes go together: Graph may serve them in any order
    assert sorted(writes[:2]) == sorted(
        [
            ("POST", f"groups/{GROUP}/members/$ref"),
            ("PATCH", f"devices/{WIN11_ENTRA}"),
        ]
    )
    assert sorted(writes[2:]) == sorted(
        [
            ("DELETE", f"groups/{GROUP}/members/{WIN11_ENTRA}/$ref"),
            ("PATCH", f"devices/{WIN11_ENTRA}"),
            ("POST", f"deviceManagement/managedDevices/{WIN11_MANAGED}/syncDevice"),
        ]
    )
    assert (simulators.tenant.members_of(GROUP), mark(simulators), simulators.tenant.synced) == (
        [],
        None,
        [WIN11_MANAGED],
    )


@pytest.mark.usefixtures("enforce")
async def test_a_start_handled_while_a_deallocate_acts_waits_for_its_lease_and_lifts_the_mark(
    simulators: Simulators,
) -> None:
    """The VM starts while the deallocate event is half-way (ARM read: deallocated; Graph write
    next). Another instance handles the start event at that moment: without the lease it would
    find nothing marked yet, do nothing, and leave the running VM marked when the deallocate
    finishes. With it, the start is refused (Event Grid redelivers it) and its redelivery lifts
    the mark."""
    deallocate(simulators)
    meanwhile: list[BaseException | None] = []

    def start_on_another_instance(request: Request) -> None:
        if meanwhile:
            return
        start(simulators)

        async def handle_start() -> None:
            try:
                await deliver(event("eventgrid-vm-start.json"))
                meanwhile.append(None)
            except TransientError as busy:
                meanwhile.append(busy)
            finally:
                await close_services()  # this instance's clients live on this thread's loop

        other = threading.Thread(target=asyncio.run, args=(handle_start(),))
        other.start()
        other.join()

    simulators.graph.before_write = start_on_another_instance
    await deliver(event("eventgrid-vm-deallocate.json"))
    simulators.graph.before_write = None

    (busy,) = meanwhile
    assert isinstance(busy, VmBusy)  # the lease held it off
    assert mark(simulators) is not None  # the deallocate finished: marked, for now
    await deliver(event("eventgrid-vm-start.json"))  # Event Grid's redelivery
    assert simulators.tenant.members_of(GROUP) == []
    assert mark(simulators) is None
    assert simulators.tenant.synced == [WIN11_MANAGED]


@pytest.mark.usefixtures("enforce")
async def test_a_vm_with_the_opt_out_tag_is_left_alone(simulators: Simulators, ledger: TableLedger) -> None:
    tagged = VmRef(SUB, "rg-avd-prod", "vm-optout-10")
    deallocate(simulators, tagged)

    await deliver(event("eventgrid-vm-deallocate.json", vm="vm-optout-10"))

    assert graph_writes(simulators) == []
    record = await ledger_row(ledger, tagged)
    assert record.opted_out


@pytest.mark.usefixtures("enforce")
async def test_a_vm_whose_device_the_ledger_learnt_costs_one_round_trip_of_reads_and_one_of_writes(
    simulators: Simulators,
) -> None:
    deallocate(simulators)
    await deliver(event("eventgrid-vm-deallocate.json"))  # learns the device
    simulators.graph.reset_calls()
    start(simulators)

    await deliver(event("eventgrid-vm-start.json"))

    assert [request.path for request in simulators.graph.requests] == ["/v1.0/$batch", "/v1.0/$batch"]
    reads = [request for request in simulators.graph.operations if request.method == "GET"]
    assert len(reads) == 3  # the anchor, the name, the learnt deviceId: each still the VM's
    assert simulators.tenant.synced == [WIN11_MANAGED]


@pytest.mark.usefixtures("enforce")
async def test_a_vm_seen_for_the_first_time_reads_its_records_linked_objects_in_a_second_round(
    simulators: Simulators,
) -> None:
    deallocate(simulators)

    await deliver(event("eventgrid-vm-deallocate.json"))

    # the anchor and the name, then the deviceId their Intune record links to, then the writes
    assert [request.path for request in simulators.graph.requests] == ["/v1.0/$batch"] * 3
    assert mark(simulators) is not None
