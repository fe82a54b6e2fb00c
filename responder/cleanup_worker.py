"""Queue a deleted VM's cleanup, and carry one cleanup message out.

Queueing (delete handler): one message per VM deletion, sent with the
configured delay; the ledger's cleanup status keeps a second delete event for
the same deletion from queueing another. Working (queue trigger): re-check
that the VM is gone, re-resolve its records, decide with `plan_cleanup`, act
(enforce) or only record (audit), verify, and write every decision to the
audit table. A message that can't be read, or still fails after the last
attempt, is parked in the poison queue with its reason: nothing is lost.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from responder.audit import AuditEntry
from responder.cleanup import (
    CleanupPlan,
    CleanupRequest,
    DeleteEntraDevice,
    DeleteManagedDevice,
    MessageError,
    plan_cleanup,
)
from responder.composition import Services
from responder.errors import TransientError
from responder.events import ClassifiedEvent
from responder.facts import EntraDevice, Gone, ManagedDevice
from responder.model import CleanupStatus, VmRecord
from responder.scope import out_of_scope_reason
from responder.settings import Mode

# The Functions host gives a message this many deliveries (host.json
# `extensions.queues.maxDequeueCount`); the last one parks it with its reason.
MAX_ATTEMPTS = 5

log = logging.getLogger("responder")

_STATUS_AFTER = {
    "delete": CleanupStatus.DONE,
    "skipped": CleanupStatus.DONE,
    "refused": CleanupStatus.REFUSED,
    "needs-review": CleanupStatus.NEEDS_REVIEW,
}


async def queue_cleanup(event: ClassifiedEvent, record: VmRecord, services: Services) -> str:
    """Queue the cleanup of a just-deleted VM, once per deletion (`record`: the ledger row the event produced)."""
    if event.vm is None:
        raise ValueError("a delete event names a VM")
    if record.deleted_at is None:
        return "nothing known about this deletion"
    if record.cleanup_status is not CleanupStatus.NONE:
        return f"cleanup already {record.cleanup_status.value} for this deletion"
    request = CleanupRequest(
        event_id=event.event_id,
        resource_id=event.vm.resource_id,
        subscription_id=event.vm.subscription_id,
        resource_group=event.vm.resource_group,
        vm_name=event.vm.name,
        deleted_at=record.deleted_at,
        computer_name=record.computer_name,
        vm_id=record.vm_id,
        managed_device_id=record.managed_device_id,
        entra_device_id=record.entra_device_id,
        opted_out=record.opted_out,
    )
    delay = services.settings.cleanup.delay_seconds
    await services.cleanup_queue.send(request.to_text(), delay)

    def mark_queued(current: VmRecord) -> tuple[VmRecord, None]:
        return replace(current, cleanup_status=CleanupStatus.QUEUED), None

    await services.ledger.update(event.vm, mark_queued)
    return f"cleanup queued, visible in {delay} s"


async def process_cleanup(text: str, attempt: int, services: Services) -> AuditEntry:
    """Handle one cleanup message; raises TransientError only while retries remain."""
    mode = services.settings.mode
    try:
        request = CleanupRequest.from_text(text)
    except MessageError as error:
        await services.cleanup_queue.send_poison(text, f"unreadable cleanup message: {error}")
        return await _audit(services, AuditEntry(None, None, "poisoned", str(error), mode.value))
    try:
        return await _clean_up(request, services)
    except TransientError as error:
        if attempt < MAX_ATTEMPTS:
            raise
        reason = f"still failing after {attempt} attempts: {error}"
        await services.cleanup_queue.send_poison(text, reason)
        return await _audit(services, AuditEntry(request.event_id, request.resource_id, "failed", reason, mode.value))


async def _clean_up(request: CleanupRequest, services: Services) -> AuditEntry:
    mode = services.settings.mode
    # Reconciliation found the record by its silence and no VM in any watched subscription.
    vm_exists = request.knows_the_vm and not isinstance(await services.compute.get_vm(request.vm), Gone)
    candidates, entra = ([], []) if vm_exists else await _records(request, services)
    plan = plan_cleanup(
        request,
        vm_exists=vm_exists,
        candidates=candidates,
        entra=entra,
        out_of_scope=out_of_scope_reason(request.vm, services.settings) if request.knows_the_vm else None,
    )
    if mode is Mode.ENFORCE and plan.actions:
        deferred = await _wait_for_the_cap(request, plan, services)
        if deferred is not None:
            return deferred
    done = await _carry_out(plan, services) if mode is Mode.ENFORCE else _audit_only(plan)
    entry = AuditEntry(
        request.event_id,
        request.resource_id,
        plan.decision,
        plan.reason,
        mode.value,
        actions=done,
        findings=tuple(f"{finding.rule_id}: {finding.message}" for finding in plan.findings),
    )
    await _audit(services, entry)
    if mode is Mode.ENFORCE:
        await _record_status(request, plan, services)
        if services.findings_publisher is not None:
            for finding in plan.findings:
                if finding.rule_id == "delete-in-ad":
                    await services.findings_publisher.publish_delete_in_ad(request.vm, finding)
    return entry


async def _wait_for_the_cap(request: CleanupRequest, plan: CleanupPlan, services: Services) -> AuditEntry | None:
    """Over the rolling-hour cap the message goes back on the queue, delayed: waiting, not dropped."""
    cap = services.settings.cleanup.max_deletions_per_hour
    reservation = await services.audit.reserve_deletions(len(plan.actions), cap)
    if reservation.granted:
        return None
    await services.cleanup_queue.send(request.to_text(), reservation.retry_after_seconds)
    reason = f"blast-radius cap of {cap} deletions per hour reached; retrying in {reservation.retry_after_seconds} s"
    if reservation.warn:
        log.warning("responder.blast-radius %s (further cleanups wait in the queue)", reason)
    entry = AuditEntry(request.event_id, request.resource_id, "deferred", reason, services.settings.mode.value)
    await services.audit.record(entry)
    return entry


async def _records(request: CleanupRequest, services: Services) -> tuple[list[ManagedDevice], list[EntraDevice]]:
    """The Intune records that could be the VM's, and the Entra objects of the one chosen (SPEC §2).

    Strongest key first: the ledger's managedDevice id; then an Entra device naming the
    VM's resource id in `physicalIds`; only then an exact name match, confirmed
    through `azureADDeviceId` when the ledger knows the Entra deviceId.
    """
    directory = services.directory
    if request.managed_device_id and request.entra_device_id:
        # Both ids known: one batched read instead of two calls.
        device, entra = await directory.read_records(request.managed_device_id, request.entra_device_id)
        candidates = [device] if device is not None else []
        if device is not None and device.azure_ad_device_id not in {None, request.entra_device_id}:
            entra = await _entra_of(candidates, None, services)  # the record moved to another Entra object
        return candidates, entra
    if request.managed_device_id:
        device = await directory.get_managed_device(request.managed_device_id)
        candidates = [device] if device is not None else []
        return candidates, await _entra_of(candidates, request.entra_device_id, services)
    name = request.computer_name or request.vm_name
    anchored = await directory.find_entra_devices_by_resource_id(request.resource_id)
    if len(anchored) > 1:
        return [], anchored  # ambiguous: plan_cleanup refuses
    by_name = await directory.find_managed_devices_by_name(name)
    known_device_id = anchored[0].device_id if anchored else request.entra_device_id
    if known_device_id:
        by_name = [device for device in by_name if device.azure_ad_device_id == known_device_id]
        if anchored and not by_name:
            return [], anchored  # the Intune record is gone or renamed; the Entra object remains
    return by_name, await _entra_of(by_name, known_device_id, services)


async def _entra_of(candidates: list[ManagedDevice], device_id: str | None, services: Services) -> list[EntraDevice]:
    """The Entra objects of the one VM record among the candidates (physical PCs don't count)."""
    candidates = [device for device in candidates if device.is_virtual_machine]
    if len(candidates) > 1:
        return []
    if len(candidates) == 1 and candidates[0].azure_ad_device_id:
        device_id = candidates[0].azure_ad_device_id
    return await services.directory.find_entra_devices(device_id) if device_id else []


async def _carry_out(plan: CleanupPlan, services: Services) -> tuple[str, ...]:
    """Delete (one batched call), then read again (another): a record still there is a failure to retry."""
    directory = services.directory
    keys = {DeleteManagedDevice: "managed", DeleteEntraDevice: "entra"}
    managed = next((a.managed_device_id for a in plan.actions if isinstance(a, DeleteManagedDevice)), None)
    entra = next((a.object_id for a in plan.actions if isinstance(a, DeleteEntraDevice)), None)
    changed = await directory.delete_records(managed, entra)
    still_there = [key for key, exists in (await directory.records_exist(managed, entra)).items() if exists]
    if still_there:
        raise TransientError(f"{' and '.join(still_there)} record still there after its deletion")
    return tuple(
        action.describe() + ("" if changed.get(keys[type(action)], False) else " (already gone)")
        for action in plan.actions
    )


def _audit_only(plan: CleanupPlan) -> tuple[str, ...]:
    return tuple(f"audit: would {action.describe()}" for action in plan.actions)


async def _record_status(request: CleanupRequest, plan: CleanupPlan, services: Services) -> None:
    if not request.knows_the_vm:
        return

    def settle(record: VmRecord) -> tuple[VmRecord, None]:
        if record.deleted_at != request.deleted_at:
            return record, None  # the ledger row moved on (the name was reused)
        return replace(record, cleanup_status=_STATUS_AFTER[plan.decision]), None

    await services.ledger.update(request.vm, settle)


async def _audit(services: Services, entry: AuditEntry) -> AuditEntry:
    await services.audit.record(entry)
    level = logging.WARNING if entry.decision in {"poisoned", "failed", "needs-review"} else logging.INFO
    log.log(
        level,
        "responder.cleanup decision=%s resource=%s reason=%s actions=%s",
        entry.decision,
        entry.resource_id,
        entry.reason,
        list(entry.actions),
    )
    return entry
