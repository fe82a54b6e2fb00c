"""The device-side check after enrolment, through the real handlers, Azurite and the Graph/ARM simulators.

The sample tenant assigns a BitLocker profile and a Secure Boot compliance policy to all
devices, a Wi-Fi profile to the group "AVD session hosts", and a custom profile that turns
remote desktop off to all devices except that group. avd-personal-11 is created by the
sample events and its device enrols later (`lateEnrolments`); avd-personal-03 is an
enrolled personal AVD host outside the group.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from handlers import device_check, vm_created
from handlers._eventgrid import trigger_input
from localdev.azurite import Azurite
from localdev.queue_host import queue_client, run_queue_trigger
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services
from responder.decisions.errors import TransientError
from responder.decisions.model import DeviceMapping, Finding, Incarnation, VmRecord, VmRef
from responder.ports import Services
from responder.stages.device_check import DeviceCheckRequest, process_device_check
from tests.conftest import deployed_services, ledger_row, load_event, log_lines

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
NEW_HOST = VmRef(SUB, "rg-avd-prod", "avd-personal-11")
NEW_HOST_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a11"
ENROLLED_HOST = VmRef(SUB, "rg-avd-prod", "avd-personal-03")
ENROLLED_HOST_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a03"
WIN11 = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
WIN11_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a01"
DUPLICATES = VmRef(SUB, "rg-avd-prod", "vm-dup-04")
DUPLICATES_VM_ID = "0f6b2a7e-1c3d-4e5f-8a9b-0c1d2e3f4a06"
BITLOCKER, WIFI, RDP_OFF = (
    "c0f10001-0000-4000-8000-000000000001",
    "c0f10002-0000-4000-8000-000000000002",
    "c0f10003-0000-4000-8000-000000000003",
)
SECURE_BOOT = "c0c00001-0000-4000-8000-000000000001"
SETTINGS_CATALOG_BITLOCKER = "c5c50001-0000-4000-8000-000000000001"  # configurationPolicies (beta), to the AVD group

on_vm_created = vm_created.on_vm_created.build().get_user_function()
on_device_check_message = device_check.on_device_check_message.build().get_user_function()


@pytest.fixture
async def services(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    """A queue of its own (Azurite lives for the session), and a first look after one second."""
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_QUEUE", f"checks-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS", "1")
    monkeypatch.setenv("RESPONDER_FINDINGS_TAG", "intune-prerequisites")
    yield await deployed_services()
    await close_services()


def request_for(vm: VmRef, vm_id: str, queued_at: datetime | None = None, attempt: int = 1) -> str:
    """A look of a chain queued at `queued_at` (now), which gives up 24 hours later."""
    first = queued_at or datetime.now(UTC)
    return DeviceCheckRequest(vm.resource_id, vm_id, first, first + timedelta(hours=24), attempt).to_text()


async def deliver(text: str, dequeue_count: int = 1) -> None:
    """As the Functions host delivers a queue message to the trigger."""
    await on_device_check_message(QueueMessage(id="m1", body=text.encode(), dequeue_count=dequeue_count))


async def device_findings(ledger: TableLedger, vm: VmRef) -> list[Finding]:
    record = await ledger_row(ledger, vm)
    return [finding for finding in record.findings if finding.phase == "device"]


def ids(findings: list[Finding]) -> list[tuple[str, str]]:
    return sorted((finding.rule_id, finding.severity) for finding in findings)


async def queued(azurite: Azurite, queue: str) -> list[dict[str, Any]]:
    async with queue_client(azurite.connection_string, queue) as client:
        return [json.loads(str(message.content)) async for message in client.receive_messages(max_messages=32)]


async def test_a_device_that_enrols_late_gets_its_findings_naming_each_policy(
    services: Services,
    simulators: Simulators,
    seed: dict[str, Any],
    ledger: TableLedger,
    azurite: Azurite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    queue = services.settings.device_check.queue
    await on_vm_created(trigger_input(load_event("eventgrid-vm-create-avd-personal-11.json")))
    record = await ledger_row(ledger, NEW_HOST)
    assert record.device_check_due is not None
    assert record.device_checked_at is None

    await asyncio.sleep(1.6)  # the first delay, with a margin for the queue's clock
    first = await run_queue_trigger(azurite.connection_string, queue, on_device_check_message)
    simulators.tenant.enrol(seed["lateEnrolments"])  # the device enrols minutes after the VM was created
    await asyncio.sleep(2.6)  # the second look waits twice the first delay
    second = await run_queue_trigger(azurite.connection_string, queue, on_device_check_message)

    assert (first.completed, second.completed) == (1, 1)
    assert [line["decision"] for line in log_lines(caplog, "device-check")] == ["waiting", "checked"]
    findings = await device_findings(ledger, NEW_HOST)
    assert ids(findings) == [
        ("tpm-compliance", "warning"),
        ("tpm-profile", "warning"),
        ("tpm-profile", "warning"),
        ("tpm-profile", "warning"),
    ]
    named = " ".join(finding.message for finding in findings)
    assert f"'Windows - BitLocker' ({BITLOCKER})" in named
    assert f"'Windows - Disk encryption (settings catalog)' ({SETTINGS_CATALOG_BITLOCKER})" in named
    assert f"'Windows health - Secure Boot' ({SECURE_BOOT})" in named
    assert f"'Corporate Wi-Fi' ({WIFI})" in named
    assert RDP_OFF not in named  # assigned to all devices but this host's group is excluded


async def test_the_device_side_findings_go_where_the_create_time_findings_go(
    services: Services, simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    (published,) = simulators.topic_router.events
    assert {item["phase"] for item in published["data"]["findings"]} == {"device"}
    lines = log_lines(caplog, "finding")
    assert {(line["ruleId"], line["phase"], line["vmName"]) for line in lines} == {
        ("tpm-profile", "device", "avd-personal-03"),
        ("tpm-compliance", "device", "avd-personal-03"),
        ("remote-access", "device", "avd-personal-03"),
    }
    tags = simulators.world.vms[ENROLLED_HOST.resource_id]["tags"]
    assert tags["intune-prerequisites"] == "error: remote-access"
    record = await ledger_row(ledger, ENROLLED_HOST)
    assert record.device_checked_at is not None
    assert record.device.managed_device_id == "7d1e0003-aaaa-4bbb-8ccc-000000000003"  # proven: kept for later


async def test_a_session_host_whose_host_pool_the_app_cannot_read_is_checked_without_the_avd_only_rules(
    services: Services, simulators: Simulators, ledger: TableLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    pools = f"/subscriptions/{SUB}/resourcegroups/rg-avd-prod/providers/microsoft.desktopvirtualization/hostpools"
    simulators.world.unreadable_scopes.add(f"{pools}/hp-personal")  # the create-time check reported it

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    assert [line["decision"] for line in log_lines(caplog, "device-check")] == ["checked"]
    assert ids(await device_findings(ledger, ENROLLED_HOST)) == [("tpm-profile", "warning")]  # BitLocker, on any VM


async def test_remote_desktop_turned_off_for_an_avd_host_is_an_error_naming_the_profile(
    services: Services, ledger: TableLedger
) -> None:
    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    (remote,) = [f for f in await device_findings(ledger, ENROLLED_HOST) if f.rule_id == "remote-access"]
    assert remote.severity == "error"
    assert f"'Kiosk lockdown (RDP off)' ({RDP_OFF})" in remote.message
    assert "AllowUsersToConnectRemotely = <disabled/>" in remote.evidence


async def test_a_plain_vm_gets_the_bitlocker_finding_but_not_the_avd_only_ones(
    services: Services, ledger: TableLedger
) -> None:
    await deliver(request_for(WIN11, WIN11_VM_ID))

    assert ids(await device_findings(ledger, WIN11)) == [("tpm-profile", "warning")]


@pytest.mark.parametrize(
    ("odata_type", "settings"),
    [
        ("windows10DeviceFirmwareConfigurationInterface", {}),
        ("windowsDomainJoinConfiguration", {"computerNameStaticPrefix": "avd"}),
    ],
    ids=["dfci", "domain join"],
)
async def test_a_profile_type_only_graph_beta_describes_is_found_through_the_beta_list(
    services: Services, simulators: Simulators, ledger: TableLedger, odata_type: str, settings: dict[str, Any]
) -> None:
    simulators.tenant.add_policies(
        {
            "deviceConfigurations": [
                {
                    "@odata.type": f"#microsoft.graph.{odata_type}",
                    "id": "c0f10009-0000-4000-8000-000000000009",
                    "displayName": "Beta-only profile",
                    **settings,
                    "assignments": [
                        {"id": "a1", "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}}
                    ],
                }
            ]
        }
    )

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    found = [f for f in await device_findings(ledger, ENROLLED_HOST) if "c0f10009" in f.message]
    assert [(f.rule_id, f.severity) for f in found] == [("tpm-profile", "warning")]
    assert simulators.graph.calls("GET", "/beta/deviceManagement/deviceConfigurations")


async def test_an_autopilot_self_deploying_enrolment_is_an_error(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    managed = simulators.tenant.managed_devices["7d1e0003-aaaa-4bbb-8ccc-000000000003"]
    managed["deviceEnrollmentType"] = "windowsAzureADJoinUsingDeviceAuth"

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    assert ("autopilot", "error") in ids(await device_findings(ledger, ENROLLED_HOST))


async def test_an_enrolment_through_an_autopilot_profile_is_an_oobe_note(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    managed = simulators.tenant.managed_devices["7d1e0003-aaaa-4bbb-8ccc-000000000003"]
    managed["enrollmentProfileName"] = "Autopilot user-driven"

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    (oobe,) = [f for f in await device_findings(ledger, ENROLLED_HOST) if f.rule_id == "oobe"]
    assert "'Autopilot user-driven'" in oobe.message


async def test_a_vm_whose_device_never_enrols_is_reported_not_enrolled_once_the_wait_is_over(
    services: Services, ledger: TableLedger, azurite: Azurite
) -> None:
    await deliver(request_for(NEW_HOST, NEW_HOST_VM_ID, datetime.now(UTC) - timedelta(hours=25), attempt=9))

    (finding,) = await device_findings(ledger, NEW_HOST)
    assert (finding.rule_id, finding.severity) == ("not-enrolled", "warning")
    assert "within 24 h" in finding.message
    assert await queued(azurite, services.settings.device_check.queue) == []  # no further look


async def test_a_device_not_proven_the_vms_is_left_unchecked_and_reported(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(request_for(DUPLICATES, DUPLICATES_VM_ID, datetime.now(UTC) - timedelta(hours=25), attempt=9))

    (finding,) = await device_findings(ledger, DUPLICATES)
    assert finding.rule_id == "device-unproven"
    record = await ledger_row(ledger, DUPLICATES)
    assert record.device.managed_device_id is None
    assert not simulators.graph.calls("GET", "/deviceManagement/deviceConfigurations")


async def test_a_device_not_there_yet_is_looked_for_again_later_with_a_longer_wait(
    services: Services, azurite: Azurite, ledger: TableLedger
) -> None:
    await deliver(request_for(NEW_HOST, NEW_HOST_VM_ID, attempt=2))

    assert await device_findings(ledger, NEW_HOST) == []
    assert await queued(azurite, services.settings.device_check.queue) == []  # not visible yet
    await asyncio.sleep(4.6)  # 1 s doubled twice
    (again,) = await queued(azurite, services.settings.device_check.queue)
    assert (again["vmId"], again["attempt"]) == (NEW_HOST_VM_ID, 3)


async def test_a_redelivered_check_records_and_reports_its_findings_once(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    text = request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID)

    await process_device_check(text, 1, services)
    first = await device_findings(ledger, ENROLLED_HOST)
    again = await process_device_check(text, 2, services)

    assert again.decision == "skipped"
    assert await device_findings(ledger, ENROLLED_HOST) == first
    assert len(first) == 3
    assert len(simulators.topic_router.events) == 1


async def test_a_throttled_graph_still_completes_the_check(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    simulators.graph.throttle.every = 3
    simulators.graph.throttle.retry_after_seconds = 1

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))

    assert simulators.graph.throttle.refused >= 2
    assert len(await device_findings(ledger, ENROLLED_HOST)) == 3


async def test_a_check_that_keeps_failing_is_retried_then_parked_with_its_reason(
    services: Services, simulators: Simulators, azurite: Azurite
) -> None:
    simulators.graph.throttle.every = 1
    simulators.graph.throttle.status = 500  # a server error: transient, not retried inside the call
    text = request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID)

    with pytest.raises(TransientError):
        await process_device_check(text, 1, services)
    outcome = await process_device_check(text, 4, services)

    assert outcome.decision == "parked"
    (parked,) = await queued(azurite, services.settings.device_check.poison_queue)
    assert "still failing after 4 attempts" in parked["reason"]
    assert json.loads(parked["message"]) == json.loads(text)


async def test_an_unreadable_message_is_parked_with_its_reason(services: Services, azurite: Azurite) -> None:
    await deliver('{"resourceId": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Storage/x"}')

    (parked,) = await queued(azurite, services.settings.device_check.poison_queue)
    assert parked["reason"].startswith("unreadable device-check message")


async def test_a_vm_deleted_or_created_again_before_its_check_is_not_checked(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(request_for(ENROLLED_HOST, "an-earlier-vm-id"))
    simulators.world.delete_vm(WIN11.resource_id)
    await deliver(request_for(WIN11, WIN11_VM_ID))

    assert await ledger.get(WIN11) is None
    assert await ledger.get(ENROLLED_HOST) is None
    assert not simulators.graph.calls()


async def test_a_burst_of_checks_reads_the_tenants_policies_once(services: Services, simulators: Simulators) -> None:
    await asyncio.gather(
        deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID)),
        deliver(request_for(WIN11, WIN11_VM_ID)),
    )

    assert len(simulators.graph.calls("GET", "/v1.0/deviceManagement/deviceConfigurations")) == 1
    assert len(simulators.graph.calls("GET", "/v1.0/deviceManagement/deviceCompliancePolicies")) == 1


async def test_a_look_of_an_older_chain_does_not_cut_a_newer_one_short(
    services: Services, ledger: TableLedger, azurite: Azurite
) -> None:
    """The VM was checked again (say its image changed): the old chain's late look is dropped."""
    await on_vm_created(trigger_input(load_event("eventgrid-vm-create-avd-personal-11.json")))
    older = request_for(NEW_HOST, NEW_HOST_VM_ID, datetime.now(UTC) - timedelta(hours=25), attempt=9)

    await deliver(older)

    assert await device_findings(ledger, NEW_HOST) == []  # no not-enrolled from the older chain
    record = await ledger_row(ledger, NEW_HOST)
    assert record.device_check_due is not None  # the newer chain still runs


async def test_a_device_whose_entra_object_is_not_proven_is_checked_without_group_policies_in_the_end(
    services: Services, simulators: Simulators, ledger: TableLedger
) -> None:
    """Its groups are the Entra object's: a Wi-Fi profile for a group can't be placed, and that is said."""
    managed = "7d1e0003-aaaa-4bbb-8ccc-000000000003"
    await ledger.insert(  # the ids learnt for this very VM earlier; its Entra object is gone since
        VmRecord(
            ENROLLED_HOST,
            incarnation=Incarnation(vm_id=ENROLLED_HOST_VM_ID),
            device=DeviceMapping(managed_device_id=managed, learnt_for_vm_id=ENROLLED_HOST_VM_ID),
        )
    )
    del simulators.tenant.devices["e0b10003-1111-4222-8333-000000000003"]

    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID))
    assert await device_findings(ledger, ENROLLED_HOST) == []  # waits for it first
    await deliver(request_for(ENROLLED_HOST, ENROLLED_HOST_VM_ID, datetime.now(UTC) - timedelta(hours=25), 9))

    found = await device_findings(ledger, ENROLLED_HOST)
    assert ("device-groups-unknown", "warning") in ids(found)
