"""Every failure that matters reaches an alert, once, with the VM or the role named (design §8,
README "Operate").

The table below is the contract: each failure class is injected at the simulators or the
stores, the real function runs against Azurite and the Graph/ARM simulators, and the JSON
lines it writes are stored as Application Insights stores them (`AppTraces` rows, one per
line, with the invocation's `OperationId`). Then the alert's own query, as deployed
(`infra/monitoring/alerts.json` and its `.kql`), runs offline over those rows
(`tools/kql.py`) the way a scheduled query rule evaluates it: the rows of its time
range, counted per dimension value, fire when the count passes the threshold in every
failing period. A failure class whose alert stays silent fails its case; an alert that no
failure class reaches fails `test_every_alert_is_reached_by_a_failure_class`.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.timer import TimerRequest

from handlers import cleanup_worker, device_check, queue_watch, reconcile_timer, vm_created, vm_deleted, vm_power
from localdev.azurite import Azurite
from localdev.queue_host import queue_client, run_queue_trigger
from localdev.simulators import Simulators
from responder.decisions.errors import TransientError
from responder.decisions.model import DeviceMapping, PowerState, SuppressionState, VmRecord, VmRef
from responder.stages.device_check import DeviceCheckRequest
from tests.conftest import load_event, outcome_of
from tests.telemetry import GROUP, SUB, Estate, Telemetry, captured_into, enforced_estate
from tools.monitoring import ALERTS, alert_fires, duration

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "infra" / "monitoring"

WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
OLD = VmRef(SUB, "rg-avd-prod", "vm-old-09")
WIN10 = VmRef(SUB, "rg-avd-prod", "vm-win10-02")
WIN10_ARM_ID = (
    f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win10-02"
)
WIN11_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a01"
WIN11_MANAGED, WIN11_ENTRA = "7d1e0001-aaaa-4bbb-8ccc-000000000001", "e0b10001-1111-4222-8333-000000000001"

on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_vm_power_changed = vm_power.on_vm_power_changed.build().get_user_function()
on_vm_deleted = vm_deleted.on_vm_deleted.build().get_user_function()
on_cleanup_message = cleanup_worker.on_cleanup_message.build().get_user_function()
on_device_check_message = device_check.on_device_check_message.build().get_user_function()
on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()
on_queue_watch_timer = queue_watch.on_queue_watch_timer.build().get_user_function()


# --- what Application Insights stores, and what a scheduled query rule does with it ----------


def fires_in_every_period(
    alert: dict[str, Any], telemetry: Telemetry, repeat: int, now: datetime, later: timedelta
) -> list[dict[str, str]]:
    """What fires `later` than `now` when the failure happened at `now`, `repeat` times, and again
    in each earlier failing period of the alert (an alert on a sustained condition needs them all)."""
    window = duration(alert["window"])
    answers = []
    for period in range(alert.get("failingPeriods", 1)):
        happened = now - period * window - timedelta(seconds=1)
        answers.append(alert_fires(alert, telemetry.at(happened, repeat), now + later - period * window))
    return [dimensions for dimensions in answers[0] if all(dimensions in answer for answer in answers[1:])]


@pytest.fixture
async def estate(
    app_env: dict[str, str], simulators: Simulators, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Estate]:
    async with enforced_estate(simulators, azurite, monkeypatch, table_name) as estate:
        yield estate


def deallocate_event() -> dict[str, Any]:
    return copy.deepcopy(load_event("eventgrid-vm-deallocate.json"))


async def cleanup_of_old_09(estate: Estate, **settings: str) -> None:
    """vm-old-09 created (the ledger reads it), deleted, and its cleanup run by the queue host."""
    services = await estate.start(**settings)
    await outcome_of(on_vm_created, copy.deepcopy(load_event("eventgrid-vm-create-old-09.json")))
    estate.simulators.world.delete_vm(OLD.resource_id)
    await outcome_of(on_vm_deleted, copy.deepcopy(load_event("eventgrid-vm-delete.json")))
    storage = services.settings.storage.connection_string or ""
    await run_queue_trigger(storage, services.settings.cleanup.queue, on_cleanup_message)


# --- the failure classes --------------------------------------------------------------------------


async def graph_refuses_the_group_write_for_a_missing_role(estate: Estate) -> None:
    estate.simulators.world.set_power_state(WIN11.resource_id, "deallocated")
    await estate.start()
    faults = estate.simulators.graph.faults
    faults.fail, faults.methods, faults.path_prefix = [403], frozenset({"POST"}), "/v1.0/groups/"
    await outcome_of(on_vm_power_changed, deallocate_event())


async def graph_rejects_the_group_write(estate: Estate) -> None:
    estate.simulators.world.set_power_state(WIN11.resource_id, "deallocated")
    await estate.start()
    faults = estate.simulators.graph.faults
    faults.fail, faults.methods, faults.path_prefix = [400], frozenset({"POST"}), "/v1.0/groups/"
    await outcome_of(on_vm_power_changed, deallocate_event())


async def arm_refuses_to_read_the_vm(estate: Estate) -> None:
    await estate.start()
    estate.simulators.arm.faults.fail = [403]
    await outcome_of(on_vm_power_changed, deallocate_event())


async def graph_refuses_the_deletion_of_a_proven_record(estate: Estate) -> None:
    estate.simulators.graph.faults.fail, estate.simulators.graph.faults.methods = [403] * 4, frozenset({"DELETE"})
    await cleanup_of_old_09(estate)


async def deletions_outrun_the_blast_radius_cap(estate: Estate) -> None:
    await cleanup_of_old_09(estate, RESPONDER_MAX_DELETIONS_PER_HOUR="1")  # its two records need two slots


async def graph_rejects_the_device_check(estate: Estate) -> None:
    await estate.start()
    estate.simulators.graph.faults.fail = [400]
    first = datetime.now(UTC)
    text = DeviceCheckRequest(WIN11.resource_id, WIN11_VM_ID, first, first + timedelta(hours=24), 1).to_text()
    from azure.functions.queue import QueueMessage

    await on_device_check_message(QueueMessage(id="m1", body=text.encode(), dequeue_count=1))


async def a_vm_fails_an_intune_prerequisite(estate: Estate) -> None:
    await estate.start()
    created = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    created["id"] = "create-of-a-clone"
    created["subject"] = created["data"]["resourceUri"] = created["subject"].replace("vm-win11-01", "vm-clone-05")
    await outcome_of(on_vm_created, created)


async def a_malformed_event_is_delivered(estate: Estate) -> None:
    await estate.start()
    await outcome_of(on_vm_power_changed, copy.deepcopy(load_event("malformed-bad-time.json")))


async def the_host_moves_a_failing_message_to_the_poison_queue(estate: Estate) -> None:
    services = await estate.start()
    poison = services.settings.cleanup.poison_queue
    async with queue_client(estate.azurite.connection_string, poison) as queue:
        await queue.send_message("a message the host gave up on after maxDequeueCount deliveries")
    await on_queue_watch_timer(TimerRequest(past_due=False))


async def event_grid_dead_letters_an_event(estate: Estate) -> None:
    from azure.storage.blob.aio import ContainerClient

    services = await estate.start()
    container = services.settings.cleanup.dead_letter_container
    async with ContainerClient.from_connection_string(estate.azurite.connection_string, container) as dead_letters:
        await dead_letters.create_container()
        await dead_letters.upload_blob("topic/subscription/2026/12/03/0.json", b"[]")  # one undeliverable batch
    await on_queue_watch_timer(TimerRequest(past_due=False))


async def reconciliation_ran_once_then_stopped_running(estate: Estate) -> None:
    await estate.start()
    await on_reconcile_timer(TimerRequest(past_due=False))  # evaluated 27 hours later: nothing since


async def reconciliation_gets_a_bad_answer_for_one_vm(estate: Estate) -> None:
    await estate.start()
    estate.simulators.world.set_power_state(WIN10.resource_id, "deallocated")  # drift: its mark is due
    faults = estate.simulators.arm.faults
    faults.fail, faults.path_prefix = [400], WIN10_ARM_ID  # ARM refuses that VM's read, not for a role
    await on_reconcile_timer(TimerRequest(past_due=False))


async def reconciliation_is_refused_the_watched_subscription(estate: Estate) -> None:
    await estate.start()
    estate.simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}".lower())
    await on_reconcile_timer(TimerRequest(past_due=False))


async def a_function_fails_on_a_wrong_setting(estate: Estate) -> None:
    from responder.decisions.settings import SettingsError

    estate.monkeypatch.setenv("RESPONDER_MODE", "enforced")  # a typo in the app settings
    with pytest.raises(SettingsError):
        await on_queue_watch_timer(TimerRequest(past_due=False))
    estate.telemetry.failed_invocation("on_queue_watch_timer")  # what the host writes for it


async def arm_keeps_throttling(estate: Estate) -> None:
    await estate.start()
    throttle = estate.simulators.arm.throttle
    throttle.every, throttle.retry_after_seconds = 1, 0.01
    with pytest.raises(TransientError):
        await outcome_of(on_vm_power_changed, deallocate_event())
    estate.telemetry.failed_invocation("on_vm_power_changed")  # a retried event: a failed request, handled


async def a_device_stays_marked_for_three_weeks(estate: Estate) -> None:
    services = await estate.start()
    estate.simulators.world.set_power_state(WIN11.resource_id, "deallocated")
    estate.simulators.tenant.groups[GROUP]["members"].append(WIN11_ENTRA)
    since = datetime.now(UTC) - timedelta(days=21)

    def marked(record: VmRecord) -> tuple[VmRecord, None]:
        return VmRecord(
            WIN11,
            suppression=SuppressionState.SUPPRESSED,
            power_state=PowerState.DEALLOCATED,
            power_state_at=since,
            device=DeviceMapping(managed_device_id=WIN11_MANAGED, entra_object_id=WIN11_ENTRA),
        ), None

    await services.ledger.update(WIN11, marked)
    await on_reconcile_timer(TimerRequest(past_due=False))


@dataclass(frozen=True)
class FailureClass:
    inject: Callable[[Estate], Awaitable[None]]
    alert: str
    names: dict[str, str]  # the dimension values the alert fires with: the VM, the role, the queue
    repeat: int = 1  # the failure recurs this often in each period (alerts on a count)
    later: timedelta = timedelta(0)  # evaluated this long after the failure

    @property
    def id(self) -> str:
        return self.inject.__name__


TABLE = [
    FailureClass(
        graph_refuses_the_group_write_for_a_missing_role,
        "access-denied",
        {"role": "GroupMember.ReadWrite.All", "vmName": "vm-win11-01"},
    ),
    FailureClass(arm_refuses_to_read_the_vm, "access-denied", {"role": "Reader", "vmName": "vm-win11-01"}),
    FailureClass(
        graph_rejects_the_group_write, "request-refused", {"service": "Microsoft Graph", "vmName": "vm-win11-01"}
    ),
    FailureClass(
        graph_refuses_the_deletion_of_a_proven_record,
        "cleanup-needs-review",
        {"decision": "parked", "vmName": "vm-old-09"},
    ),
    FailureClass(graph_rejects_the_device_check, "device-check-parked", {"vmName": "vm-win11-01"}),
    FailureClass(deletions_outrun_the_blast_radius_cap, "blast-radius-cap", {}),
    FailureClass(a_vm_fails_an_intune_prerequisite, "error-findings", {"vmName": "vm-clone-05"}),
    FailureClass(
        a_malformed_event_is_delivered,
        "bad-events",
        {"outcome": "malformed"},
        repeat=ALERTS["bad-events"]["threshold"] + 1,
    ),
    FailureClass(the_host_moves_a_failing_message_to_the_poison_queue, "poison-queue", {}),
    FailureClass(event_grid_dead_letters_an_event, "dead-lettered-events", {}),
    FailureClass(reconciliation_ran_once_then_stopped_running, "reconcile-missing", {}, later=timedelta(hours=27)),
    FailureClass(reconciliation_is_refused_the_watched_subscription, "access-denied", {"role": "Reader"}),
    FailureClass(
        reconciliation_gets_a_bad_answer_for_one_vm,
        "reconcile-incomplete",
        {"vmName": "vm-win10-02", "resourceGroup": "rg-avd-prod"},
    ),
    FailureClass(a_function_fails_on_a_wrong_setting, "function-failures", {"function": "on_queue_watch_timer"}),
    FailureClass(
        arm_keeps_throttling,
        "sustained-throttling",
        {"service": "Azure Resource Manager"},
        repeat=ALERTS["sustained-throttling"]["threshold"] + 1,
    ),
    FailureClass(a_device_stays_marked_for_three_weeks, "marked-too-long", {"vmName": "vm-win11-01"}),
]


@pytest.mark.parametrize("failure", TABLE, ids=[failure.id for failure in TABLE])
async def test_each_failure_class_fires_its_alert_naming_the_vm_or_the_role(
    estate: Estate, failure: FailureClass
) -> None:
    with captured_into(estate.telemetry):
        await failure.inject(estate)
    alert = ALERTS[failure.alert]

    fired_for = fires_in_every_period(alert, estate.telemetry, failure.repeat, datetime.now(UTC), failure.later)

    assert any(failure.names.items() <= dimensions.items() for dimensions in fired_for), (
        f"{failure.alert} fired for {fired_for}; lines: {[row['Message'][:300] for row in estate.telemetry.traces]}"
    )


def test_every_alert_is_reached_by_a_failure_class() -> None:
    assert {failure.alert for failure in TABLE} == set(ALERTS)


HEARTBEAT = "reconcile-missing"  # fires when nothing at all was written: not about one event


async def test_a_healthy_deallocate_and_start_fire_no_alert(estate: Estate) -> None:
    await estate.start()
    estate.simulators.world.set_power_state(WIN11.resource_id, "deallocated")
    with captured_into(estate.telemetry):
        await outcome_of(on_vm_power_changed, deallocate_event())
        estate.simulators.world.set_power_state(WIN11.resource_id, "running")
        await outcome_of(on_vm_power_changed, copy.deepcopy(load_event("eventgrid-vm-start.json")))
    now = datetime.now(UTC)

    firing = {
        name: alert_fires(alert, estate.telemetry.tables(), now) for name, alert in ALERTS.items() if name != HEARTBEAT
    }

    assert {name: dimensions for name, dimensions in firing.items() if dimensions} == {}


async def test_an_event_retried_after_throttling_is_not_a_function_failure(estate: Estate) -> None:
    with captured_into(estate.telemetry):
        await arm_keeps_throttling(estate)  # the host records the invocation as failed; the app said why

    assert alert_fires(ALERTS["function-failures"], estate.telemetry.tables(), datetime.now(UTC)) == []


async def test_reconciliation_that_ran_within_26_hours_is_not_missing(estate: Estate) -> None:
    with captured_into(estate.telemetry):
        await reconciliation_ran_once_then_stopped_running(estate)

    assert alert_fires(ALERTS[HEARTBEAT], estate.telemetry.tables(), datetime.now(UTC) + timedelta(hours=25)) == []


def test_the_marked_too_long_threshold_can_not_go_below_what_reconciliation_reports() -> None:
    import re

    from responder.stages.reconciliation import REPORT_MARKED_AFTER

    for template in ("main.bicep", "modules/monitoring.bicep"):
        text = (REPO / "infra" / template).read_text()
        (floor,) = re.findall(r"@minValue\((\d+)\)\n@description\([^\n]*\)\nparam markedDaysAlert int", text)
        assert int(floor) == REPORT_MARKED_AFTER.days, template


def test_a_failed_count_does_not_resolve_the_poison_queue_alert() -> None:
    from responder.log_lines import line

    now = datetime.now(UTC)
    counted = line("queue-depth", {"queue": "vm-cleanup-poison", "purpose": "cleanup", "messages": 3})
    failed = line("queue-depth", {"queue": "vm-cleanup-poison", "purpose": "cleanup", "messages": None})
    traces = [
        {"TimeGenerated": now - timedelta(minutes=20), "Message": counted},
        {"TimeGenerated": now - timedelta(minutes=5), "Message": failed},  # storage didn't answer this time
    ]

    assert alert_fires(ALERTS["poison-queue"], {"AppTraces": traces}, now) == [{"queue": "vm-cleanup-poison"}]
