"""The suppression decision (design §4) as a pure function: facts in, plan out."""

from __future__ import annotations

from datetime import UTC, datetime

from responder.decisions.model import DeviceMapping, PowerState, SuppressionState
from responder.decisions.settings import SuppressionSettings
from responder.decisions.suppression import (
    AddToGroup,
    NoDevice,
    Plan,
    RemoveFromGroup,
    SetAttribute,
    SyncDevice,
    plan_suppression,
)

AT = datetime(2026, 11, 20, 19, 0, 2, tzinfo=UTC)
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
DEVICE = DeviceMapping(managed_device_id="md-1", entra_object_id="obj-1", entra_device_id="dev-1")
BOTH = SuppressionSettings(group_id=GROUP, attribute=7)
NOT_MARKED, MARKED = SuppressionState.NONE, SuppressionState.SUPPRESSED


def plan(
    power: PowerState,
    marked: SuppressionState = NOT_MARKED,
    device: DeviceMapping | NoDevice | None = DEVICE,
    settings: SuppressionSettings = BOTH,
) -> Plan:
    return plan_suppression(power=power, marked=marked, device=device, settings=settings, event_time=AT)


def test_a_deallocated_vm_joins_the_suppression_group_and_gets_the_attribute() -> None:
    result = plan(PowerState.DEALLOCATED)

    assert result.actions == (
        AddToGroup(GROUP, "obj-1"),
        SetAttribute("obj-1", 7, "deallocated 2026-11-20T19:00:02+00:00"),
    )
    assert result.suppression_after is MARKED


def test_only_the_configured_mechanism_is_used() -> None:
    assert plan(PowerState.DEALLOCATED, settings=SuppressionSettings(group_id=GROUP)).actions == (
        AddToGroup(GROUP, "obj-1"),
    )


def test_a_running_vm_that_was_marked_is_unmarked_and_synced() -> None:
    result = plan(PowerState.RUNNING, marked=MARKED)

    assert result.actions == (
        RemoveFromGroup(GROUP, "obj-1"),
        SetAttribute("obj-1", 7, None),
        SyncDevice("md-1"),
    )
    assert result.suppression_after is NOT_MARKED


def test_a_late_deallocate_for_a_running_vm_changes_nothing() -> None:
    result = plan(PowerState.RUNNING, marked=NOT_MARKED)

    assert result.actions == ()
    assert result.suppression_after is NOT_MARKED


def test_an_already_marked_deallocated_vm_is_left_as_it_is() -> None:
    assert plan(PowerState.DEALLOCATED, marked=MARKED).actions == ()


def test_a_stopped_vm_is_not_marked_by_default() -> None:
    assert plan(PowerState.STOPPED).actions == ()


def test_a_stopped_vm_is_marked_when_the_setting_asks_for_it() -> None:
    settings = SuppressionSettings(group_id=GROUP, on_power_off=True)

    assert plan(PowerState.STOPPED, settings=settings).actions == (AddToGroup(GROUP, "obj-1"),)


def test_without_a_configured_mechanism_the_plan_is_a_finding() -> None:
    result = plan(PowerState.DEALLOCATED, settings=SuppressionSettings())

    assert result.actions == ()
    assert [finding.rule_id for finding in result.findings] == ["suppression-not-configured"]


def test_an_ambiguous_device_is_never_touched_and_needs_review() -> None:
    result = plan(PowerState.DEALLOCATED, device=NoDevice("2 Intune devices are named 'vm-dup-04'", ambiguous=True))

    assert result.actions == ()
    assert [finding.rule_id for finding in result.findings] == ["needs-review"]
    assert result.suppression_after is NOT_MARKED


def test_a_vm_without_an_intune_device_is_a_finding_not_an_error() -> None:
    result = plan(PowerState.DEALLOCATED, device=NoDevice("no Intune device named 'vm-clone-05'"))

    assert result.actions == ()
    assert [finding.rule_id for finding in result.findings] == ["no-intune-device"]


def test_a_device_without_an_entra_object_can_only_be_reported() -> None:
    result = plan(PowerState.DEALLOCATED, device=DeviceMapping(managed_device_id="md-3"))

    assert result.actions == ()
    assert [finding.rule_id for finding in result.findings] == ["no-entra-device"]


def test_a_deleted_vm_is_left_to_the_cleanup() -> None:
    assert plan(PowerState.DELETED, marked=MARKED).actions == ()
