"""VM written → prerequisite check, through the real handler against the simulators (design §3)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest

from handlers import vm_created
from handlers._eventgrid import trigger_input
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.model import VmRef
from tests.conftest import ledger_row, load_event, log_lines

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"

on_vm_created = vm_created.on_vm_created.build().get_user_function()


def write_event(vm: str, resource_group: str = "rg-avd-prod", event_id: str | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    resource_id = VmRef(SUB, resource_group, vm).resource_id
    raw["subject"] = raw["data"]["resourceUri"] = resource_id
    if event_id:
        raw["id"] = event_id
    return raw


async def deliver(raw: dict[str, Any]) -> None:
    await on_vm_created(trigger_input(raw))


async def rule_ids(ledger: TableLedger, vm: str, resource_group: str = "rg-avd-prod") -> list[tuple[str, str]]:
    record = await ledger_row(ledger, VmRef(SUB, resource_group, vm))
    return [(finding.rule_id, finding.severity) for finding in record.findings]


@pytest.mark.usefixtures("app_env")
async def test_a_compliant_vm_is_checked_and_reported_with_no_findings(
    simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(write_event("vm-win11-01"))

    assert await rule_ids(ledger, "vm-win11-01") == []
    (published,) = simulators.topic_router.events
    assert published["eventType"] == "IntuneVmResponder.PrerequisiteFindings"
    assert published["data"]["findings"] == []


@pytest.mark.usefixtures("app_env")
async def test_a_vm_from_a_specialized_image_gets_a_cloned_image_error_everywhere(
    simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")

    await deliver(write_event("vm-clone-05"))

    assert await rule_ids(ledger, "vm-clone-05") == [("cloned-image", "error")]
    assert [item["ruleId"] for item in simulators.topic_router.events[0]["data"]["findings"]] == ["cloned-image"]
    assert [(line["ruleId"], line["severity"], line["vmName"]) for line in log_lines(caplog, "finding")] == [
        ("cloned-image", "error", "vm-clone-05")
    ]


@pytest.mark.usefixtures("app_env")
async def test_a_pooled_multi_session_host_is_found_in_its_host_pool(
    simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(write_event("avd-pooled-01", "rg-avd-pool"))

    assert await rule_ids(ledger, "avd-pooled-01", "rg-avd-pool") == [("host-pool", "info")]


@pytest.mark.usefixtures("app_env")
async def test_a_second_write_with_the_same_image_and_extensions_is_not_checked_again(
    simulators: Simulators,
) -> None:
    await deliver(write_event("vm-win11-01"))
    await deliver(write_event("vm-win11-01", event_id="tag-change-write"))

    assert len(simulators.topic_router.events) == 1


@pytest.mark.usefixtures("app_env")
async def test_a_write_that_changes_the_extensions_is_checked_again(
    simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(write_event("vm-win11-01"))
    simulators.world.vms[VmRef(SUB, "rg-avd-prod", "vm-win11-01").resource_id].pop("resources")

    await deliver(write_event("vm-win11-01", event_id="extension-removed-write"))

    assert len(simulators.topic_router.events) == 2
    assert await rule_ids(ledger, "vm-win11-01") == [("join", "warning")]


@pytest.mark.usefixtures("app_env")
async def test_a_vm_with_the_opt_out_tag_is_not_checked(simulators: Simulators) -> None:
    await deliver(write_event("vm-optout-10"))

    assert simulators.topic_router.events == []


async def test_without_a_topic_nothing_is_published(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, simulators: Simulators, ledger: TableLedger
) -> None:
    monkeypatch.delenv("RESPONDER_FINDINGS_TOPIC_ENDPOINT")

    await deliver(write_event("vm-clone-05"))

    assert simulators.topic_router.events == []
    assert await rule_ids(ledger, "vm-clone-05") == [("cloned-image", "error")]


async def test_the_verdict_is_tagged_on_the_vm_when_asked(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, simulators: Simulators
) -> None:
    monkeypatch.setenv("RESPONDER_FINDINGS_TAG", "intune-readiness")

    await deliver(write_event("vm-clone-05"))
    await deliver(write_event("vm-win11-01"))

    vms = simulators.world.vms
    assert vms[VmRef(SUB, "rg-avd-prod", "vm-clone-05").resource_id]["tags"] == {
        "intune-readiness": "error: cloned-image"
    }
    assert vms[VmRef(SUB, "rg-avd-prod", "vm-win11-01").resource_id]["tags"] == {"intune-readiness": "ok"}


async def test_no_tag_is_written_by_default(app_env: dict[str, str], simulators: Simulators) -> None:
    await deliver(write_event("vm-clone-05"))

    assert simulators.arm.calls("PATCH") == []
