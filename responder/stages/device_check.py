"""The device-side prerequisite check: once a new VM's device enrols, read what Intune gives it.

A VM's device enrols minutes after the VM is created, so the create stage queues a
follow-up (`queue_device_check`), delayed. The follow-up looks for the VM's own
Intune record with the ownership rules (`responder.stages.matching`). Not there yet (or
not proven): it is queued again, each wait twice the last (at most two hours),
until the configured number of hours since the first has passed; then the VM is
reported `not-enrolled` (or `device-unproven`, with the candidates). Found: the
policies that reach the device (its groups, all devices, all users) are read from
Intune and the device rules of `responder.decisions.prerequisites` run. Their findings replace
the last device check's in the ledger; the ones not reported before go to the log, the
findings topic and the tag.

Entra fills dynamic device groups in minutes to hours after a device appears, so a
device found with its Entra object is looked at once more, a *second look*, after
`RESPONDER_DEVICE_CHECK_SETTLE_HOURS`, for the profiles its groups have brought since;
reconciliation queues one too when the device's groups changed since its last check
(`look_again_if_groups_changed`: the ledger keeps a fingerprint of them).

Read-only in Graph: nothing here writes to a device, so a redelivered message only
repeats reads (and the report). A check that concluded for this incarnation after
a message was first queued makes that message (a duplicate, or reconciliation's)
a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from http import HTTPStatus

from responder.decisions.errors import RequestRefused, TransientError, UnreadableMessage
from responder.decisions.events import vm_ref_from_resource_id
from responder.decisions.facts import Gone, VmFacts
from responder.decisions.model import Finding, FindingSource, Severity, VmRecord, VmRef, parse_moment
from responder.decisions.observe import adopt_incarnation, learn_device
from responder.decisions.os_identity import identify_os
from responder.decisions.ownership import Ownership, Verdict
from responder.decisions.prerequisites import (
    DOC_VM,
    CheckFacts,
    DeviceFacts,
    check_device,
)
from responder.decisions.scope import opted_out, out_of_scope_reason
from responder.decisions.settings import DeviceCheckSettings
from responder.log_lines import failure_fields, vm_fields, write
from responder.ports import CreationPorts, DeviceCheckPorts
from responder.stages.creation import judge_finished
from responder.stages.matching import find_own_device, installation_since, subject_of
from responder.stages.queue_worker import work_message
from responder.stages.vm_checks import host_pool_of, report_news

MAX_WAIT_SECONDS = 2 * 3600  # the longest wait between two looks
SAME_MOMENT = timedelta(seconds=1)  # two times the ledger holds this close are one (a chain's due time too)


class DeviceCheckMessageError(UnreadableMessage):
    """A message this worker can't read: parked at once, with this reason."""


@dataclass(frozen=True, slots=True)
class DeviceCheckRequest:
    """One look for a VM incarnation's device; `attempt` counts the looks, for the back-off.

    `due_by` is when this chain of looks gives up, and names the chain: the ledger row
    keeps the current chain's, so a look of an older chain (the VM was checked again
    since) is dropped instead of cutting the newer one short. A `second_look` is one look
    at a device found before, once its groups can have settled: it never waits, and a
    check that concluded after it was queued makes it a no-op.
    """

    resource_id: str
    vm_id: str
    first_queued_at: datetime
    due_by: datetime
    attempt: int = 1
    second_look: bool = False

    @property
    def vm(self) -> VmRef:
        vm = vm_ref_from_resource_id(self.resource_id)
        if vm is None:
            raise DeviceCheckMessageError(f"{self.resource_id!r} is not a VM resource id")
        return vm

    def to_text(self) -> str:
        return json.dumps(
            {
                "resourceId": self.resource_id,
                "vmId": self.vm_id,
                "firstQueuedAt": self.first_queued_at.isoformat(),
                "dueBy": self.due_by.isoformat(),
                "attempt": self.attempt,
                **({"secondLook": True} if self.second_look else {}),
            }
        )

    @classmethod
    def from_text(cls, text: str) -> DeviceCheckRequest:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeviceCheckMessageError(f"not JSON ({error.msg})") from error
        if not isinstance(document, dict):
            raise DeviceCheckMessageError("not a JSON object")
        resource_id, vm_id = document.get("resourceId"), document.get("vmId")
        queued_at, attempt = parse_moment(document.get("firstQueuedAt")), document.get("attempt")
        due_by = parse_moment(document.get("dueBy"))
        if not isinstance(resource_id, str) or not isinstance(vm_id, str) or not vm_id:
            raise DeviceCheckMessageError("resourceId and vmId must be strings")
        if queued_at is None or queued_at.tzinfo is None:
            raise DeviceCheckMessageError("firstQueuedAt must be an ISO 8601 time with its offset")
        if due_by is None or due_by.tzinfo is None:
            raise DeviceCheckMessageError("dueBy must be an ISO 8601 time with its offset")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise DeviceCheckMessageError("attempt must be a whole number of at least 1")
        second_look = document.get("secondLook", False)
        if not isinstance(second_look, bool):
            raise DeviceCheckMessageError("secondLook must be true or false")
        request = cls(resource_id, vm_id, queued_at, due_by, attempt, second_look)
        _ = request.vm  # a resource id that names no VM is unreadable now, not at the first look
        return request


class DeviceCheckDecision(StrEnum):
    CHECKED = "checked"  # the device was found and checked: its findings are recorded
    NOT_ENROLLED = "not-enrolled"  # no Intune record appeared in time: a finding says so
    DEVICE_UNPROVEN = "device-unproven"  # records appeared, none proven the VM's: a finding names them
    WAITING = "waiting"  # not there yet: queued again, later
    SKIPPED = "skipped"  # nothing to check (gone, replaced, out of scope, opted out, Linux, done already)
    PARKED = "parked"  # unreadable, refused, or still failing: in the poison queue with its reason
    RETRYING = "retrying"  # a line only: a transient failure, the queue delivers it again


@dataclass(frozen=True, slots=True)
class DeviceCheckOutcome:
    decision: DeviceCheckDecision
    reason: str
    findings: tuple[Finding, ...] = ()


async def queue_device_check(vm: VmRef, vm_id: str, services: CreationPorts) -> datetime:
    """Queue the first look for a new VM's device; returns when the looking stops (for the ledger)."""
    checks = services.settings.device_check
    now = services.clock()
    due_by = now + timedelta(hours=checks.wait_hours)
    request = DeviceCheckRequest(vm.resource_id, vm_id, now, due_by)
    await services.device_check_queue.send(request.to_text(), checks.first_delay_seconds)
    return due_by


def next_wait(request: DeviceCheckRequest, checks: DeviceCheckSettings, now: datetime) -> int | None:
    """Seconds until the next look (doubling, at most two hours, never past the end), or None: time is up."""
    left = (request.due_by - now).total_seconds()
    if left <= 0:
        return None
    doubled = checks.first_delay_seconds << min(request.attempt, 20)
    return max(1, min(doubled, MAX_WAIT_SECONDS, math.ceil(left)))


async def process_device_check(body: str | bytes, attempt: int, services: DeviceCheckPorts) -> DeviceCheckOutcome:
    """Handle one device-check message; raises TransientError only while retries remain."""
    return await work_message(body, attempt, _DeviceChecks(services))


class _DeviceChecks:
    """The device check's part in `queue_worker.work_message`."""

    def __init__(self, services: DeviceCheckPorts) -> None:
        self.services = services

    def read(self, text: str) -> DeviceCheckRequest:
        return DeviceCheckRequest.from_text(text)

    async def unreadable(self, text: str, reason: str) -> DeviceCheckOutcome:
        return await self._park(None, text, f"unreadable device-check message: {reason}", None)

    async def work(self, request: DeviceCheckRequest, text: str) -> DeviceCheckOutcome:
        return _logged(request, await _check(request, self.services))

    def retrying(self, request: DeviceCheckRequest, reason: str, error: TransientError) -> None:
        _logged(request, DeviceCheckOutcome(DeviceCheckDecision.RETRYING, reason), error)

    async def park(self, request: DeviceCheckRequest, text: str, reason: str, problem: Exception) -> DeviceCheckOutcome:
        return await self._park(request, text, reason, problem)

    async def _park(
        self, request: DeviceCheckRequest | None, text: str, reason: str, problem: Exception | None
    ) -> DeviceCheckOutcome:
        await self.services.device_check_queue.send_poison(text, reason)
        return _logged(request, DeviceCheckOutcome(DeviceCheckDecision.PARKED, reason), problem)


async def _check(request: DeviceCheckRequest, services: DeviceCheckPorts) -> DeviceCheckOutcome:
    vm, settings = request.vm, services.settings
    if (reason := out_of_scope_reason(vm, settings)) is not None:
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, reason)
    facts = await services.compute.get_vm(vm)
    if isinstance(facts, Gone):
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, "the VM no longer exists")
    if facts.vm_id and facts.vm_id != request.vm_id:
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, f"a later VM ({facts.vm_id}) holds this resource id")
    if opted_out(facts.tags, settings):
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, "the VM carries the opt-out tag")
    if identify_os(facts).family == "linux":
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, "a Linux VM: the Windows enrolment rules don't apply")
    known = await services.ledger.get(vm)
    now, since = services.clock(), await installation_since(known or VmRecord(vm), facts, services.compute)
    record, _ = await services.ledger.update(
        vm, lambda current: (adopt_incarnation(current, facts, now, since), None), read=known
    )
    # A second look is queued as its check concludes, at that very time (give or take the table's rounding).
    queued = request.first_queued_at + (SAME_MOMENT if request.second_look else timedelta())
    if (checked_at := record.device_checked_at) is not None and checked_at >= queued:
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, f"already checked at {checked_at:%Y-%m-%d %H:%M} UTC")
    due = record.device_check_due
    if due is not None and abs((due - request.due_by).total_seconds()) > 1:
        return DeviceCheckOutcome(DeviceCheckDecision.SKIPPED, "a later check of this VM is under way")
    ownership = await find_own_device(subject_of(record), record.device, services.directory)
    own = ownership.own if ownership.verdict is Verdict.OWN else None
    if request.second_look and (own is None or own.entra is None):  # its groups can't be read: nothing new to say
        return DeviceCheckOutcome(
            DeviceCheckDecision.SKIPPED, "second look: the device and its Entra object aren't proven the VM's now"
        )
    if own is None or own.managed is None:
        return await _not_found_yet(request, ownership, (facts, record), services)
    managed, entra = own.managed, own.entra
    extra: tuple[Finding, ...] = ()
    if entra is None:  # its groups are the Entra object's: without it, group-assigned policies can't be placed
        if (waiting := await _look_again(request, services, "its Entra object isn't proven yet")) is not None:
            return waiting
        extra = (
            Finding(
                "device-groups-unknown",
                Severity.WARNING,
                "No Entra object was proven to be this VM's device: policies assigned to groups were not checked.",
                ownership.reason,
                DOC_VM,
                phase=FindingSource.DEVICE,
            ),
        )
    from responder.decisions.intune_policies import assigned_to_device, filter_properties  # not loaded to queue a check

    groups = await services.directory.device_group_ids(entra.object_id) if entra else frozenset[str]()
    policies = await services.directory.intune_policies()
    # A filter on a property this app doesn't read is reported as not evaluated (README, "Documented limits").
    properties = filter_properties(managed, entra)
    device = DeviceFacts(
        managed.id,
        managed.enrollment_type,
        managed.enrollment_profile_name,
        assigned_to_device(policies, groups, properties),
    )
    checked = CheckFacts(vm=facts, host_pool=await host_pool_of(facts, services), device=device)
    findings = (*extra, *check_device(checked))
    errors = sum(finding.severity is Severity.ERROR for finding in findings)
    await judge_finished(vm, facts, record, True, services)  # it enrolled: whatever the extensions say of a join
    now, later = services.clock(), ""
    if entra is not None and not request.second_look:
        later = await _queue_second_look(request, now, services)
    await _conclude(request, findings, services, ownership, (now, groups if entra else None))
    return DeviceCheckOutcome(
        DeviceCheckDecision.CHECKED,
        f"device {managed.id}: {_policies(len(device.policies))} reach it; "
        f"{len(findings)} finding(s), {errors} error(s){later}",
        findings,
    )


async def _queue_second_look(request: DeviceCheckRequest, now: datetime, services: DeviceCheckPorts) -> str:
    """Queue one more look at the device found now, once its dynamic groups can have settled (queued before
    the check concludes: a crash in between looks twice, never not at all); says when, for the outcome."""
    hours = services.settings.device_check.settle_hours
    if not hours:
        return ""
    due = now + timedelta(hours=hours)
    second = DeviceCheckRequest(request.resource_id, request.vm_id, now, due, second_look=True)
    await services.device_check_queue.send(second.to_text(), hours * 3600)
    return f"; a second look in {hours} h, once its groups have settled"


def groups_fingerprint(groups: frozenset[str], services: DeviceCheckPorts) -> str:
    """What the ledger keeps of a device's Entra groups: enough to see that they changed. The app's own
    suppression group is left out: the power stage puts the device in it and takes it out (design §4)."""
    mark = (services.settings.suppression.group_id or "").lower()
    return hashlib.sha256(json.dumps(sorted(groups - {mark})).encode()).hexdigest()[:16]


async def look_again_if_groups_changed(vm: VmRef, record: VmRecord, services: DeviceCheckPorts) -> bool:
    """Reconciliation's look at the groups of a device the check found (`record`: the VM's ledger row):
    a second look is queued when they changed since that check (a dynamic group filled in or let it go),
    or weren't recorded then. One Graph read; a device whose Entra object is gone is left to the others."""
    if (
        record.device.entra_object_id is None
        or record.incarnation.vm_id is None
        or record.device.learnt_for_vm_id != record.incarnation.vm_id
    ):
        return False
    try:
        groups = await services.directory.device_group_ids(record.device.entra_object_id)
    except RequestRefused as refused:
        if refused.status == HTTPStatus.NOT_FOUND:
            return False
        raise
    if record.device_groups == groups_fingerprint(groups, services):
        return False
    now = services.clock()
    second = DeviceCheckRequest(vm.resource_id, record.incarnation.vm_id, now, now, second_look=True)
    await services.device_check_queue.send(second.to_text(), 0)
    return True


async def _look_again(request: DeviceCheckRequest, services: DeviceCheckPorts, why: str) -> DeviceCheckOutcome | None:
    """The next look of this chain, queued, while its time isn't up; None once it is."""
    wait = next_wait(request, services.settings.device_check, services.clock())
    if wait is None:
        return None
    await services.device_check_queue.send(replace(request, attempt=request.attempt + 1).to_text(), wait)
    return DeviceCheckOutcome(DeviceCheckDecision.WAITING, f"{why}; looking again in {wait} s")


async def _not_found_yet(
    request: DeviceCheckRequest, ownership: Ownership, seen: tuple[VmFacts, VmRecord], services: DeviceCheckPorts
) -> DeviceCheckOutcome:
    checks = services.settings.device_check
    if (waiting := await _look_again(request, services, "no Intune record proven to be this VM's yet")) is not None:
        return waiting
    if ownership.verdict is Verdict.AMBIGUOUS:
        finding = Finding(
            "device-unproven",
            Severity.WARNING,
            f"No Intune record was proven to be this VM's within {checks.wait_hours} h: the device-side rules "
            "were not checked. Left alone; see which records could be its.",
            ownership.reason,
            DOC_VM,
            phase=FindingSource.DEVICE,
        )
    else:
        finding = Finding(
            "not-enrolled",
            Severity.WARNING,
            f"No Intune record of this VM appeared within {checks.wait_hours} h of looking for it: it did not enrol.",
            ownership.reason,
            DOC_VM,
            phase=FindingSource.DEVICE,
        )
    facts, record = seen
    await judge_finished(request.vm, facts, record, False, services)  # the wait is over: a missing join is said now
    await _conclude(request, (finding,), services, None)
    return DeviceCheckOutcome(DeviceCheckDecision(finding.rule_id), finding.message, (finding,))


async def _conclude(
    request: DeviceCheckRequest,
    findings: tuple[Finding, ...],
    services: DeviceCheckPorts,
    ownership: Ownership | None,
    seen: tuple[datetime | None, frozenset[str] | None] = (None, None),
) -> None:
    """Report the findings (log, topic, tag), then record them: a crash before the ledger write repeats the check.
    Findings the last check already reported (a redelivery, a weekly look that finds the same, a second look)
    are recorded, not reported again: only the new ones are."""
    at, groups = seen  # when the check concluded (a second look queued names it), the device's groups it read
    vm, now = request.vm, at or services.clock()
    current = await services.ledger.get(vm)
    known = current.findings if current else ()
    create_time = tuple(finding for finding in known if finding.phase is not FindingSource.DEVICE)
    reported = tuple(finding for finding in known if finding.phase is FindingSource.DEVICE)
    first = current is None or (current.device_checked_at is None and not reported)
    await report_news(
        vm,
        request.vm_id,
        findings,
        reported,
        other_phase=create_time,
        services=services,
        first=first,
        phase=FindingSource.DEVICE,
    )
    own = ownership.own if ownership is not None else None

    def remember(current: VmRecord) -> tuple[VmRecord, None]:
        if current.incarnation.vm_id != request.vm_id:
            return current, None  # a later VM holds the row now
        kept = tuple(finding for finding in current.findings if finding.phase is not FindingSource.DEVICE)
        updated = replace(current, findings=(*kept, *findings), device_checked_at=now, device_check_due=None)
        if own is not None and own.managed is not None:  # proven this VM's: the strongest key for later
            updated = learn_device(updated, own.device)
        if groups is not None:
            updated = replace(updated, device_groups=groups_fingerprint(groups, services))
        return updated, None

    await services.ledger.update(vm, remember, read=current)  # the row read above; its ETag catches a change since


def _policies(count: int) -> str:
    return f"{count} {'policy' if count == 1 else 'policies'}"


def _logged(
    request: DeviceCheckRequest | None, outcome: DeviceCheckOutcome, problem: Exception | None = None
) -> DeviceCheckOutcome:
    level = logging.INFO
    if outcome.decision in {DeviceCheckDecision.PARKED, DeviceCheckDecision.RETRYING}:
        level = logging.WARNING
    write(
        level,
        "device-check",
        decision=outcome.decision,
        reason=outcome.reason,
        findings=len(outcome.findings),
        attempt=request.attempt if request else None,
        vmId=request.vm_id if request else None,
        **vm_fields(request.resource_id if request else None),
        **failure_fields(problem),
    )
    return outcome
