"""Suppressing the false noncompliance of a deallocated VM (design §4), as a pure plan.

Facts in (what ARM says the VM is now, what the ledger says is marked, which
device is the VM's, the configured mechanisms), a plan out: the actions to
take and the findings to report. No I/O here; `responder.stages.power` gathers the
facts and carries the plan out (or, in audit mode, only records it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from responder.decisions.model import DeviceMapping, Finding, FindingSource, PowerState, Severity, SuppressionState
from responder.decisions.settings import SuppressionSettings

DOC = "https://learn.microsoft.com/mem/intune/fundamentals/windows-10-virtual-machines"


@dataclass(frozen=True, slots=True)
class NoDevice:
    """The VM's device could not be named with confidence; `ambiguous` means two or more."""

    reason: str
    ambiguous: bool = False


DeviceMatch = DeviceMapping | NoDevice


@dataclass(frozen=True, slots=True)
class AddToGroup:
    role: ClassVar[str] = "GroupMember.ReadWrite.All"  # the Graph app role it needs (README, Permissions)
    group_id: str
    object_id: str

    def describe(self) -> str:
        return f"add Entra device {self.object_id} to suppression group {self.group_id}"


@dataclass(frozen=True, slots=True)
class RemoveFromGroup:
    role: ClassVar[str] = "GroupMember.ReadWrite.All"  # the Graph app role it needs (README, Permissions)
    group_id: str
    object_id: str

    def describe(self) -> str:
        return f"remove Entra device {self.object_id} from suppression group {self.group_id}"


@dataclass(frozen=True, slots=True)
class SetAttribute:
    role: ClassVar[str] = "Device.ReadWrite.All"  # the Graph app role it needs (README, Permissions)
    object_id: str
    number: int
    value: str | None  # None clears it

    def describe(self) -> str:
        what = f"set to {self.value!r}" if self.value is not None else "clear"
        return f"{what} extensionAttribute{self.number} of Entra device {self.object_id}"


@dataclass(frozen=True, slots=True)
class SyncDevice:
    role: ClassVar[str] = (
        "DeviceManagementManagedDevices.PrivilegedOperations.All"  # the Graph app role it needs (README, Permissions)
    )
    managed_device_id: str

    def describe(self) -> str:
        return f"ask Intune device {self.managed_device_id} to sync"


Action = AddToGroup | RemoveFromGroup | SetAttribute | SyncDevice


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]
    suppression_after: SuppressionState  # what the ledger holds once the actions are done
    reason: str


def wanted_suppression(power: PowerState, settings: SuppressionSettings) -> SuppressionState:
    """Deallocated VMs can't check in; stopped ones neither, when the setting says so."""
    if power is PowerState.DEALLOCATED or (power is PowerState.STOPPED and settings.on_power_off):
        return SuppressionState.SUPPRESSED
    return SuppressionState.NONE


def mark_value(deallocated_at: datetime) -> str:
    """The extension attribute's value: says what and since when, for device filters and people."""
    return f"deallocated {deallocated_at.isoformat(timespec='seconds')}"


def plan_suppression(
    *,
    power: PowerState,
    marked: SuppressionState,
    device: DeviceMatch | None,
    settings: SuppressionSettings,
    event_time: datetime,
) -> Plan:
    """The plan that makes the device's mark agree with the VM's power state.

    `power` is ARM's current answer, not the event's claim: a late `deallocate`
    for a VM that runs again plans nothing. `device` may be None when no change
    is needed (the caller skips the Graph lookups then).
    """
    wanted = wanted_suppression(power, settings)
    if power in {PowerState.DELETED, PowerState.UNKNOWN}:
        return Plan((), (), marked, f"ARM reports the VM as {power.value}: nothing to mark")
    if wanted is marked:
        verb = "already marked deallocated" if wanted is SuppressionState.SUPPRESSED else "not marked"
        return Plan((), (), marked, f"ARM says {power.value} and the device is {verb}: nothing to do")
    if not settings.configured:
        finding = Finding(
            "suppression-not-configured",
            Severity.INFO,
            "No suppression group or extension attribute is configured, so the deallocated VM's "
            "device will turn noncompliant after the compliance validity period.",
            "set RESPONDER_SUPPRESSION_GROUP_ID and/or RESPONDER_SUPPRESSION_ATTRIBUTE",
            DOC,
            phase=FindingSource.POWER,
        )
        return Plan((), (finding,), marked, "no suppression mechanism configured")
    if device is None or isinstance(device, NoDevice):
        return _no_device_plan(device, marked)
    if wanted is SuppressionState.SUPPRESSED:
        return _suppress(device, settings, event_time)
    return _lift(device, settings)


def _suppress(device: DeviceMapping, settings: SuppressionSettings, event_time: datetime) -> Plan:
    actions: list[Action] = []
    findings: list[Finding] = []
    if device.entra_object_id is None:
        findings.append(_no_entra_object(device))
    else:
        if settings.group_id:
            actions.append(AddToGroup(settings.group_id, device.entra_object_id))
        if settings.attribute is not None:
            # Graph: a device's extensionAttributes are mastered in Entra, hybrid-joined or not.
            actions.append(SetAttribute(device.entra_object_id, settings.attribute, mark_value(event_time)))
    after = SuppressionState.SUPPRESSED if actions else SuppressionState.NONE
    return Plan(tuple(actions), tuple(findings), after, "deallocated: mark the device")


def _lift(device: DeviceMapping, settings: SuppressionSettings) -> Plan:
    actions: list[Action] = []
    if device.entra_object_id is not None:
        if settings.group_id:
            actions.append(RemoveFromGroup(settings.group_id, device.entra_object_id))
        if settings.attribute is not None:
            actions.append(SetAttribute(device.entra_object_id, settings.attribute, None))
    if device.managed_device_id is not None:
        actions.append(SyncDevice(device.managed_device_id))
    return Plan(tuple(actions), (), SuppressionState.NONE, "running again: lift the mark and sync")


def _no_device_plan(device: NoDevice | None, marked: SuppressionState) -> Plan:
    if device is not None and device.ambiguous:
        finding = Finding(
            "needs-review",
            Severity.WARNING,
            f"More than one device could be this VM's, so none was touched: {device.reason}. "
            "Two enrolled devices with one name are also the symptom of a cloned image.",
            device.reason,
            DOC,
            phase=FindingSource.POWER,
        )
    else:
        reason = device.reason if device is not None else "no device lookup was made"
        finding = Finding(
            "no-intune-device",
            Severity.INFO,
            f"No Intune device found for this VM: {reason}.",
            reason,
            phase=FindingSource.POWER,
        )
    return Plan((), (finding,), marked, finding.message)


def _no_entra_object(device: DeviceMapping) -> Finding:
    return Finding(
        "no-entra-device",
        Severity.WARNING,
        "The Intune device has no Entra device object, so it can't be put in the suppression group "
        "or given the extension attribute.",
        f"managedDevice {device.managed_device_id}",
        phase=FindingSource.POWER,
    )
