"""Cleanup of a deleted VM's orphaned Intune and Entra records (SPEC §5), as pure decisions.

The queue message carries what the ledger knew when the VM was deleted; the
worker gathers today's facts (is the VM really gone? which devices match?) and
`plan_cleanup` decides: delete, skip, or refuse, always with a reason. The
guards are the product's promise: never a device that might not be this VM's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from responder.facts import EntraDevice, ManagedDevice
from responder.model import Finding, VmRef

SCHEMA_VERSION = 1
DOC = "https://learn.microsoft.com/mem/intune/remote-actions/devices-wipe#delete-devices-from-the-intune-admin-center"


class MessageError(ValueError):
    """A queue message this worker can't read: it goes to the poison queue at once."""


@dataclass(frozen=True, slots=True)
class CleanupRequest:
    """The queue message: everything the worker needs, since the VM itself is gone."""

    event_id: str
    resource_id: str
    subscription_id: str
    resource_group: str
    vm_name: str
    deleted_at: datetime
    computer_name: str | None = None
    vm_id: str | None = None
    managed_device_id: str | None = None
    entra_device_id: str | None = None
    opted_out: bool = False  # the VM carried the opt-out tag when last read
    found_by: str = "event"  # "event" (a delete event) | "reconcile" (no VM anywhere, record silent)
    schema: int = SCHEMA_VERSION

    @property
    def vm(self) -> VmRef:
        return VmRef(self.subscription_id, self.resource_group, self.vm_name)

    def to_text(self) -> str:
        document: dict[str, Any] = asdict(self)
        document["deleted_at"] = self.deleted_at.isoformat()
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_text(cls, text: str) -> CleanupRequest:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise MessageError(f"not JSON: {error}") from error
        if not isinstance(document, dict):
            raise MessageError("a cleanup message is a JSON object")
        if document.get("schema") != SCHEMA_VERSION:
            raise MessageError(f"unknown schema version {document.get('schema')!r}")
        try:
            document["deleted_at"] = datetime.fromisoformat(document["deleted_at"])
            request = cls(**document)
        except (KeyError, TypeError, ValueError) as error:
            raise MessageError(f"missing or invalid field: {error}") from error
        required: tuple[str, ...] = ("event_id", "subscription_id", "resource_group", "vm_name")
        if request.found_by == "reconcile":
            required = ("event_id", "managed_device_id")  # reconciliation knows the record, not the VM
        elif request.found_by != "event":
            raise MessageError(f"unknown origin {request.found_by!r}")
        for name in required:
            if not isinstance(getattr(request, name), str) or not getattr(request, name):
                raise MessageError(f"{name} must be a non-empty string")
        return request

    @property
    def knows_the_vm(self) -> bool:
        return bool(self.resource_id and self.subscription_id and self.resource_group and self.vm_name)


@dataclass(frozen=True, slots=True)
class DeleteManagedDevice:
    managed_device_id: str
    device_name: str | None

    def describe(self) -> str:
        return f"delete Intune managed device {self.managed_device_id} ({self.device_name})"


@dataclass(frozen=True, slots=True)
class DeleteEntraDevice:
    object_id: str
    display_name: str | None

    def describe(self) -> str:
        return f"delete Entra device {self.object_id} ({self.display_name})"


CleanupAction = DeleteManagedDevice | DeleteEntraDevice


@dataclass(frozen=True, slots=True)
class CleanupPlan:
    decision: str  # "delete" | "skipped" | "refused" | "needs-review"
    reason: str
    actions: tuple[CleanupAction, ...] = ()
    findings: tuple[Finding, ...] = ()


def plan_cleanup(
    request: CleanupRequest,
    *,
    vm_exists: bool,
    candidates: list[ManagedDevice],
    entra: list[EntraDevice],
    out_of_scope: str | None,
) -> CleanupPlan:
    """Decide what to delete for one deleted VM.

    `candidates` are the Intune records that could be the VM's (by the ledger's
    id, or by exact name); `entra` the Entra objects with the chosen record's
    `azureADDeviceId`.
    """
    if out_of_scope is not None:
        return CleanupPlan("refused", f"out of scope: {out_of_scope}")
    if request.opted_out:
        return CleanupPlan("refused", "the VM carried the opt-out tag: its records are left alone")
    if vm_exists:
        return CleanupPlan("skipped", "a VM with this resource id exists again: its records are not orphans")
    vms = [device for device in candidates if device.is_virtual_machine]
    if not candidates:
        return _entra_only(request, entra)
    if not vms:
        models = ", ".join(sorted({device.model or "unknown" for device in candidates}))
        return CleanupPlan("refused", f"the matching record is not a virtual machine (model {models})")
    if len(vms) > 1:
        ids = ", ".join(device.id for device in vms)
        return CleanupPlan(
            "needs-review",
            f"{len(vms)} Intune records could be this VM's ({ids}); none is deleted",
            findings=(Finding("needs-review", "warning", "ambiguous device match on cleanup", ids, DOC),),
        )
    (device,) = vms
    reused = _active_after_deletion(device, request.deleted_at)
    if reused is not None:
        return CleanupPlan("refused", reused)
    actions: list[CleanupAction] = [DeleteManagedDevice(device.id, device.device_name)]
    findings: list[Finding] = []
    if len(entra) > 1:
        findings.append(
            Finding("needs-review", "warning", "several Entra devices share the deviceId; none deleted", "")
        )
    for entra_device in entra[:1] if len(entra) == 1 else []:
        if entra_device.is_hybrid:
            findings.append(_delete_in_ad(entra_device))
        else:
            actions.append(DeleteEntraDevice(entra_device.object_id, entra_device.display_name))
    return CleanupPlan("delete", "the VM is gone and exactly one record is its own", tuple(actions), tuple(findings))


def _entra_only(request: CleanupRequest, entra: list[EntraDevice]) -> CleanupPlan:
    """The Intune record is gone already (an earlier attempt, or an admin): the Entra object may remain."""
    if not entra:
        return CleanupPlan("skipped", "no Intune or Entra record left for this VM: nothing to clean up")
    if len(entra) > 1:
        return CleanupPlan("needs-review", f"{len(entra)} Entra devices share the VM's deviceId; none is deleted")
    (device,) = entra
    if device.last_sign_in_at is not None and device.last_sign_in_at > request.deleted_at:
        return CleanupPlan("refused", "the Entra device signed in after the VM's deletion: the name was reused")
    if device.is_hybrid:
        return CleanupPlan(
            "delete",
            "the Intune record is gone; the hybrid Entra object is on-premises AD's",
            (),
            (_delete_in_ad(device),),
        )
    return CleanupPlan(
        "delete",
        "the Intune record is gone; its cloud-only Entra object remains",
        (DeleteEntraDevice(device.object_id, device.display_name),),
    )


def _active_after_deletion(device: ManagedDevice, deleted_at: datetime) -> str | None:
    """A record that enrolled or checked in after the deletion belongs to a new machine."""
    for what, moment in (("enrolled", device.enrolled_at), ("checked in", device.last_sync_at)):
        if moment is not None and moment > deleted_at:
            return f"the record {what} at {moment.isoformat()}, after the VM's deletion: the name was reused"
    return None


def _delete_in_ad(device: EntraDevice) -> Finding:
    return Finding(
        "delete-in-ad",
        "info",
        "The device is hybrid-joined: its Entra object is synced from on-premises AD. Delete the computer "
        "object in on-premises AD; the sync then removes the Entra object.",
        f"Entra device {device.object_id} ({device.display_name})",
    )
