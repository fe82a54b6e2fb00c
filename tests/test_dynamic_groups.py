"""Dynamic device groups fill in after a device appears (design §3, "Second look"): a found device is
looked at again once its groups can have settled, and when reconciliation sees its groups changed.

The sample tenant assigns a Wi-Fi profile to the group "AVD session hosts" and a profile that turns
remote desktop off to all devices except that group. avd-personal-03 is an enrolled personal AVD host
outside the group: the group, dynamic in a real tenant, takes it in after the first look.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from handlers import device_check, reconcile_timer
from localdev.azurite import Azurite
from localdev.inprocess import run_queue
from localdev.queue_host import queue_client
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services, get_services
from responder.decisions.model import VmRef
from responder.ports import Services
from responder.stages.device_check import (
    DeviceCheckMessageError,
    DeviceCheckRequest,
    process_device_check,
)
from responder.stages.queue_worker import MAX_ATTEMPTS
from tests.conftest import deployed_services, ledger_row, log_lines, sample_in_process

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
HOST = VmRef(SUB, "rg-avd-prod", "avd-personal-03")
HOST_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a03"
HOST_ENTRA = "e0b10003-1111-4222-8333-000000000003"
SUPPRESSION_GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"  # the app's mark for deallocated VMs' devices
AVD_HOSTS = "5a9e0000-7c7c-4d4d-9e9e-00000000a5d0"  # "AVD session hosts": the Wi-Fi profile's group
WIFI = "c0f10002-0000-4000-8000-000000000002"
DFCI = "c0f10019-0000-4000-8000-000000000019"
DFCI_FOR_THE_GROUP: dict[str, Any] = {
    "@odata.type": "#microsoft.graph.windows10DeviceFirmwareConfigurationInterface",
    "id": DFCI,
    "displayName": "Firmware lockdown (DFCI)",
    "assignments": [
        {"id": "a19", "target": {"@odata.type": "#microsoft.graph.groupAssignmentTarget", "groupId": AVD_HOSTS}}
    ],
}
FIRST_LOOK_RULES = [("remote-access", "error"), ("tpm-compliance", "warning"), ("tpm-profile", "warning")]

on_device_check_message = device_check.on_device_check_message.build().get_user_function()
on_reconcile_timer = reconcile_timer.on_reconcile_timer.build().get_user_function()


@pytest.fixture
async def services(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    """Queues and an audit table of their own (Azurite lives for the session); reconciliation watches the
    sample subscription."""
    for name, value in {
        "RESPONDER_DEVICE_CHECK_QUEUE": f"checks-{table_name[-12:]}",
        "RESPONDER_CLEANUP_QUEUE": f"cleanup-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
        "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
    }.items():
        monkeypatch.setenv(name, value)
    yield await deployed_services()
    await close_services()


async def deliver(request: DeviceCheckRequest) -> None:
    """As the Functions host delivers a queue message to the trigger."""
    await on_device_check_message(QueueMessage(id="m1", body=request.to_text().encode(), dequeue_count=1))


async def first_look(ledger: TableLedger) -> datetime:
    """The device check that finds the host's device, some hours ago; returns when it concluded (its second
    look was queued then, delayed until now)."""
    from responder.composition import get_services
    from responder.decisions.facts import VmFacts
    from responder.stages.creation import fingerprint

    facts = await (await get_services()).compute.get_vm(HOST)
    assert isinstance(facts, VmFacts)
    # Checked at creation (its write event came: the create-time rules found nothing), then its device found.
    await ledger.update(
        HOST,
        lambda row: (
            replace(row, check_fingerprint=fingerprint(facts), incarnation=replace(row.incarnation, vm_id=HOST_VM_ID)),
            None,
        ),
    )
    now = datetime.now(UTC)
    await deliver(DeviceCheckRequest(HOST.resource_id, HOST_VM_ID, now, now + timedelta(hours=24)))
    checked_at = (await ledger_row(ledger, HOST)).device_checked_at
    assert checked_at is not None
    earlier = checked_at - timedelta(hours=4)  # the settle time passes
    await ledger.update(HOST, lambda row: (replace(row, device_checked_at=earlier), None))
    return earlier


def second_look(queued_at: datetime, settle_hours: int = 4) -> DeviceCheckRequest:
    """The second look the check queued as it concluded, delivered once its delay has passed."""
    return DeviceCheckRequest(
        HOST.resource_id, HOST_VM_ID, queued_at, queued_at + timedelta(hours=settle_hours), second_look=True
    )


def the_group_takes_the_host_in(simulators: Simulators) -> None:
    """Entra evaluates the dynamic group's rule and adds the host's device, some time after it appeared."""
    simulators.tenant.groups[AVD_HOSTS]["members"].append(HOST_ENTRA)


async def device_rules(ledger: TableLedger) -> list[tuple[str, str]]:
    record = await ledger_row(ledger, HOST)
    return sorted((finding.rule_id, finding.severity) for finding in record.findings if finding.phase == "device")


async def waiting_messages(azurite: Azurite, queue: str) -> int:
    async with queue_client(azurite.connection_string, queue) as client:
        return int((await client.get_queue_properties()).approximate_message_count or 0)


async def visible_messages(azurite: Azurite, queue: str) -> list[dict[str, Any]]:
    async with queue_client(azurite.connection_string, queue) as client:
        return [json.loads(str(message.content)) async for message in client.receive_messages(max_messages=32)]


async def test_a_device_whose_dynamic_group_fills_in_after_the_first_look_gets_its_profiles_finding_at_the_second(
    services: Services,
    simulators: Simulators,
    ledger: TableLedger,
    azurite: Azurite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    checked_at = await first_look(ledger)
    assert await device_rules(ledger) == FIRST_LOOK_RULES
    assert await waiting_messages(azurite, services.settings.device_check.queue) == 1  # the second look, delayed
    the_group_takes_the_host_in(simulators)

    await deliver(second_look(checked_at))

    # The group's Wi-Fi profile reaches it now; the remote-desktop profile excludes the group.
    assert await device_rules(ledger) == [
        ("tpm-compliance", "warning"),
        ("tpm-profile", "warning"),
        ("tpm-profile", "warning"),
    ]
    second = log_lines(caplog, "finding")[len(FIRST_LOOK_RULES) :]
    assert [(line["ruleId"], line["phase"]) for line in second] == [("tpm-profile", "device")]  # only what is new
    assert f"'Corporate Wi-Fi' ({WIFI})" in second[0]["message"]
    assert f"via group {AVD_HOSTS}" in second[0]["evidence"]
    assert [[item["ruleId"] for item in event["data"]["findings"]] for event in simulators.topic_router.events] == [
        ["tpm-profile", "tpm-compliance", "remote-access"],
        ["tpm-profile"],
    ]
    decisions = [line["decision"] for line in log_lines(caplog, "device-check")]
    assert decisions == ["checked", "checked"]
    assert await waiting_messages(azurite, services.settings.device_check.queue) == 1  # no third look queued


async def test_a_device_whose_groups_never_change_is_not_reported_again(
    services: Services, simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    checked_at = await first_look(ledger)
    before = await ledger_row(ledger, HOST)

    await deliver(second_look(checked_at))
    await deliver(second_look(checked_at))  # redelivered

    assert len(log_lines(caplog, "finding")) == len(FIRST_LOOK_RULES)
    assert len(simulators.topic_router.events) == 1
    after = await ledger_row(ledger, HOST)
    assert (after.findings, after.device_groups) == (before.findings, before.device_groups)
    assert [line["decision"] for line in log_lines(caplog, "device-check")] == ["checked", "checked", "skipped"]


async def test_reconciliation_looks_again_at_a_device_whose_groups_changed_since_its_check(
    services: Services, simulators: Simulators, ledger: TableLedger, azurite: Azurite
) -> None:
    await first_look(ledger)
    the_group_takes_the_host_in(simulators)

    await on_reconcile_timer(TimerRequest(past_due=False))

    queue = services.settings.device_check.queue
    (look,) = [message for message in await visible_messages(azurite, queue) if message["vmId"] == HOST_VM_ID]
    assert look["secondLook"] is True
    await on_device_check_message(QueueMessage(id="m2", body=json.dumps(look).encode(), dequeue_count=1))
    assert ("tpm-profile", "warning") in await device_rules(ledger)
    assert ("remote-access", "error") not in await device_rules(ledger)


async def test_reconciliation_leaves_a_device_whose_groups_are_unchanged_alone(
    services: Services, ledger: TableLedger, azurite: Azurite
) -> None:
    await first_look(ledger)

    await on_reconcile_timer(TimerRequest(past_due=False))

    visible = await visible_messages(azurite, services.settings.device_check.queue)
    assert [message for message in visible if message["vmId"] == HOST_VM_ID] == []


async def test_reconciliation_does_not_take_the_apps_own_suppression_mark_for_a_group_change(
    services: Services,
    simulators: Simulators,
    ledger: TableLedger,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESPONDER_SUPPRESSION_GROUP_ID", SUPPRESSION_GROUP)
    await close_services()
    await get_services()
    await first_look(ledger)
    simulators.tenant.groups[SUPPRESSION_GROUP]["members"].append(HOST_ENTRA)  # deallocated and marked since

    await on_reconcile_timer(TimerRequest(past_due=False))

    visible = await visible_messages(azurite, services.settings.device_check.queue)
    assert [message for message in visible if message["vmId"] == HOST_VM_ID] == []


async def test_the_second_look_comes_once_the_settle_time_is_over_and_no_third_follows() -> None:
    """In process, on a clock the test moves: the product's own queued second look, delivered when due."""
    clock = {"now": datetime(2026, 11, 24, 9, 0, tzinfo=UTC)}
    product = sample_in_process({"RESPONDER_DEVICE_CHECK_SETTLE_HOURS": "3"}, lambda: clock["now"])
    services = product.services
    product.tenant.add_policies({"deviceConfigurations": [DFCI_FOR_THE_GROUP]})  # a finding on any VM

    async def check(text: str, attempt: int) -> None:
        await process_device_check(text, attempt, services)

    first = DeviceCheckRequest(HOST.resource_id, HOST_VM_ID, clock["now"], clock["now"] + timedelta(hours=24))
    await check(first.to_text(), 1)
    (queued,) = product.device_checks.messages
    assert json.loads(queued.text)["secondLook"] is True
    assert queued.visible_at == clock["now"].timestamp() + 3 * 3600
    product.tenant.groups[AVD_HOSTS]["members"].append(HOST_ENTRA)
    clock["now"] += timedelta(hours=2, minutes=59)
    assert await run_queue(product.device_checks, check, max_dequeue_count=MAX_ATTEMPTS) == 0  # not yet
    clock["now"] += timedelta(minutes=1)

    assert await run_queue(product.device_checks, check, max_dequeue_count=MAX_ATTEMPTS) == 1
    record = await product.ledger.get(HOST)
    assert record is not None
    (dfci,) = [finding for finding in record.findings if DFCI in finding.message]
    assert (dfci.rule_id, dfci.phase) == ("tpm-profile", "device")
    assert product.device_checks.messages == []
    await services.closing.aclose()


def test_a_second_look_keeps_what_it_is_on_the_queue_and_a_wrong_flag_is_unreadable() -> None:
    request = second_look(datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
    text = request.to_text()

    assert DeviceCheckRequest.from_text(text) == request
    assert "secondLook" not in replace(request, second_look=False).to_text()  # a first look reads as before
    with pytest.raises(DeviceCheckMessageError, match="secondLook must be true or false"):
        DeviceCheckRequest.from_text(text.replace("true", '"yes"'))
