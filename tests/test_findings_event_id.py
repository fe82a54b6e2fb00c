"""Findings events carry a deterministic id (`findings_publisher.event_id`): a republication of
the same report (a redelivery after a storage fault repeats the check) carries the same id, so
a subscriber drops the copy; another incarnation, phase or set of findings gets another id.

Through the real handler and publisher (azure-eventgrid's client) against the local Event Grid
topic, and on the id function itself."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from handlers import vm_created
from handlers._eventgrid import trigger_input
from localdev.simulators import Simulators
from responder.adapters.findings_publisher import (
    DELETE_IN_AD_EVENT_TYPE,
    EVENT_ID_NAMESPACE,
    EVENT_TYPE,
    FindingsPublisher,
    event_id,
)
from responder.adapters.table_ledger import TableLedger
from responder.decisions.errors import TransientError
from responder.decisions.model import Finding, FindingSource, Severity, VmRecord, VmRef
from responder.ports import Services
from tests.conftest import load_event

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
CLONE = VmRef(SUB, "rg-avd-prod", "vm-clone-05")
VM = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a01"
OTHER_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4aff"
CLONED = Finding(
    "cloned-image",
    Severity.ERROR,
    "The image is specialized.",
    "gallery image x",
    "doc#clone",
    phase=FindingSource.CREATE,
)
JOIN = Finding(
    "join", Severity.WARNING, "No Intune auto-enrolment.", "AADLoginForWindows", "doc#join", phase=FindingSource.CREATE
)
TPM = Finding(
    "tpm-profile",
    Severity.WARNING,
    "A BitLocker profile is assigned.",
    "profile y",
    "doc#tpm",
    phase=FindingSource.DEVICE,
)

on_vm_created = vm_created.on_vm_created.build().get_user_function()


def write_event(vm: VmRef) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    raw["subject"] = raw["data"]["resourceUri"] = vm.resource_id
    return raw


def publisher(services: Services) -> FindingsPublisher:
    assert isinstance(services.findings_publisher, FindingsPublisher)
    return services.findings_publisher


def published_ids(simulators: Simulators) -> list[str]:
    return [str(event["id"]) for event in simulators.topic_router.events]


def storage_down_once_after_the_publication(simulators: Simulators, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger's next write after the topic heard the findings fails once: the check is not recorded."""
    update = TableLedger.update
    failed: list[bool] = []

    async def failing(
        self: TableLedger, vm: VmRef, decide: Callable[[VmRecord], tuple[VmRecord, Any]], read: VmRecord | None = None
    ) -> tuple[VmRecord, Any]:
        if simulators.topic_router.events and not failed:
            failed.append(True)
            raise TransientError("storage is down", "storage")
        return await update(self, vm, decide, read)

    monkeypatch.setattr(TableLedger, "update", failing)


# --- through the real handler and publisher ----------------------------------------------


@pytest.mark.usefixtures("app_env")
async def test_a_redelivery_after_a_storage_fault_republishes_the_findings_under_the_same_id(
    simulators: Simulators, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage_down_once_after_the_publication(simulators, monkeypatch)
    raw = write_event(CLONE)

    with pytest.raises(TransientError):
        await on_vm_created(trigger_input(raw))
    await on_vm_created(trigger_input(copy.deepcopy(raw)))  # Event Grid delivers it again

    first, again = simulators.topic_router.events
    assert again["data"] == first["data"]
    assert again["id"] == first["id"]


async def test_publishing_the_same_findings_again_carries_the_same_id(
    services: Services, simulators: Simulators
) -> None:
    await publisher(services).publish(VM, VM_ID, [CLONED, JOIN])
    await publisher(services).publish(VM, VM_ID, [JOIN, CLONED])

    first, again = published_ids(simulators)
    assert again == first


async def test_the_published_id_is_a_uuid5_in_the_documented_namespace(
    services: Services, simulators: Simulators
) -> None:
    await publisher(services).publish(VM, VM_ID, [CLONED])

    (published,) = published_ids(simulators)
    assert uuid.UUID(published).version == 5
    assert published == event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED])
    assert uuid.uuid5(uuid.NAMESPACE_URL, "urn:intune-vm-responder:findings-topic") == EVENT_ID_NAMESPACE


async def test_the_device_side_findings_get_another_id_than_the_create_time_findings(
    services: Services, simulators: Simulators
) -> None:
    await publisher(services).publish(VM, VM_ID, [CLONED])
    await publisher(services).publish(VM, VM_ID, [TPM])

    create_time, device_side = published_ids(simulators)
    assert create_time != device_side


async def test_an_empty_report_gets_another_id_for_each_phase_named(services: Services, simulators: Simulators) -> None:
    await publisher(services).publish(VM, VM_ID, [], phase=FindingSource.CREATE)
    await publisher(services).publish(VM, VM_ID, [], phase=FindingSource.DEVICE)

    create_time, device_side = published_ids(simulators)
    assert create_time != device_side


async def test_the_same_delete_in_ad_instruction_published_again_carries_the_same_id(
    services: Services, simulators: Simulators
) -> None:
    finding = Finding(
        "delete-in-ad",
        Severity.INFO,
        "Delete the computer object.",
        "Entra device d (VM-HYBRID-06)",
        phase=FindingSource.CLEANUP,
    )

    await publisher(services).publish_delete_in_ad(VM, finding)
    await publisher(services).publish_delete_in_ad(VM, finding)

    first, again = simulators.topic_router.events
    assert again["eventType"] == DELETE_IN_AD_EVENT_TYPE
    assert again["id"] == first["id"]


# --- the id itself ----------------------------------------------------------------------


def test_the_order_the_findings_come_in_does_not_change_the_id() -> None:
    assert event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED, JOIN]) == event_id(
        EVENT_TYPE, VM, VM_ID, "create", [JOIN, CLONED]
    )


def test_another_incarnation_of_the_vm_gets_another_id() -> None:
    assert event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED]) != event_id(
        EVENT_TYPE, VM, OTHER_VM_ID, "create", [CLONED]
    )


def test_the_vm_id_names_the_incarnation_whatever_its_case() -> None:
    assert event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED]) == event_id(
        EVENT_TYPE, VM, VM_ID.upper(), "create", [CLONED]
    )


def test_without_a_vm_id_the_resource_id_names_the_incarnation() -> None:
    other = VmRef(SUB, "rg-avd-prod", "vm-win11-02")

    assert event_id(EVENT_TYPE, VM, None, "create", [CLONED]) == event_id(EVENT_TYPE, VM, None, "create", [CLONED])
    assert event_id(EVENT_TYPE, VM, None, "create", [CLONED]) != event_id(EVENT_TYPE, other, None, "create", [CLONED])
    assert event_id(EVENT_TYPE, VM, None, "create", [CLONED]) != event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED])


def test_another_phase_gets_another_id() -> None:
    assert event_id(EVENT_TYPE, VM, VM_ID, "create", []) != event_id(EVENT_TYPE, VM, VM_ID, "device", [])


def test_a_finding_more_or_less_gets_another_id() -> None:
    both = event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED, JOIN])

    assert both != event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED])
    assert both != event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED, JOIN, JOIN])
    assert event_id(EVENT_TYPE, VM, VM_ID, "create", []) != event_id(EVENT_TYPE, VM, VM_ID, "create", [CLONED])


@pytest.mark.parametrize("field", ["rule_id", "severity", "message", "evidence", "doc"])
def test_a_finding_that_says_something_else_gets_another_id(field: str) -> None:
    said: dict[str, Any] = {field: "info"}
    changed = replace(JOIN, **said)

    assert event_id(EVENT_TYPE, VM, VM_ID, "create", [JOIN]) != event_id(EVENT_TYPE, VM, VM_ID, "create", [changed])


async def test_each_check_names_its_phase_so_their_empty_reports_are_two_events(
    services: Services, simulators: Simulators
) -> None:
    from responder.stages.vm_checks import report_findings

    await report_findings(
        VM, VM_ID, (), (), services, phase=FindingSource.CREATE
    )  # the create-time check found nothing
    await report_findings(VM, VM_ID, (), (), services, phase=FindingSource.DEVICE)  # nor did the device-side check

    create_time, device_side = published_ids(simulators)
    assert create_time != device_side
