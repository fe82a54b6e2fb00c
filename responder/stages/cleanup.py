"""The cleanup stage: carry one cleanup message out, resumably (the deletion stage queues it).

The cleanup's row in the audit table is its memory. No row: re-check that the VM is
gone, gather the records, let the ownership decision pick the VM's own (or none), and
write the plan, with the ids to delete, *before* the first deletion. A row that is not
finished: resume from its ids, never search again. Each deletion is recorded as it
happens; after the last, read again to verify. What still fails after the last attempt
is parked (row and poison queue) with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from responder.decisions.audit import AuditEntry
from responder.decisions.cleanup import (
    VM_EXISTS,
    CleanupPlan,
    CleanupRecord,
    CleanupRequest,
    Decision,
    Origin,
    Presence,
    Target,
    came_after,
    plan_cleanup,
    plan_for_its_os_disk,
)
from responder.decisions.errors import TransientError
from responder.decisions.events import vm_ref_from_resource_id
from responder.decisions.facts import EntraDevice, Gone, ManagedDevice, VmFacts
from responder.decisions.model import CleanupStatus, DeviceMapping, Incarnation, PowerState, VmRecord, VmRef
from responder.decisions.observe import SAME_DELETION
from responder.decisions.ownership import Subject, anchors
from responder.decisions.scope import out_of_scope_reason
from responder.decisions.settings import Mode
from responder.log_lines import failure_fields, vm_fields, write
from responder.ports import CleanupPorts
from responder.stages.matching import find_own_device
from responder.stages.queue_worker import work_message

_STATUS_AFTER = {
    Decision.DELETE: CleanupStatus.DONE,
    Decision.SKIPPED: CleanupStatus.DONE,
    Decision.REFUSED: CleanupStatus.REFUSED,
    Decision.NEEDS_REVIEW: CleanupStatus.NEEDS_REVIEW,
    Decision.PARKED: CleanupStatus.NEEDS_REVIEW,
}


async def process_cleanup(body: str | bytes, attempt: int, services: CleanupPorts) -> AuditEntry:
    """Handle one cleanup message; raises TransientError only while retries remain."""
    return await work_message(body, attempt, _Cleanups(services))


class _Cleanups:
    """The cleanup worker's part in `queue_worker.work_message`."""

    def __init__(self, services: CleanupPorts) -> None:
        self.services = services

    def read(self, text: str) -> CleanupRequest:
        return CleanupRequest.from_text(text)

    async def unreadable(self, text: str, reason: str) -> AuditEntry:
        await self.services.cleanup_queue.send_poison(text, f"unreadable cleanup message: {reason}")
        return await _audit(self.services, AuditEntry(None, None, "poisoned", reason, _mode(self.services)))

    async def work(self, request: CleanupRequest, text: str) -> AuditEntry:
        return await _clean_up(request, text, self.services)

    def retrying(self, request: CleanupRequest, reason: str, error: TransientError) -> None:
        entry = AuditEntry(request.event_id, request.resource_id, "retrying", reason, _mode(self.services))
        _write_cleanup(logging.WARNING, entry, error)

    async def park(self, request: CleanupRequest, text: str, reason: str, problem: Exception) -> AuditEntry:
        return await _park(request, text, reason, self.services, problem)


async def _clean_up(request: CleanupRequest, text: str, services: CleanupPorts) -> AuditEntry:
    record = await services.audit.cleanup_record(request.key)
    if record is not None and record.finished and request.incarnation.vm_id and _another_deletion(request, record):
        # Not this incarnation's deletion again but a later VM's under this resource id, which the ledger
        # never saw (its write came late, or found it gone): nothing known of the earlier VM is evidence
        # about it. Its cleanup is that of a VM never read: proven by a physicalIds anchor alone, or not.
        return await _clean_up(_unseen_vm(request), text, services)
    if record is not None and record.finished:
        if record.decision is Decision.PARKED:
            await services.cleanup_queue.send_poison(text, record.reason)  # the park's last step may not have run
        write(logging.INFO, "cleanup-redelivered", decision=record.decision.value, **vm_fields(record.resource_id))
        return _entry(record)
    if record is None:
        plan = await _decide(request, services)
        if plan.decision is Decision.SKIPPED and plan.reason == VM_EXISTS:
            # Not a decision about the VM's records: its real deletion, when it comes, gets its own cleanup.
            await _deletion_did_not_happen(request, services)
            entry = AuditEntry(request.event_id, request.resource_id, plan.decision.value, plan.reason, _mode(services))
            await services.audit.record(entry)
            return _logged_entry(entry)
        record = _record_of(request, plan, services.settings.mode, services.clock())
        if not record.finished and record.targets:
            # Two cleanups (a deletion's and reconciliation's, or two deletions') may prove one record:
            # one deletes it, the other says who does, so every deletion has one audit row.
            holder = await services.audit.claim_records(record.key, tuple(t.record_id for t in record.targets))
            if holder is not None:
                record = replace(
                    record,
                    decision=Decision.SKIPPED,
                    reason=f"another cleanup ({holder}) is deleting these records: {plan.reason}",
                    targets=(),
                )
        if record.finished or not record.targets:
            record = await services.audit.save_cleanup(record.finish(services.clock()))
            await _settle_ledger(request, record, services)
            return _logged(record)
        record = await services.audit.save_cleanup(record)  # the plan and its ids, before the first deletion
        await _publish(request, plan, services)
    elif (revived := await _machine_back(request, record, services)) is not None:
        # Resuming (an earlier attempt failed part-way): the machine must still be gone. Came back since
        # (its disk re-attached, the deletion undone), what is left stays, and a person hears of what was done.
        stopped = f"stopped part-way: {revived}{_progress(record)}"
        record = await services.audit.save_cleanup(record.finish(services.clock(), Decision.NEEDS_REVIEW, stopped))
        return _logged(record)
    return await _carry_out(request, record, services)


async def _machine_back(request: CleanupRequest, record: CleanupRecord, services: CleanupPorts) -> str | None:
    """Why the deleted VM's machine runs again (a VM under its resource id from before the deletion, or
    booting its OS disk or one attached in its place, or elsewhere with a record's name), or None."""
    if request.found_by is Origin.RECONCILE:
        return await _orphan_back(record, services)
    if not request.knows_the_vm:
        return None
    presence, current = await _presence(request, services)
    if presence is Presence.EXISTS:
        return VM_EXISTS
    lives_on = await _installation_lives_on(request.resource_id, request.incarnation.os_disk_id, current, services)
    return lives_on.reason if lives_on is not None else None


async def _installation_lives_on(
    resource_id: str, os_disk_id: str | None, current: VmFacts | None, services: CleanupPorts
) -> CleanupPlan | None:
    """`plan_for_its_os_disk` with the disk as ARM reports it now (read only when it is known)."""
    disk = await services.compute.get_disk(os_disk_id) if os_disk_id else None
    return plan_for_its_os_disk(resource_id, os_disk_id, current, disk)


def _another_deletion(request: CleanupRequest, record: CleanupRecord) -> bool:
    """A deletion well apart from the one the finished cleanup was for, or after that cleanup began."""
    if record.deleted_at is not None and abs(request.deleted_at - record.deleted_at) > SAME_DELETION:
        return True
    return request.deleted_at >= record.started_at


def _unseen_vm(request: CleanupRequest) -> CleanupRequest:
    """The deletion of a later VM under this resource id than the one the request describes: nothing
    known of the earlier one is the later one's, not its installation, device or tag, nor how ARM
    spelt the id (an anchor found by that spelling could be the earlier VM's, tagged to be left alone,
    which this request can no longer tell)."""
    return replace(
        request,
        incarnation=Incarnation(),
        device=DeviceMapping(),
        opted_out=False,
        replaced_by_vm_id=request.incarnation.vm_id,
    )


def _record_of(request: CleanupRequest, plan: CleanupPlan, mode: Mode, now: datetime) -> CleanupRecord:
    record = CleanupRecord(
        key=request.key,
        event_id=request.event_id,
        resource_id=plan.vm or request.resource_id,
        mode=mode.value,
        decision=plan.decision,
        reason=plan.reason,
        started_at=now,
        deleted_at=request.deleted_at,
        targets=plan.targets,
        findings=tuple(f"{finding.rule_id}: {finding.message} ({finding.evidence})" for finding in plan.findings),
    )
    if mode is Mode.AUDIT and record.targets:
        # Audit mode records the plan with every id it would delete, and is then finished.
        return replace(record, finished_at=record.started_at)
    return record


async def _decide(request: CleanupRequest, services: CleanupPorts) -> CleanupPlan:
    """Today's facts (is the VM gone? which records are its own?) → the plan."""
    settings = services.settings
    out_of_scope = out_of_scope_reason(request.vm, settings) if request.knows_the_vm else None
    if out_of_scope is not None or request.opted_out:
        return plan_cleanup(request, presence=Presence.GONE, ownership=None, out_of_scope=out_of_scope)
    if request.found_by is Origin.RECONCILE:
        return await _decide_orphan(request, services)
    if not request.incarnation.vm_id:
        return await _decide_unseen(request, services)
    presence, current = await _presence(request, services)
    ownership = None
    if presence is not Presence.EXISTS:
        lives_on = await _installation_lives_on(request.resource_id, request.incarnation.os_disk_id, current, services)
        if lives_on is not None:
            return lives_on
        moved = await _living_elsewhere(
            services, vm_id=request.incarnation.vm_id, os_disk_id=request.incarnation.os_disk_id, beside=request.vm
        )
        if moved is not None:
            return CleanupPlan(
                Decision.SKIPPED,
                f"the VM (vmId {request.incarnation.vm_id}) or its OS disk lives on in {moved.resource_id} (moved): "
                "its records are that VM's",
            )
        quiet_since = await _last_deletion(request, services)
        ownership = await find_own_device(
            Subject(request.vm, request.incarnation), request.device, services.directory, quiet_since=quiet_since
        )
    return plan_cleanup(request, presence=presence, ownership=ownership, out_of_scope=None)


async def _orphan_back(record: CleanupRecord, services: CleanupPorts) -> str | None:
    """An orphan's cleanup resumed: its anchored VM must still be gone (a VM under that id now created
    by attaching a disk may be it), its OS disk unbooted, and no VM elsewhere may carry a record's name."""
    vm = vm_ref_from_resource_id(record.resource_id)
    if vm is None:
        return None
    current = await services.compute.get_vm(vm)
    if not isinstance(current, Gone) and (current.os_disk_create_option or "").lower() == "attach":
        return f"{vm.resource_id} was created again by attaching an OS disk: it may be the same installation"
    known = await services.ledger.get(vm)
    if isinstance(current, Gone) and known is not None:
        lives_on = await _installation_lives_on(vm.resource_id, known.incarnation.os_disk_id, None, services)
        if lives_on is not None:
            return lives_on.reason
    for name in sorted({target.name.lower() for target in record.targets if target.name}):
        if (elsewhere := await _living_elsewhere(services, name=name, beside=vm)) is not None:
            return f"{elsewhere.resource_id} carries the record's name {name!r} now"
    return None


async def _decide_unseen(request: CleanupRequest, services: CleanupPorts) -> CleanupPlan:
    """A deletion of a VM the responder never read: its vmId, computer name, OS disk and opt-out
    tag are unknown, so only a physicalIds anchor to its resource id can prove a record its own,
    with the same checks as reconciliation's orphan sweep (design §5): no VM under that resource id
    from before the deletion, silent since it, and no watched VM of the record's name (a moved VM
    keeps its old anchor). A name alone proves nothing."""
    presence, current = await _presence(request, services)
    if presence is Presence.EXISTS:
        return plan_cleanup(request, presence=presence, ownership=None, out_of_scope=None)
    if (held := plan_for_its_os_disk(request.resource_id, None, current, None)) is not None:
        return held
    subject = Subject(request.vm, Incarnation(arm_id=request.incarnation.arm_id))
    ownership = await find_own_device(subject, None, services.directory, quiet_since=request.deleted_at)
    own = ownership.own
    name = _name_of(own.managed, own.entra) if own is not None else None
    # A VM under this resource id now was created after the deletion from an image (an attached disk was
    # refused above): a later machine, whose own record carries the name too and is not this one.
    beside = request.vm if current is not None else None
    namesake = await _living_elsewhere(services, name=name, beside=beside) if own is not None and name else None
    if own is not None and namesake is not None:
        return CleanupPlan(
            Decision.REFUSED,
            f"{own.label} is anchored to this VM, but {namesake.resource_id} carries its name {name!r}: "
            "a VM moved elsewhere keeps its old anchor, so the record may be that VM's",
        )
    return plan_cleanup(request, presence=presence, ownership=ownership, out_of_scope=None)


def _name_of(managed: ManagedDevice | None, entra: EntraDevice | None) -> str | None:
    name = (managed.device_name if managed else None) or (entra.display_name if entra else None)
    return name.strip().lower() if name and name.strip() else None


async def _living_elsewhere(
    services: CleanupPorts,
    *,
    vm_id: str | None = None,
    os_disk_id: str | None = None,
    name: str | None = None,
    beside: VmRef | None = None,
) -> VmRef | None:
    """A VM of the watched subscriptions (other than `beside`) that is the gone VM's machine: with its
    vmId (moved: a move keeps the vmId and sends no event the app hears), booting its OS disk (a move
    changes the disk's resource group, not its name), or with this computer name (or, unknown, resource
    name): a record anchored to a gone resource id may be a moved VM's, which keeps its old anchor."""
    disk_name = f"/disks/{os_disk_id.rsplit('/', 1)[-1]}" if os_disk_id else None
    for subscription in sorted(services.settings.reconcile.watched_subscriptions):
        async for vm in services.compute.list_vms(subscription):
            if beside is not None and vm.ref == beside:
                continue
            if (
                (vm_id is not None and vm.vm_id == vm_id)
                or (disk_name is not None and (vm.os_disk_id or "").endswith(disk_name))
                or (name is not None and (vm.computer_name or vm.ref.name).lower() == name)
            ):
                return vm.ref
    return None


async def _deletion_did_not_happen(request: CleanupRequest, services: CleanupPorts) -> None:
    """The VM the deletion was about still exists: the ledger row stops saying it was deleted, so
    its real deletion later is taken for this VM's (and not for an unseen VM's)."""

    def undelete(row: VmRecord) -> tuple[VmRecord, None]:
        if row.deleted_at != request.deleted_at or row.incarnation.vm_id != request.incarnation.vm_id:
            return row, None  # the row moved on since
        return replace(row, deleted_at=None, power_state=PowerState.UNKNOWN), None

    if request.knows_the_vm and request.incarnation.vm_id:
        await services.ledger.update(request.vm, undelete)


async def _last_deletion(request: CleanupRequest, services: CleanupPorts) -> datetime:
    """When the VM really went: a later delete event of the same VM (the first did not go through) counts."""
    row = await services.ledger.get(request.vm)
    if (
        row is not None
        and row.incarnation.vm_id == request.incarnation.vm_id
        and row.deleted_at
        and row.deleted_at > request.deleted_at
    ):
        return row.deleted_at
    return request.deleted_at


async def _presence(request: CleanupRequest, services: CleanupPorts) -> tuple[Presence, VmFacts | None]:
    """What ARM says of the deleted VM now, and the VM it has under that resource id (None: none)."""
    facts = await services.compute.get_vm(request.vm)
    if isinstance(facts, Gone):
        return Presence.GONE, None
    if facts.time_created is not None and facts.time_created <= request.deleted_at:
        return Presence.EXISTS, facts  # created before the deletion: the deletion did not go through
    if request.incarnation.vm_id and facts.vm_id and facts.vm_id != request.incarnation.vm_id:
        return Presence.REPLACED, facts
    if not request.incarnation.vm_id and facts.time_created is not None:
        return Presence.REPLACED, facts  # created after the deletion of a VM never read: a later VM
    if not request.incarnation.vm_id and request.replaced_by_vm_id and facts.vm_id == request.replaced_by_vm_id:
        return Presence.REPLACED, facts
    return Presence.EXISTS, facts


async def _decide_orphan(request: CleanupRequest, services: CleanupPorts) -> CleanupPlan:
    """A record reconciliation found silent: whose was it?

    Only a physicalIds anchor can say, as for the deletion of a VM the responder never
    read (`_decide_unseen`): that VM must be gone (or replaced by a VM created from an
    image since the record was last active: a host rebuilt under its name), in scope,
    not opted out, its OS disk booting no VM, and no VM elsewhere may carry its vmId,
    disk or name. Not anchored: a name alone proves nothing, hybrid included.
    """
    directory = services.directory
    managed = await directory.get_managed_device(str(request.device.managed_device_id))
    if managed is None:
        return plan_cleanup(request, presence=Presence.GONE, ownership=None, out_of_scope=None)
    objects = await directory.find_entra_devices(managed.azure_ad_device_id) if managed.azure_ad_device_id else []
    anchored = sorted({anchor for obj in objects for anchor in anchors(obj)})
    if len(anchored) > 1:
        return CleanupPlan(Decision.NEEDS_REVIEW, f"its Entra objects name several VMs: {', '.join(anchored)}")
    vm = vm_ref_from_resource_id(anchored[0]) if anchored else None
    if vm is None:
        return CleanupPlan(
            Decision.REFUSED,
            "no physicalIds anchor ties this record to a VM (hybrid-joined VMs and old joins carry none), and "
            "a name alone proves nothing: another machine may carry it; a person checks and deletes it",
        )
    if (reason := out_of_scope_reason(vm, services.settings)) is not None:
        return CleanupPlan(Decision.REFUSED, f"out of scope: its VM {vm.resource_id}: {reason}")
    known = await services.ledger.get(vm)
    if known is not None and known.opted_out:
        return CleanupPlan(Decision.REFUSED, f"its VM {vm.resource_id} carried the opt-out tag")
    current = await services.compute.get_vm(vm)
    if not isinstance(current, Gone):
        if not came_after(current, managed):
            return CleanupPlan(Decision.SKIPPED, f"its VM {vm.resource_id} exists: not an orphan")
        known = None  # the row describes the later VM: nothing in it is the record's machine's
    elif known is not None:
        lives_on = await _installation_lives_on(vm.resource_id, known.incarnation.os_disk_id, None, services)
        if lives_on is not None:
            return lives_on
    name = _name_of(managed, None)
    elsewhere = await _living_elsewhere(
        services,
        vm_id=known.incarnation.vm_id if known else None,
        os_disk_id=known.incarnation.os_disk_id if known else None,
        name=name,
        beside=vm,
    )
    if elsewhere is not None:
        return CleanupPlan(
            Decision.SKIPPED,
            f"{elsewhere.resource_id} carries its name {name!r}, or its VM's vmId or OS disk, now: moved, or "
            "re-created from its disk, it is not an orphan",
        )
    subject = Subject(vm, Incarnation(computer_name=managed.device_name))
    # The record itself and its namesakes: the decision needs to see a clone of the same name.
    ownership = await find_own_device(
        subject, DeviceMapping(managed_device_id=managed.id), directory, quiet_since=request.deleted_at
    )
    # The record names the VM its records were proven for: a resumed attempt checks that VM again.
    return replace(
        plan_cleanup(request, presence=Presence.GONE, ownership=ownership, out_of_scope=None), vm=vm.resource_id
    )


async def _carry_out(request: CleanupRequest, record: CleanupRecord, services: CleanupPorts) -> AuditEntry:
    """Delete what is left, as many as the blast-radius cap allows; verify once all are done."""
    directory = services.directory
    remaining = record.remaining
    if remaining:
        cap = services.settings.cleanup.max_deletions_per_hour
        reservation = await services.audit.reserve_deletions(len(remaining), cap)
        batch = remaining[: reservation.granted]
        if batch:
            tried_before = {target.kind for target in batch if target.attempted}
            record = await services.audit.save_cleanup(record.attempting({target.kind for target in batch}))
            changed = await directory.delete_records(_id(batch, "managed"), _id(batch, "entra"))
            record = await services.audit.save_cleanup(record.with_deleted(changed, services.clock(), tried_before))
        if len(batch) < len(remaining):
            return await _defer(request, record, reservation.retry_after_seconds, reservation.warn, services)
    left = await directory.records_exist(_id(record.targets, "managed"), _id(record.targets, "entra"))
    if still_there := [kind for kind, exists in left.items() if exists]:
        raise TransientError(f"{' and '.join(still_there)} record still there after its deletion")
    record = await services.audit.save_cleanup(record.finish(services.clock()))
    await _settle_ledger(request, record, services)
    return _logged(record)


async def _defer(
    request: CleanupRequest, record: CleanupRecord, wait: int, warn: bool, services: CleanupPorts
) -> AuditEntry:
    """Over the rolling-hour cap the message goes back on the queue, delayed: waiting, not dropped."""
    cap = services.settings.cleanup.max_deletions_per_hour
    await services.cleanup_queue.send(request.to_text(), wait)
    reason = (
        f"blast-radius cap of {cap} deletions per hour reached with {len(record.remaining)} record(s) "
        f"left; retrying in {wait} s"
    )
    if warn:
        write(logging.WARNING, "blast-radius", reason=f"{reason} (further cleanups wait in the queue)", maxPerHour=cap)
    entry = AuditEntry(request.event_id, request.resource_id, "deferred", reason, services.settings.mode.value)
    await services.audit.record(entry)
    _write_cleanup(logging.INFO, entry)
    return entry


async def _park(
    request: CleanupRequest, text: str, reason: str, services: CleanupPorts, problem: Exception | None = None
) -> AuditEntry:
    """The last attempt failed: the row says so with what was done, and the message waits for a person."""
    record = await services.audit.cleanup_record(request.key)
    if record is None:
        record = CleanupRecord(
            request.key,
            request.event_id,
            request.resource_id,
            services.settings.mode.value,
            Decision.PARKED,
            "",
            services.clock(),
            deleted_at=request.deleted_at,
        )
    if not record.finished:
        record = await services.audit.save_cleanup(
            record.finish(services.clock(), Decision.PARKED, reason + _progress(record))
        )
    await services.cleanup_queue.send_poison(text, record.reason)
    return _logged(record, problem)


def _progress(record: CleanupRecord) -> str:
    """What a person picking up a parked cleanup must know: what is done, what may be."""
    if not record.targets:
        return ""
    done = len(record.targets) - len(record.remaining)
    unconfirmed = [t.record_id for t in record.remaining if t.attempted]
    sent = f"; deletion sent but never confirmed for {', '.join(unconfirmed)}" if unconfirmed else ""
    return f" ({done} of {len(record.targets)} deleted{sent})"


async def _publish(request: CleanupRequest, plan: CleanupPlan, services: CleanupPorts) -> None:
    """Tell the on-premises team which hybrid computer objects to delete (enforce mode only)."""
    if services.findings_publisher is None or services.settings.mode is not Mode.ENFORCE:
        return
    for finding in plan.findings:
        if finding.rule_id == "delete-in-ad":
            await services.findings_publisher.publish_delete_in_ad(request.vm, finding)


async def _settle_ledger(request: CleanupRequest, record: CleanupRecord, services: CleanupPorts) -> None:
    """The ledger row shows the last cleanup's outcome, for people (nothing decides by it)."""
    if not request.knows_the_vm or record.mode != Mode.ENFORCE.value:
        return

    def settle(row: VmRecord) -> tuple[VmRecord, None]:
        if row.deleted_at != request.deleted_at:
            return row, None  # the row moved on (a later VM under this resource id)
        return replace(row, cleanup_status=_STATUS_AFTER[record.decision]), None

    await services.ledger.update(request.vm, settle)


def _id(targets: tuple[Target, ...], kind: str) -> str | None:
    return next((target.record_id for target in targets if target.kind == kind), None)


def _entry(record: CleanupRecord) -> AuditEntry:
    return AuditEntry(
        record.event_id,
        record.resource_id,
        record.decision.value,
        record.reason,
        record.mode,
        actions=record.actions,
        findings=record.findings,
    )


def _mode(services: CleanupPorts) -> str:
    return services.settings.mode.value


def _logged(record: CleanupRecord, problem: Exception | None = None) -> AuditEntry:
    return _logged_entry(_entry(record), problem)


def _logged_entry(entry: AuditEntry, problem: Exception | None = None) -> AuditEntry:
    level = logging.WARNING if entry.decision in {Decision.PARKED, Decision.NEEDS_REVIEW} else logging.INFO
    _write_cleanup(level, entry, problem)
    return entry


def _write_cleanup(level: int, entry: AuditEntry, problem: Exception | None = None) -> None:
    write(
        level,
        "cleanup",
        decision=str(entry.decision),
        reason=entry.reason,
        actions=list(entry.actions),
        eventId=entry.event_id,
        mode=entry.mode,
        **vm_fields(entry.resource_id),
        **failure_fields(problem),
    )


async def _audit(services: CleanupPorts, entry: AuditEntry) -> AuditEntry:
    await services.audit.record(entry)
    _write_cleanup(logging.WARNING, entry)
    return entry
