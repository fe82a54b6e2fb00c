"""Domain values shared by the intake, the decisions and the adapters.

Everything here is plain data: no I/O, no SDK types, so the decision core can be
tested without any cloud and the adapters can be swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EventKind(StrEnum):
    """What an ARM event means for the responder (design §1)."""

    CREATED = "created"
    DEALLOCATED = "deallocated"
    POWERED_OFF = "powered-off"
    STARTED = "started"
    DELETED = "deleted"
    IGNORED = "ignored"


class PowerState(StrEnum):
    """The VM power state as last learnt from an event or from ARM."""

    UNKNOWN = "unknown"
    RUNNING = "running"
    STOPPED = "stopped"  # powered off, still allocated
    DEALLOCATED = "deallocated"
    DELETED = "deleted"


class SuppressionState(StrEnum):
    """Whether the VM's device currently carries the 'deallocated' mark (design §4)."""

    NONE = "none"
    SUPPRESSED = "suppressed"


class CleanupStatus(StrEnum):
    """The last cleanup's state, for people reading the ledger (design §5).

    Informational only: whether a deletion still needs a cleanup is decided by the
    event id and the cleanup's own progress row, never by this flag.
    """

    NONE = "none"
    DONE = "done"
    REFUSED = "refused"
    NEEDS_REVIEW = "needs-review"


@dataclass(frozen=True, slots=True)
class VmRef:
    """A VM's identity, always in normalised (lower-case) form.

    ARM resource ids are case-insensitive and events spell them inconsistently,
    so every comparison and every ledger key goes through this one value.
    """

    subscription_id: str
    resource_group: str
    name: str

    @property
    def resource_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourcegroups/{self.resource_group}"
            f"/providers/microsoft.compute/virtualmachines/{self.name}"
        )

    @property
    def arm_cased_id(self) -> str:
        """The id with ARM's segment casing, as Entra stores it in `physicalIds` (names as known here)."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{self.name}"
        )


class Severity(StrEnum):
    """How much a finding asks of a person: an error blocks management, a warning needs a look."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class FindingSource(StrEnum):
    """Which check raised a finding: each check, when it looks again, replaces only its own."""

    CREATE = "create"  # the create-time check, from ARM when the VM is written
    DEVICE = "device"  # the device-side check, from Intune once the device enrolled
    POWER = "power"  # the power stage: why a deallocated VM's mark could not be set or lifted
    CLEANUP = "cleanup"  # a cleanup's plan (kept in the audit table, not the ledger)


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of a rule or a guard, with the reason a person can act on, and the check it came from."""

    rule_id: str
    severity: Severity
    message: str
    evidence: str = ""
    doc: str = ""
    phase: FindingSource = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One life of a VM under its resource id, as ARM described it (design §2).

    Deleting a VM and creating another under the same resource id starts a new incarnation,
    with a new vmId: what was known of the old one is not evidence about the new one, except
    what belongs to its Windows installation (the OS disk a later VM may boot again).
    """

    vm_id: str | None = None  # the vmId Azure gave this life
    computer_name: str | None = None  # as ARM reported it for this vmId; never guessed from the resource name
    os_type: str | None = None
    created_at: datetime | None = None  # ARM's timeCreated of this VM
    join_kind: str | None = None  # "entra" | "domain", from the VM's extensions; None: unknown
    arm_id: str | None = None  # the resource id as ARM spells it (Entra's physicalIds keep that casing)
    os_disk_id: str | None = None  # the managed OS disk it boots (lower case): its Windows installation
    machine_since: datetime | None = None  # when a VM first booted that disk, as far as known

    @property
    def installed_since(self) -> datetime | None:
        """When its Windows installation first booted: a record enrolled before belongs to an earlier machine."""
        return self.machine_since or self.created_at

    def forgotten(self) -> Incarnation:
        """What is left once a new VM holds the resource id: its installation (OS disk and since when),
        which a new VM booting that disk takes over, and how ARM spells the id (a spelling to search by)."""
        return Incarnation(arm_id=self.arm_id, os_disk_id=self.os_disk_id, machine_since=self.machine_since)


@dataclass(frozen=True, slots=True)
class DeviceMapping:
    """A VM's device as proven once: evidence for the vmId it was proven for, never a bypass of the proof."""

    learnt_for_vm_id: str | None = None
    managed_device_id: str | None = None  # Intune's managed device id
    entra_device_id: str | None = None  # Entra `deviceId` (= Intune's azureADDeviceId)
    entra_object_id: str | None = None  # Entra object `id`, for group membership and attributes

    @property
    def empty(self) -> bool:
        return not (self.managed_device_id or self.entra_object_id or self.entra_device_id)


@dataclass(frozen=True, slots=True)
class VmRecord:
    """The ledger's row for one VM (design §2).

    It outlives the VM: after a deletion ARM can no longer say which device was
    the VM's, so the mapping captured earlier is the strongest key cleanup has.
    `etag` is the storage concurrency token, not part of the value.
    """

    ref: VmRef
    incarnation: Incarnation = field(default_factory=Incarnation)  # the VM now under this id, as far as known
    device: DeviceMapping = field(default_factory=DeviceMapping)  # its device, once proven
    power_state: PowerState = PowerState.UNKNOWN
    power_state_at: datetime | None = None
    suppression: SuppressionState = SuppressionState.NONE
    marked_at: datetime | None = None  # since when the device is marked (Graph accepted it), by event or reconciliation
    last_event_at: dict[EventKind, datetime] = field(default_factory=dict)
    recent_event_ids: tuple[str, ...] = ()  # events whose work is done: a redelivery changes nothing
    pending_event_ids: tuple[str, ...] = ()  # events seen whose work is not done yet: a redelivery resumes it
    findings: tuple[Finding, ...] = ()
    cleanup_status: CleanupStatus = CleanupStatus.NONE
    deleted_at: datetime | None = None
    check_fingerprint: str | None = None  # what the last prerequisite check looked at (vmId, image, extensions)
    device_check_due: datetime | None = None  # a device-side check is queued and gives up at this time
    device_checked_at: datetime | None = None  # the device-side check concluded (findings, or not enrolled)
    device_groups: str | None = None  # a fingerprint of the device's Entra groups that check read (they change)
    opted_out: bool = False  # carried the opt-out tag when ARM was last read
    last_plan: tuple[str, ...] = ()  # the actions last decided, done or (audit mode) only recorded
    lease_owner: str | None = None  # the invocation acting on this VM's device right now
    lease_until: datetime | None = None
    etag: str | None = field(default=None, compare=False)


def parse_moment(value: object) -> datetime | None:
    """An ISO 8601 time from JSON (ARM, Graph, trigger payloads), or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
