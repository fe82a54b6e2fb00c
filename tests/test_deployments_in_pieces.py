"""A VM is judged once it is finished (design §3: deployments come in pieces), through the real
handlers, Azurite and the HTTPS simulators.

An ARM template or the portal PUTs the VM first (`virtualMachines/write`) and each extension
minutes later as its own operation (`virtualMachines/extensions/write`, subject
`.../virtualMachines/{vm}/extensions/{name}`): AADLoginForWindows (Entra join), JsonADDomainExtension
(AD join), the AVD DSC registration (host pool). At the VM's own write it has none of them yet.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from handlers import device_check, vm_created
from handlers._eventgrid import trigger_input
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services
from responder.decisions.model import VmRecord, VmRef
from responder.ports import Services
from responder.stages.device_check import DeviceCheckRequest
from tests.conftest import deployed_services, ledger_row, load_event, log_lines, outcome_of
from tests.test_created_handler import SUB, add_vm, extension_write_event, write_event

on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_device_check_message = device_check.on_device_check_message.build().get_user_function()

WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")  # Entra-joined, enrolled in the sample tenant
ENROLLED_HOST = VmRef(SUB, "rg-avd-prod", "avd-personal-03")  # a personal AVD host, enrolled
NEW_HOST = VmRef(SUB, "rg-avd-prod", "avd-personal-11")  # a personal AVD host the sample events create


@pytest.fixture
async def services(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    """A device-check queue of its own (Azurite lives for the session)."""
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_QUEUE", f"checks-{table_name[-12:]}")
    yield await deployed_services()
    await close_services()


def without_extensions(simulators: Simulators, vm: VmRef, *types: str) -> list[dict[str, Any]]:
    """The VM as ARM shows it at its own write: the extensions of these types not written yet. Returns them."""
    document = simulators.world.vms[vm.resource_id]
    later = [item for item in document["resources"] if item["properties"]["type"] in types]
    document["resources"] = [item for item in document["resources"] if item not in later]
    return later


def unregistered(simulators: Simulators, vm: VmRef) -> dict[str, Any]:
    """The session host the AVD DSC extension registers in its pool, taken out until the extension runs."""
    hosts = simulators.world.session_hosts
    (key,) = [key for key, host in hosts.items() if host["properties"]["resourceId"].lower() == vm.resource_id]
    return {key: hosts.pop(key)}


async def look_for_device(ledger: TableLedger, vm: VmRef, *, wait_over: bool = False) -> str:
    """Deliver the device check's message of the chain the ledger row names, as the queue host would;
    returns it. `wait_over`: the chain's last look, its wait passed (the row's due time moved into the past)."""
    record = await ledger_row(ledger, vm)
    assert record.device_check_due is not None
    assert record.incarnation.vm_id is not None
    due = record.device_check_due
    if wait_over:
        due = datetime.now(UTC) - timedelta(minutes=1)
        await ledger.update(vm, lambda row: (replace(row, device_check_due=due), None))
    text = DeviceCheckRequest(
        vm.resource_id, record.incarnation.vm_id, due - timedelta(hours=24), due, attempt=9
    ).to_text()
    await deliver_message(text)
    return text


async def deliver_message(text: str) -> None:
    await on_device_check_message(QueueMessage(id="m1", body=text.encode(), dequeue_count=1))


def rules(record: VmRecord) -> list[tuple[str, str]]:
    return [(finding.rule_id, finding.severity) for finding in record.findings]


def published(simulators: Simulators) -> list[list[str]]:
    return [[item["ruleId"] for item in event["data"]["findings"]] for event in simulators.topic_router.events]


async def test_a_template_deployment_whose_entra_join_lands_minutes_later_ends_with_no_join_warning(
    services: Services, simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    (entra_join,) = without_extensions(simulators, WIN11, "AADLoginForWindows")

    written = await outcome_of(on_vm_created, write_event(WIN11.name))  # 08:00:01, no extension yet
    assert rules(await ledger_row(ledger, WIN11)) == []  # a missing join isn't said while extensions may land
    simulators.world.vms[WIN11.resource_id]["resources"].append(entra_join)
    landed = await outcome_of(on_vm_created, extension_write_event(WIN11, "AADLoginForWindows"))  # 08:03:00
    await look_for_device(ledger, WIN11)  # the device check finds the VM's device enrolled

    assert (written.outcome, landed.outcome) == ("recorded", "recorded")
    assert landed.reason.startswith("prerequisite check: ")  # checked again: the join extension is new
    record = await ledger_row(ledger, WIN11)
    assert record.incarnation.join_kind == "entra"
    assert "join" not in [rule for rule, _ in rules(record)]
    assert "join" not in [line["ruleId"] for line in log_lines(caplog, "finding")]
    assert record.device_checked_at is not None


async def test_an_avd_host_whose_registration_lands_later_gets_its_host_pool_finding(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    (registration,) = without_extensions(simulators, NEW_HOST, "DSC")
    session_host = unregistered(simulators, NEW_HOST)

    await on_vm_created(trigger_input(load_event("eventgrid-vm-create-avd-personal-11.json")))
    assert rules(await ledger_row(ledger, NEW_HOST)) == []  # not a session host yet: no pool to judge
    simulators.world.vms[NEW_HOST.resource_id]["resources"].append(registration)
    simulators.world.session_hosts.update(session_host)  # the DSC extension registered the host
    handled = await outcome_of(on_vm_created, extension_write_event(NEW_HOST, "Microsoft.PowerShell.DSC"))

    assert handled.outcome == "recorded"
    assert rules(await ledger_row(ledger, NEW_HOST)) == [("host-pool", "info")]
    assert published(simulators) == [[], ["host-pool"]]  # the first check, then what is new


async def test_a_vm_whose_extension_events_were_lost_is_judged_when_its_device_check_ends(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    (registration,) = without_extensions(simulators, ENROLLED_HOST, "DSC")
    session_host = unregistered(simulators, ENROLLED_HOST)
    await on_vm_created(trigger_input(write_event(ENROLLED_HOST.name)))
    simulators.world.vms[ENROLLED_HOST.resource_id]["resources"].append(registration)
    simulators.world.session_hosts.update(session_host)  # the extension landed; its event never came

    await look_for_device(ledger, ENROLLED_HOST)

    create_time = [
        finding for finding in (await ledger_row(ledger, ENROLLED_HOST)).findings if finding.phase == "create"
    ]
    assert [(finding.rule_id, finding.severity) for finding in create_time] == [("host-pool", "info")]
    assert ["host-pool"] in published(simulators)


async def test_a_vm_that_never_gets_a_join_extension_gets_the_join_warning_once_the_wait_is_over_once(
    services: Services, simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    image = simulators.world.vms[WIN11.resource_id]["properties"]["storageProfile"]["imageReference"]
    vm = add_vm(simulators, "vm-nojoin-15", copy.deepcopy(image), joined=False)  # no extension, ever

    await on_vm_created(trigger_input(write_event(vm.name)))
    assert rules(await ledger_row(ledger, vm)) == []
    await look_for_device(ledger, vm)  # not enrolled yet: it looks again later, and says nothing
    assert rules(await ledger_row(ledger, vm)) == []
    last = await look_for_device(ledger, vm, wait_over=True)
    await deliver_message(last)  # a redelivery of the last look
    await on_vm_created(trigger_input(write_event(vm.name, event_id="tag-change-write")))

    record = await ledger_row(ledger, vm)
    assert sorted(rules(record)) == [("join", "warning"), ("not-enrolled", "warning")]
    (join,) = [line for line in log_lines(caplog, "finding") if line["ruleId"] == "join"]
    assert join["phase"] == "create"
    assert join["message"].startswith("Neither Entra join (AADLoginForWindows) nor AD join")
    assert sum(findings.count("join") for findings in published(simulators)) == 1


async def test_a_redelivered_extension_event_changes_nothing(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    (entra_join,) = without_extensions(simulators, WIN11, "AADLoginForWindows")
    await on_vm_created(trigger_input(write_event(WIN11.name)))
    simulators.world.vms[WIN11.resource_id]["resources"].append(entra_join)
    event = extension_write_event(WIN11, "AADLoginForWindows")
    await on_vm_created(trigger_input(event))
    before, reads = await ledger_row(ledger, WIN11), len(simulators.arm.calls("GET"))

    again = await outcome_of(on_vm_created, copy.deepcopy(event))

    assert again.outcome == "duplicate"
    assert await ledger_row(ledger, WIN11) == before
    assert len(simulators.arm.calls("GET")) == reads  # not even read again
    assert len(simulators.topic_router.events) == 1


async def test_an_extension_written_to_a_vm_before_its_own_write_arrives_is_checked_once(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    """Event Grid doesn't order deliveries: whichever event comes first reads the VM as ARM has it now."""
    landed = await outcome_of(on_vm_created, extension_write_event(WIN11, "AADLoginForWindows"))
    written = await outcome_of(on_vm_created, write_event(WIN11.name))

    assert landed.reason.startswith("prerequisite check: ")
    assert written.reason.startswith("already checked")
    assert (await ledger_row(ledger, WIN11)).incarnation.join_kind == "entra"
    assert published(simulators) == [[]]
