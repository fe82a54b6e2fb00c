"""VM written → prerequisite check, through the real handler against the simulators (design §3)."""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

import pytest

from handlers import vm_created
from handlers._eventgrid import trigger_input
from localdev.azurite import Azurite
from localdev.queue_host import queue_client
from localdev.simulators import Simulators
from responder.adapters.table_ledger import TableLedger
from responder.decisions.errors import TransientError
from responder.decisions.model import Finding, VmRef
from tests.conftest import ledger_row, load_event, log_lines, outcome_of

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
# A shared-services subscription holding the central Azure Compute Gallery, where the app has no role.
CENTRAL = "c3a1e0f2-7b6d-4e5c-9a8b-1f2e3d4c5b6a"
CENTRAL_GALLERY = f"/subscriptions/{CENTRAL}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/gal_central"
SHARED_IMAGE = "/SharedGalleries/8f2c5e1a-0b3d-4e6f-9a7c-1d2e3f4a5b6c-FABRIKAMSHARED/Images/win11-shared-specialized"
COMMUNITY_IMAGE = (
    "/CommunityGalleries/northwind-5d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a/Images/win11-community-specialized"
)

on_vm_created = vm_created.on_vm_created.build().get_user_function()


def write_event(vm: str, resource_group: str = "rg-avd-prod", event_id: str | None = None) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-write.json"))
    resource_id = VmRef(SUB, resource_group, vm).resource_id
    raw["subject"] = raw["data"]["resourceUri"] = resource_id
    if event_id:
        raw["id"] = event_id
    return raw


def extension_write_event(vm: VmRef, extension: str, event_id: str | None = None) -> dict[str, Any]:
    """The `virtualMachines/extensions/write` ARM sends when a template or the portal adds an extension."""
    raw = copy.deepcopy(load_event("eventgrid-vm-extension-write.json"))
    resource_id = f"{vm.arm_cased_id}/extensions/{extension}"
    raw["subject"] = raw["data"]["resourceUri"] = raw["data"]["authorization"]["scope"] = resource_id
    raw["id"] = event_id or str(uuid.uuid4())
    return raw


def extension_document(vm: VmRef, name: str, publisher: str, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """An extension as ARM lists it in the VM's `resources` once its write succeeded."""
    return {
        "id": f"{vm.arm_cased_id}/extensions/{name}",
        "name": name,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": "westeurope",
        "properties": {
            "publisher": publisher,
            "type": kind,
            "typeHandlerVersion": "1.0",
            "autoUpgradeMinorVersion": True,
            "settings": settings,
            "provisioningState": "Succeeded",
        },
    }


async def deliver(raw: dict[str, Any]) -> None:
    await on_vm_created(trigger_input(raw))


async def rule_ids(ledger: TableLedger, vm: str, resource_group: str = "rg-avd-prod") -> list[tuple[str, str]]:
    record = await ledger_row(ledger, VmRef(SUB, resource_group, vm))
    return [(finding.rule_id, finding.severity) for finding in record.findings]


def add_vm(simulators: Simulators, name: str, image: dict[str, str], joined: bool = True) -> VmRef:
    """A Windows 11 Enterprise VM like vm-win11-01 (Entra-joined unless `joined` is False), from `image`."""
    ref = VmRef(SUB, "rg-avd-prod", name)
    document = copy.deepcopy(simulators.world.vms[VmRef(SUB, "rg-avd-prod", "vm-win11-01").resource_id])
    document["id"] = document["id"].replace("vm-win11-01", name)
    document["name"] = name
    properties = document["properties"]
    properties["vmId"] = str(uuid.uuid4())
    properties["osProfile"]["computerName"] = properties["instanceView"]["computerName"] = name
    properties["storageProfile"]["imageReference"] = image
    properties["storageProfile"]["osDisk"].pop("managedDisk", None)  # a disk of its own, not vm-win11-01's
    for extension in document["resources"]:
        extension["id"] = extension["id"].replace("vm-win11-01", name)
    if not joined:
        document["resources"] = []
    simulators.world.vms[ref.resource_id] = document
    return ref


def place_central_gallery(simulators: Simulators) -> str:
    """The golden image's definition in the central gallery's subscription, which answers the app 403."""
    image = copy.deepcopy(next(iter(simulators.world.gallery_images.values())))
    image["id"] = f"{CENTRAL_GALLERY}/images/win11-golden"
    simulators.world.gallery_images[image["id"].lower()] = image
    simulators.world.unreadable_scopes.add(f"/subscriptions/{CENTRAL}")
    return f"{image['id']}/versions/1.0.0"


async def device_checks_queued(azurite: Azurite, queue: str) -> int:
    async with queue_client(azurite.connection_string, queue) as client:
        return int((await client.get_queue_properties()).approximate_message_count or 0)


def finding(findings: tuple[Finding, ...], rule_id: str) -> Finding:
    (found,) = [item for item in findings if item.rule_id == rule_id]
    return found


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
async def test_a_write_that_changes_the_join_extension_is_checked_again_and_reports_what_is_new(
    simulators: Simulators, ledger: TableLedger
) -> None:
    await deliver(write_event("vm-win11-01"))
    (extension,) = simulators.world.vms[VmRef(SUB, "rg-avd-prod", "vm-win11-01").resource_id]["resources"]
    del extension["properties"]["settings"]["mdmId"]  # Entra join without Intune auto-enrolment

    await deliver(write_event("vm-win11-01", event_id="extension-changed-write"))

    assert len(simulators.topic_router.events) == 2
    assert [item["ruleId"] for item in simulators.topic_router.events[1]["data"]["findings"]] == ["join"]
    assert await rule_ids(ledger, "vm-win11-01") == [("join", "warning")]


@pytest.mark.usefixtures("app_env")
async def test_a_write_of_an_extension_the_rules_do_not_read_changes_nothing(
    simulators: Simulators, ledger: TableLedger
) -> None:
    vm = VmRef(SUB, "rg-avd-prod", "vm-win11-01")
    await deliver(write_event(vm.name))
    before = await ledger_row(ledger, vm)
    simulators.world.vms[vm.resource_id]["resources"].append(
        extension_document(vm, "AzureMonitorWindowsAgent", "Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent", {})
    )

    handled = await outcome_of(on_vm_created, extension_write_event(vm, "AzureMonitorWindowsAgent"))

    assert (handled.outcome, handled.reason) == (
        "recorded",
        "already checked; the image, OS disk and the extensions the rules read are unchanged",
    )
    assert len(simulators.topic_router.events) == 1
    assert (await ledger_row(ledger, vm)).check_fingerprint == before.check_fingerprint


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


async def test_a_vm_whose_gallery_the_app_cannot_read_gets_a_finding_naming_the_role_and_is_still_checked(
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    simulators: Simulators,
    ledger: TableLedger,
    azurite: Azurite,
    table_name: str,
) -> None:
    queue = f"checks-{table_name[-12:]}"
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_QUEUE", queue)
    vm = add_vm(simulators, "vm-central-12", {"id": place_central_gallery(simulators)}, joined=False)

    handled = await outcome_of(on_vm_created, write_event(vm.name))

    assert handled.outcome == "recorded"
    record = await ledger_row(ledger, vm)
    # The other rules still ran (a missing join is said once the device-side check's wait is over).
    assert [(item.rule_id, item.severity) for item in record.findings] == [("image-unreadable", "warning")]
    unreadable = finding(record.findings, "image-unreadable")
    assert "Reader role (or a role with Microsoft.Compute/galleries/images/read)" in unreadable.message
    assert f"on resource group rg-images of subscription {CENTRAL}, or on that subscription." in unreadable.message
    assert unreadable.evidence.startswith(f"{CENTRAL_GALLERY}/images/win11-golden: ")
    assert "AuthorizationFailed" in unreadable.evidence
    assert len(simulators.arm.calls("GET", "/galleries/")) == 1  # a refusal is not retried
    assert [item["ruleId"] for item in simulators.topic_router.events[0]["data"]["findings"]] == ["image-unreadable"]
    assert record.device_check_due is not None
    assert await device_checks_queued(azurite, queue) == 1


async def test_a_gallery_read_that_keeps_failing_is_retried_not_reported(
    app_env: dict[str, str], simulators: Simulators, ledger: TableLedger
) -> None:
    gallery = f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/"
    simulators.arm.faults.path_prefix = gallery
    simulators.arm.faults.fail = [503] * 10

    with pytest.raises(TransientError):
        await deliver(write_event("vm-clone-05"))

    assert (await ledger_row(ledger, VmRef(SUB, "rg-avd-prod", "vm-clone-05"))).findings == ()
    assert simulators.topic_router.events == []


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize(
    ("reference", "collection"),
    [
        ({"sharedGalleryImageId": f"{SHARED_IMAGE}/Versions/latest"}, "sharedGalleries"),
        ({"communityGalleryImageId": f"{COMMUNITY_IMAGE}/Versions/1.0.0"}, "communityGalleries"),
    ],
    ids=["shared gallery", "community gallery"],
)
async def test_a_vm_from_a_specialized_shared_or_community_gallery_image_gets_a_cloned_image_error(
    simulators: Simulators, ledger: TableLedger, reference: dict[str, str], collection: str
) -> None:
    vm = add_vm(simulators, "vm-shared-13", reference)

    await deliver(write_event(vm.name))

    assert await rule_ids(ledger, vm.name) == [("cloned-image", "error")]
    located = f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/{collection}/"
    assert len(simulators.arm.calls("GET", located)) == 1


async def test_a_session_host_whose_host_pool_the_app_cannot_read_gets_a_finding_and_is_still_checked(
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    simulators: Simulators,
    ledger: TableLedger,
    azurite: Azurite,
    table_name: str,
) -> None:
    queue = f"checks-{table_name[-12:]}"
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_QUEUE", queue)
    # Reader on the session host's resource group only: the subscription's host pools can't be listed, and
    # avd-personal-11 names no pool (its registration is a DSC configuration of the organisation's own).
    simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}")
    simulators.world.granted_scopes.add(f"/subscriptions/{SUB}/resourcegroups/rg-avd-prod")

    handled = await outcome_of(on_vm_created, write_event("avd-personal-11"))

    assert handled.outcome == "recorded"
    record = await ledger_row(ledger, VmRef(SUB, "rg-avd-prod", "avd-personal-11"))
    assert [(item.rule_id, item.severity) for item in record.findings] == [("host-pool-unreadable", "warning")]
    message = record.findings[0].message
    assert "Reader role (or a role with Microsoft.DesktopVirtualization/hostPools/read" in message
    assert message.endswith(f"on subscription {SUB}.")
    assert record.device_check_due is not None
    assert await device_checks_queued(azurite, queue) == 1


@pytest.mark.usefixtures("app_env")
async def test_a_session_host_that_names_its_pool_is_found_with_reader_on_the_pools_resource_group_alone(
    simulators: Simulators, ledger: TableLedger
) -> None:
    simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}")  # the subscription's pools can't be listed
    simulators.world.granted_scopes.add(f"/subscriptions/{SUB}/resourcegroups/rg-avd-pool")

    await deliver(write_event("avd-pooled-01", "rg-avd-pool"))  # its tag and extension name hp-pooled

    assert await rule_ids(ledger, "avd-pooled-01", "rg-avd-pool") == [("host-pool", "info")]


async def test_a_host_pool_whose_session_hosts_the_app_cannot_list_names_the_action_and_where(
    app_env: dict[str, str], simulators: Simulators, ledger: TableLedger
) -> None:
    # A custom role that reads host pools but not their session hosts (or a deny assignment on the pool).
    simulators.world.unreadable_scopes.add(
        f"/subscriptions/{SUB}/resourcegroups/rg-avd-pool/providers/microsoft.desktopvirtualization/hostpools/hp-pooled"
    )

    await deliver(write_event("avd-pooled-01", "rg-avd-pool"))

    (unreadable,) = (await ledger_row(ledger, VmRef(SUB, "rg-avd-pool", "avd-pooled-01"))).findings
    assert unreadable.rule_id == "host-pool-unreadable"
    assert "Microsoft.DesktopVirtualization/hostPools/sessionHosts/read" in unreadable.message
    assert f"on resource group rg-avd-pool of subscription {SUB}" in unreadable.message
    assert unreadable.evidence.startswith(f"/subscriptions/{SUB}/resourceGroups/rg-avd-pool/")
