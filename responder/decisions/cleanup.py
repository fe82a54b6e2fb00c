"""Cleanup of a deleted VM's orphaned Intune and Entra records (design §5), as pure decisions.

The queue message carries what the ledger knew about the deleted incarnation; the
worker gathers today's facts (is that VM really gone? which records are its own?)
and `plan_cleanup` decides: delete, skip, refuse or hold for review, always with a
reason. The plan is then written down as a `CleanupRecord` *before* anything is
deleted, and each deletion is recorded by record id as it happens, so a redelivery
after any fault resumes from the recorded ids instead of searching again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from responder.decisions.errors import UnreadableMessage
from responder.decisions.facts import Gone, ManagedDevice, OsDisk, VmFacts
from responder.decisions.model import DeviceMapping, Finding, FindingSource, Incarnation, Severity, VmRef
from responder.decisions.names import clip, has_control
from responder.decisions.ownership import Ownership, Verdict

SCHEMA_VERSION = 2
READABLE_SCHEMAS = frozenset({1, 2})  # version 1 messages (before incarnations) are still read
MAX_FIELD_LENGTH = 1024  # every id and name this message carries is far shorter
DOC = "https://learn.microsoft.com/mem/intune/remote-actions/devices-wipe#delete-devices-from-the-intune-admin-center"


VM_EXISTS = "the VM exists (again, or its deletion did not go through): its records are not orphans"
# What a cleanup can't know of a VM the responder never read (design §5).
UNSEEN = (
    "the responder never read this VM (it predates the responder, or its events were missed): only the "
    "physicalIds anchor ties the record to it, and whether it carried the opt-out tag is unknown"
)


class MessageError(UnreadableMessage):
    """A queue message this worker can't read: it goes to the poison queue at once, with this reason."""


class Origin(StrEnum):
    EVENT = "event"  # a delete event
    RECONCILE = "reconcile"  # reconciliation: a silent VM record and no VM of its name anywhere


@dataclass(frozen=True, slots=True)
class CleanupRequest:
    """The queue message: everything the worker needs, since the VM itself is gone."""

    event_id: str
    resource_id: str
    subscription_id: str
    resource_group: str
    vm_name: str
    deleted_at: datetime
    incarnation: Incarnation = field(default_factory=Incarnation)  # the deleted VM as the ledger knew it
    device: DeviceMapping = field(default_factory=DeviceMapping)  # its device, as the ledger proved it
    replaced_by_vm_id: str | None = None  # the delete ended an earlier VM than this later one
    opted_out: bool = False  # the VM carried the opt-out tag when last read
    found_by: Origin = Origin.EVENT
    schema: int = SCHEMA_VERSION

    @property
    def vm(self) -> VmRef:
        return VmRef(self.subscription_id, self.resource_group, self.vm_name)

    @property
    def knows_the_vm(self) -> bool:
        return bool(self.resource_id and self.subscription_id and self.resource_group and self.vm_name)

    @property
    def key(self) -> str:
        """One cleanup per incarnation (resource id + vmId): redeliveries, duplicate messages and a
        second delete event of the same VM share it, so two cleanups never chase the same records; a VM
        re-created under the resource id gets its own. A deletion of a VM the ledger never saw (no vmId)
        is keyed by its time."""
        if self.found_by is Origin.RECONCILE:
            material = f"reconcile|{self.event_id}"
        elif self.incarnation.vm_id:
            material = f"event|{self.resource_id}|{self.incarnation.vm_id}"
        else:
            material = f"event|{self.resource_id}||{self.deleted_at.isoformat()}"
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def to_text(self) -> str:
        """The message: one flat JSON object (schema 2), the incarnation's and the device's fields among the rest."""
        document: dict[str, Any] = {
            name: getattr(self, name) for name in _PLAIN_FIELDS if name not in {"deleted_at", "found_by"}
        }
        incarnation, device = self.incarnation, self.device
        installed = incarnation.installed_since
        document |= {name: getattr(incarnation, name) for name in _INCARNATION_TEXT}
        document |= {name: getattr(device, name) for name in _DEVICE_TEXT}
        document |= {
            "created_at": installed.isoformat() if installed else None,  # when its Windows installation first booted
            "device_vm_id": device.learnt_for_vm_id,
            "deleted_at": self.deleted_at.isoformat(),
            "found_by": self.found_by.value,
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> CleanupRequest:
        """The whole message checked against the schema; what fails names the field."""
        try:
            document = json.loads(text)
        except ValueError as error:
            raise MessageError(f"not JSON: {clip(str(error))}") from error
        if not isinstance(document, dict):
            raise MessageError("a cleanup message is a JSON object")
        if document.get("schema") not in READABLE_SCHEMAS:
            raise MessageError(f"unknown schema version {document.get('schema')!r}")
        if unknown := sorted(set(document) - _MESSAGE_FIELDS):
            raise MessageError(f"unknown field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {
            name: _text_field(document, name, required=name in _REQUIRED_TEXT)
            for name in _PLAIN_FIELDS - {"deleted_at", "opted_out", "found_by", "schema"}
        }
        values["deleted_at"] = _time_field(document, "deleted_at", required=True)
        named = {name: _text_field(document, name, required=False) for name in (*_INCARNATION_TEXT, *_DEVICE_TEXT)}
        values["incarnation"] = Incarnation(
            vm_id=named["vm_id"],
            computer_name=named["computer_name"],
            created_at=_time_field(document, "created_at", required=False),
            join_kind=named["join_kind"],
            arm_id=named["arm_id"],
            os_disk_id=named["os_disk_id"],
        )
        values["device"] = DeviceMapping(
            learnt_for_vm_id=_text_field(document, "device_vm_id", required=False),
            managed_device_id=named["managed_device_id"],
            entra_device_id=named["entra_device_id"],
            entra_object_id=named["entra_object_id"],
        )
        opted_out = document.get("opted_out", False)
        if not isinstance(opted_out, bool):
            raise MessageError(f"opted_out must be true or false, not {opted_out!r}")
        raw_origin = document.get("found_by", Origin.EVENT.value)
        if raw_origin not in Origin._value2member_map_:
            raise MessageError(f"unknown origin {raw_origin!r}")
        request = cls(**values, opted_out=opted_out, found_by=Origin(raw_origin), schema=int(document["schema"]))
        if request.found_by is Origin.RECONCILE and not request.device.managed_device_id:
            raise MessageError("managed_device_id must be a non-empty string")
        for name in () if request.found_by is Origin.RECONCILE else _REQUIRED_FOR_EVENT:
            if not getattr(request, name):
                raise MessageError(f"{name} must be a non-empty string")
        return request


_REQUIRED_TEXT = frozenset({"event_id"})
# The message's fields: the request's own, and the incarnation's and the device's, flat (schema 2).
_PLAIN_FIELDS = frozenset(
    {"event_id", "resource_id", "subscription_id", "resource_group", "vm_name", "deleted_at", "replaced_by_vm_id"}
    | {"opted_out", "found_by", "schema"}
)
_INCARNATION_TEXT = ("computer_name", "vm_id", "join_kind", "arm_id", "os_disk_id")
_DEVICE_TEXT = ("managed_device_id", "entra_device_id", "entra_object_id")
_MESSAGE_FIELDS = _PLAIN_FIELDS | set(_INCARNATION_TEXT) | set(_DEVICE_TEXT) | {"created_at", "device_vm_id"}
_REQUIRED_FOR_EVENT = ("resource_id", "subscription_id", "resource_group", "vm_name")


def _text_field(document: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = document.get(name)
    if value is None or value == "":
        if required:
            raise MessageError(f"{name} must be a non-empty string")
        return "" if name in {"resource_id", "subscription_id", "resource_group", "vm_name"} else None
    if not isinstance(value, str):
        raise MessageError(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > MAX_FIELD_LENGTH or has_control(value):
        raise MessageError(f"{name} is not a plausible id or name ({len(value)} characters)")
    return value


def _time_field(document: dict[str, Any], name: str, *, required: bool) -> datetime | None:
    value = document.get(name)
    if value is None:
        if required:
            raise MessageError(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise MessageError(f"{name} must be an ISO 8601 time, not {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise MessageError(f"{name} is not an ISO 8601 time: {clip(str(error))}") from error
    if moment.tzinfo is None:
        raise MessageError(f"{name} has no time zone: {clip(value)!r}")
    return moment


class Decision(StrEnum):
    DELETE = "delete"  # the VM is gone and one record is proven its own
    SKIPPED = "skipped"  # nothing to clean: no record found, or the VM exists again
    REFUSED = "refused"  # something looked like the VM's record but isn't provably (reason says what)
    NEEDS_REVIEW = "needs-review"  # more than one record could be the VM's: a person decides
    PARKED = "parked"  # a step could not be finished after every retry: a person looks (poison queue)


class Presence(StrEnum):
    """What ARM says of the deleted incarnation now."""

    GONE = "gone"
    EXISTS = "exists"  # a VM with this resource id and the same (or an unknown) vmId
    REPLACED = "replaced"  # a VM with this resource id but another vmId: the deleted one is gone for good


@dataclass(frozen=True, slots=True)
class Target:
    """One record a cleanup deletes, by id, and whether it is done."""

    kind: str  # "managed" | "entra"
    record_id: str
    name: str | None
    deleted_at: datetime | None = None
    attempted: bool = False  # a delete was sent: a 404 after it means this cleanup's delete went through
    already_gone: bool = False  # gone before this cleanup ever sent its delete (someone else)

    def describe(self) -> str:
        what = "Intune managed device" if self.kind == "managed" else "Entra device"
        return f"delete {what} {self.record_id} ({self.name})"


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    decision: Decision
    reason: str
    targets: tuple[Target, ...] = ()
    findings: tuple[Finding, ...] = ()
    vm: str | None = None  # the VM the records were proven for, when the request didn't name it (an orphan's anchor)


def plan_cleanup(
    request: CleanupRequest,
    *,
    presence: Presence,
    ownership: Ownership | None,
    out_of_scope: str | None,
) -> CleanupPlan:
    """Decide what to delete for one deleted VM; `ownership` is None when no lookup was made."""
    if out_of_scope is not None:
        return CleanupPlan(Decision.REFUSED, f"out of scope: {out_of_scope}")
    if request.opted_out:
        return CleanupPlan(Decision.REFUSED, "the VM carried the opt-out tag: its records are left alone")
    if presence is Presence.EXISTS:
        return CleanupPlan(Decision.SKIPPED, VM_EXISTS)
    if ownership is None or not ownership.candidates:
        if request.found_by is Origin.EVENT and not request.incarnation.computer_name:
            return CleanupPlan(
                Decision.SKIPPED,
                "no record anchored to this VM, and its computer name is unknown (the responder never saw it "
                "running): nothing is matched by its resource name; reconciliation finds silent records later",
            )
        return CleanupPlan(Decision.SKIPPED, "no Intune or Entra record left for this VM: nothing to clean up")
    if ownership.verdict is Verdict.AMBIGUOUS:
        finding = Finding(
            "needs-review",
            Severity.WARNING,
            "ambiguous device match on cleanup",
            ownership.reason,
            DOC,
            phase=FindingSource.CLEANUP,
        )
        return CleanupPlan(Decision.NEEDS_REVIEW, f"none is deleted: {ownership.reason}", findings=(finding,))
    own = ownership.own
    if ownership.verdict is not Verdict.OWN or own is None:
        return CleanupPlan(Decision.REFUSED, f"no record is provably this VM's: {ownership.reason}")
    targets: list[Target] = []
    findings: list[Finding] = [
        Finding(
            "left-alone",
            Severity.INFO,
            "a record that could not be proven this VM's was left alone",
            c.describe(),
            phase=FindingSource.CLEANUP,
        )
        for c in ownership.left_alone
    ]
    if own.managed is not None:
        targets.append(Target("managed", own.managed.id, own.managed.device_name))
    if own.entra is not None:
        if own.entra.is_hybrid:
            findings.append(delete_in_ad(own.entra.object_id, own.entra.display_name))
        else:
            targets.append(Target("entra", own.entra.object_id, own.entra.display_name))
    reason = f"the VM is gone and {ownership.reason}"
    if request.found_by is Origin.EVENT and not request.incarnation.vm_id:
        reason += f"; {UNSEEN}"
    return CleanupPlan(Decision.DELETE, reason, tuple(targets), tuple(findings))


def plan_for_its_os_disk(
    resource_id: str, os_disk_id: str | None, current: VmFacts | None, disk: OsDisk | Gone | None
) -> CleanupPlan | None:
    """Whether a deleted VM's Windows installation lives on (design §5); None: its disk doesn't stop the cleanup.

    A VM deleted with its OS disk kept and re-created by attaching that disk (Microsoft's way to
    change zone or size family) boots the same installation: the same Entra and Intune device,
    although the new VM has another vmId. `os_disk_id`: the disk the deleted VM booted (None:
    never learnt); `current`: the VM ARM has under `resource_id` now (None: none); `disk`: the
    deleted VM's OS disk as ARM reports it now.
    """
    if os_disk_id is not None and current is not None and current.os_disk_id == os_disk_id:
        return CleanupPlan(
            Decision.SKIPPED, _lives_on(os_disk_id, f"the VM now under this resource id (vmId {current.vm_id})")
        )
    if current is not None and (current.os_disk_create_option or "").lower() == "attach":
        # Another disk than the one last seen: the ledger may not have heard of a swap before the deletion.
        known = "is unknown" if os_disk_id is None else f"was last seen as {os_disk_id}, not the one attached now"
        return CleanupPlan(
            Decision.REFUSED,
            f"the VM now under this resource id (vmId {current.vm_id}) was created by attaching an existing "
            f"OS disk, and the disk the deleted VM booted {known}: it may be the same Windows installation, "
            "so its records are left alone",
        )
    if os_disk_id is None:
        return None
    if isinstance(disk, OsDisk) and disk.managed_by and (current is not None or disk.managed_by != resource_id):
        return CleanupPlan(Decision.SKIPPED, _lives_on(os_disk_id, disk.managed_by))
    return None


def came_after(current: VmFacts, record: ManagedDevice) -> bool:
    """The VM now under a record's anchored resource id is a later machine: created from an image (not
    by attaching a disk, which may be the record's installation) after the record was last active."""
    last_active = max((moment for moment in (record.enrolled_at, record.last_sync_at) if moment), default=None)
    return (
        (current.os_disk_create_option or "").lower() == "fromimage"
        and current.time_created is not None
        and last_active is not None
        and current.time_created > last_active
    )


def _lives_on(disk: str, vm: str) -> str:
    return (
        f"the deleted VM's OS disk {disk} boots {vm} now: the same Windows installation, so the same "
        "Entra and Intune device; its records are not orphans"
    )


def delete_in_ad(object_id: str, name: str | None) -> Finding:
    return Finding(
        "delete-in-ad",
        Severity.INFO,
        "The device is hybrid-joined: its Entra object is synced from on-premises AD. Delete the computer "
        "object in on-premises AD; the sync then removes the Entra object.",
        f"Entra device {object_id} ({name})",
        phase=FindingSource.CLEANUP,
    )


@dataclass(frozen=True, slots=True)
class CleanupRecord:
    """One cleanup's decision and progress: written before the first deletion, updated after each.

    Kept in the audit table under a key derived from the deletion, so it is the one
    audit row of every record this cleanup deletes, however often the message comes.
    """

    key: str
    event_id: str
    resource_id: str
    mode: str
    decision: Decision
    reason: str
    started_at: datetime
    targets: tuple[Target, ...] = ()
    findings: tuple[str, ...] = ()
    finished_at: datetime | None = None
    deleted_at: datetime | None = None  # the deletion this cleanup is for (None: written before it was kept)
    etag: str | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def remaining(self) -> tuple[Target, ...]:
        return tuple(target for target in self.targets if target.deleted_at is None)

    @property
    def actions(self) -> tuple[str, ...]:
        """What was done (or, in audit mode, would be), as the audit row lists it."""
        if self.mode == "audit":
            return tuple(f"audit: would {target.describe()}" for target in self.targets)
        return tuple(
            target.describe() + (" (already gone)" if target.already_gone else "")
            for target in self.targets
            if target.deleted_at is not None
        )

    def attempting(self, kinds: set[str]) -> CleanupRecord:
        """Written before the deletes are sent, so a lost answer can't pass for someone else's deletion."""
        return replace(
            self,
            targets=tuple(replace(t, attempted=True) if t.kind in kinds else t for t in self.targets),
        )

    def with_deleted(self, done: dict[str, bool], at: datetime, tried_before: set[str]) -> CleanupRecord:
        """Mark the targets in `done` (kind → whether the delete changed anything) as deleted.

        A 404 for a target whose delete was already sent (`tried_before`) is this cleanup's own
        deletion whose answer was lost; only a 404 on a first try means someone else deleted it.
        """
        return replace(
            self,
            targets=tuple(
                replace(
                    target,
                    deleted_at=at,
                    already_gone=not done[target.kind] and target.kind not in tried_before,
                )
                if target.kind in done and target.deleted_at is None
                else target
                for target in self.targets
            ),
        )

    def finish(self, at: datetime, decision: Decision | None = None, reason: str | None = None) -> CleanupRecord:
        return replace(self, finished_at=at, decision=decision or self.decision, reason=reason or self.reason)
