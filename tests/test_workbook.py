"""The workbook tells the truth (README "Operate"): its panels, run offline over the rows the real
functions write (`tools/kql.py`), over the time range the portal would give each panel.

"Devices marked now" is the latest state of each VM (not the chosen time range): marks Graph
accepted in enforce mode, the ones reconciliation repaired included; audit-mode decisions and
refused writes are not marks. The failures, queues and last-reconciliation panels show a refused
write, a dead-lettered event and a reconciliation stopped part-way.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from handlers import queue_watch, reconcile_timer, vm_power
from localdev.azurite import Azurite
from localdev.simulators import Simulators
from tests.conftest import load_event, outcome_of
from tests.telemetry import SUB, Estate, captured_into, enforced_estate
from tools.monitoring import panel_rows

WORKBOOK = json.loads((Path(__file__).resolve().parent.parent / "infra" / "monitoring" / "workbook.json").read_text())
PANELS = {item["name"]: item["content"] for item in WORKBOOK["items"] if item["type"] == 3}
WIN11 = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01"
CHOSEN_RANGE = timedelta(hours=24)  # the TimeRange parameter, as an admin leaves it

on_vm_power_changed = vm_power.on_vm_power_changed.build().get_user_function()
on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()
on_queue_watch_timer = queue_watch.on_queue_watch_timer.build().get_user_function()


@pytest.fixture
async def estate(
    app_env: dict[str, str], simulators: Simulators, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Estate]:
    async with enforced_estate(simulators, azurite, monkeypatch, table_name) as estate:
        yield estate


def panel(name: str, estate: Estate) -> list[dict[str, Any]]:
    """The panel's rows as the portal shows them: no filter chosen, over the panel's time range."""
    return panel_rows(name, estate.telemetry.tables(), datetime.now(UTC))


def marked_now(estate: Estate) -> set[str]:
    return {row["vmName"] for row in panel("marked-now", estate)}


async def deallocate(estate: Estate) -> None:
    estate.simulators.world.set_power_state(WIN11, "deallocated")
    with captured_into(estate.telemetry):
        await outcome_of(on_vm_power_changed, copy.deepcopy(load_event("eventgrid-vm-deallocate.json")))


async def test_a_mark_graph_accepted_in_enforce_mode_is_marked_now(estate: Estate) -> None:
    await estate.start()

    await deallocate(estate)

    assert marked_now(estate) == {"vm-win11-01"}


async def test_a_mark_graph_refused_is_not_marked_now(estate: Estate) -> None:
    await estate.start()
    faults = estate.simulators.graph.faults
    faults.fail, faults.methods, faults.path_prefix = [403], frozenset({"POST"}), "/v1.0/groups/"

    await deallocate(estate)

    assert marked_now(estate) == set()


async def test_an_audit_mode_decision_is_not_marked_now(estate: Estate) -> None:
    await estate.start(RESPONDER_MODE="audit")

    await deallocate(estate)

    assert marked_now(estate) == set()


async def test_a_mark_reconciliation_repaired_is_marked_now(estate: Estate) -> None:
    await estate.start()
    estate.simulators.world.set_power_state(WIN11, "deallocated")  # its deallocate event never came

    with captured_into(estate.telemetry):
        await on_reconcile_timer(TimerRequest(past_due=False))

    assert {row["vmName"]: row["markedBy"] for row in panel("marked-now", estate)}["vm-win11-01"] == "reconcile"


async def test_a_mark_older_than_the_chosen_time_range_is_still_marked_now(estate: Estate) -> None:
    await estate.start()
    estate.telemetry.offset = -timedelta(days=40)  # deallocated forty days ago

    await deallocate(estate)

    assert marked_now(estate) == {"vm-win11-01"}


async def test_a_vm_started_again_is_no_longer_marked_now(estate: Estate) -> None:
    await estate.start()
    await deallocate(estate)
    estate.simulators.world.set_power_state(WIN11, "running")

    with captured_into(estate.telemetry):
        await outcome_of(on_vm_power_changed, copy.deepcopy(load_event("eventgrid-vm-start.json")))

    assert marked_now(estate) == set()


async def test_a_refused_write_a_dead_letter_and_a_reconciliation_stopped_part_way_show_in_the_panels(
    estate: Estate,
) -> None:
    from azure.storage.blob.aio import ContainerClient

    services = await estate.start()
    container = services.settings.cleanup.dead_letter_container
    async with ContainerClient.from_connection_string(estate.azurite.connection_string, container) as dead_letters:
        await dead_letters.create_container()
        await dead_letters.upload_blob("topic/subscription/2026/12/03/0.json", b"[]")
    faults = estate.simulators.graph.faults
    faults.fail, faults.methods, faults.path_prefix = [403], frozenset({"POST"}), "/v1.0/groups/"
    await deallocate(estate)
    estate.simulators.arm.faults.fail, estate.simulators.arm.faults.path_prefix = (
        [403],
        WIN11.replace("vm-win11-01", "vm-win10-02"),
    )  # reconciliation can't read one VM
    estate.simulators.world.set_power_state(WIN11.replace("vm-win11-01", "vm-win10-02"), "deallocated")

    with captured_into(estate.telemetry):
        await on_reconcile_timer(TimerRequest(past_due=False))
        await on_queue_watch_timer(TimerRequest(past_due=False))

    failures = panel("failures", estate)
    assert {"lineKind": "action-refused", "vmName": "vm-win11-01", "role": "GroupMember.ReadWrite.All"}.items() <= {
        **next(row for row in failures if row["lineKind"] == "action-refused")
    }.items()
    assert any(row["lineKind"] == "reconcile-failure" and row["vmName"] == "vm-win10-02" for row in failures)
    (last,) = panel("last-reconciliation", estate)
    assert (last["complete"], last["failed"]) == (False, 1)  # one VM left undone, the rest walked
    assert last["checked"] > 1
    assert "403" in last["firstFailure"]
    waiting = {row["what"]: row["waiting"] for row in panel("queues", estate)}
    assert waiting["dead-lettered events"] == 1
