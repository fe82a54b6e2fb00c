"""Reconciliation (design §6): catch what the events missed, through the same decision code.

One pass walks the VMs of every watched subscription and records each in the
ledger (its vmId, computer name, creation time, OS disk and opt-out tag: an estate
older than the app is known from its first run on, whatever the bound), then
acts on drift (a deallocated VM whose device isn't marked, a running one whose
device still is: `align_power_mark`; a Windows VM never checked at creation: the
create-time rules, which queue its device check when Intune can manage it; one
whose device-side check never concluded: queued again),
then the Intune records of model `Virtual Machine` (no VM of that name anywhere
and silent for `stale_days`: a cleanup queued through the guarded worker). A
run looks at no more than `max_items` and saves where it stopped; the next run
resumes there. Audit mode applies to everything it would change.

A step that fails (a role missing, a service failing) doesn't end the run: it is
counted and written as a `reconcile-failure` line naming the VM (or subscription)
and the step, and the walk goes on with the next VM; the orphan sweep runs only on
a complete list of VMs (a VM missing from a failed listing would look deleted).
The run always ends in its `reconcile` line, which the heartbeat alert waits for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

from responder.decisions.audit import AuditEntry
from responder.decisions.cleanup import CleanupRequest, Origin, came_after
from responder.decisions.errors import RequestRefused, TransientError
from responder.decisions.facts import VmFacts
from responder.decisions.model import DeviceMapping, Incarnation, PowerState, SuppressionState, VmRecord, VmRef
from responder.decisions.names import clip
from responder.decisions.observe import adopt_incarnation
from responder.decisions.prerequisites import DEVICE_NOT_FOUND, cannot_enrol
from responder.decisions.scope import opted_out, out_of_scope_reason
from responder.decisions.suppression import wanted_suppression
from responder.log_lines import failure_fields, vm_fields, write
from responder.ports import Services
from responder.stages.power import align_power_mark

# A VM whose device never showed (or was never proven) is looked for again, weekly: it may have
# enrolled since, and a daily chain of looks for a VM that never will would be noise.
LOOK_AGAIN_FOR_A_DEVICE_AFTER = timedelta(days=7)
# A device marked this long gets a `still-marked` line each run (the marked-too-long alert reads it;
# its threshold is at least this): a week covers every holiday deallocation without a line a day.
REPORT_MARKED_AFTER = timedelta(days=7)
# Failures written line by line in one run; more are counted only. And failures in a row after which
# the run stops: a service that fails every VM is down, and the next run starts over.
MAX_FAILURE_LINES = 20
GIVE_UP_AFTER_FAILURES_IN_A_ROW = 20


THE_RUN = "the run"  # the step a run that gave up names


class _GiveUp(Exception):
    """Every step fails: the run stops here and says so."""


@dataclass
class ReconcileSummary:
    checked: int = 0
    recorded: int = 0  # VMs the ledger learnt (or learnt anew) this run: every VM is read, whatever the bound
    repaired: int = 0  # marks set or lifted (or, in audit mode, planned)
    refused: int = 0  # drift found but left alone, with a finding (ambiguous, no device...)
    queued: int = 0  # orphaned records sent to the guarded cleanup
    create_checks: int = 0  # Windows VMs never checked at creation (older than the app, write lost): checked now
    device_checks_queued: int = 0  # Windows VMs whose device-side check never concluded
    failed: int = 0  # steps a service refused or failed: each has its `reconcile-failure` line (up to a bound)
    first_failure: str | None = None  # what the first of them could not do, and why
    resumed_from: int = 0
    complete: bool = False  # False: the bound was reached (the next run continues) or a step failed


class _Pass:
    """One bounded walk: counts, the cursor it resumed from, and where it is now."""

    def __init__(self, services: Services, cursor: int, now: datetime) -> None:
        self.services = services
        self.settings = services.settings
        self.now = now
        self.cursor = cursor
        self.position = 0
        self.summary = ReconcileSummary(resumed_from=cursor)
        self.vms_named: dict[str, list[VmFacts]] = {}  # computer (and resource) name → the VMs carrying it
        self.listed_every_vm = True  # False: a listing failed, so a VM missing from vms_named may exist
        self.bounded = False  # the bound was reached: the rest of the VMs are only recorded
        self.failures_in_a_row = 0

    async def attempt(self, step: str, resource_id: str | None, work: Awaitable[object]) -> bool:
        """Run one step; a refusal or a transient failure is counted and written, and the walk goes on."""
        try:
            await work
        except (RequestRefused, TransientError) as problem:
            self.failure(step, str(problem), resource_id, problem)
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= GIVE_UP_AFTER_FAILURES_IN_A_ROW:
                raise _GiveUp(f"{self.failures_in_a_row} steps in a row failed, the last: {problem}") from problem
            return False
        self.failures_in_a_row = 0
        return True

    def failure(self, step: str, reason: str, resource_id: str | None = None, problem: Exception | None = None) -> None:
        """Count a step left undone, and write its line (the first MAX_FAILURE_LINES of a run)."""
        self.summary.failed += 1
        if self.summary.first_failure is None:
            self.summary.first_failure = clip(f"{step}: {reason}", 1000)
        if self.summary.failed <= MAX_FAILURE_LINES or step == THE_RUN:  # the stop is always said
            write(
                logging.WARNING,
                "reconcile-failure",
                step=step,
                reason=reason,
                **vm_fields(resource_id),
                **failure_fields(problem),
            )

    def take(self) -> bool | None:
        """Advance one item: None when the bound is reached, False to skip it (done before), True to look."""
        self.position += 1
        if self.position <= self.cursor:
            return False
        if self.summary.checked >= self.settings.reconcile.max_items:
            self.bounded = True
            return None
        self.summary.checked += 1
        return True

    async def vms(self) -> None:
        for subscription in sorted(self.settings.reconcile.watched_subscriptions):
            listing = self._subscription(subscription)
            self.listed_every_vm &= await self.attempt("list VMs", f"/subscriptions/{subscription}", listing)

    async def _subscription(self, subscription: str) -> None:
        async for vm in self.services.compute.list_vms(subscription):
            for name in {name.lower() for name in (vm.ref.name, vm.computer_name) if name}:
                self.vms_named.setdefault(name, []).append(vm)
            record = None
            if not out_of_scope_reason(vm.ref, self.settings):  # every VM: the bound limits actions only
                record = await self._recorded(vm)
            if self.bounded:
                continue
            step = self.take()
            if step and record is not None and not record.opted_out:
                await self.attempt("align the mark", vm.ref.resource_id, self._align(vm.ref, vm.power_state, record))
                await self.attempt("queue the device check", vm.ref.resource_id, self._check_device(vm, record))

    async def _recorded(self, vm: VmFacts) -> VmRecord | None:
        """The VM's ledger row after `_record` (None: the ledger failed, said in a line)."""
        rows: list[VmRecord] = []

        async def record() -> None:
            rows.append(await self._record(vm))

        if not await self.attempt("record the VM", vm.ref.resource_id, record()):
            return None
        self._report_long_mark(vm.ref, rows[0])
        return rows[0]

    def _report_long_mark(self, vm: VmRef, record: VmRecord) -> None:
        """A `still-marked` line for a device marked longer than REPORT_MARKED_AFTER."""
        since = record.marked_at or record.power_state_at  # rows marked before marked_at was kept: the event's
        if record.suppression is not SuppressionState.SUPPRESSED or since is None:
            return
        if since > self.now - REPORT_MARKED_AFTER:
            return
        write(
            logging.INFO,
            "still-marked",
            markedSince=since.isoformat(),
            markedDays=(self.now - since).days,
            **vm_fields(vm.resource_id),
        )

    async def _record(self, vm: VmFacts) -> VmRecord:
        """What ARM says of the VM, in its ledger row (written only when it changes): a deletion of it
        later is then the deletion of a VM the responder read, with its device, disk and opt-out known."""
        tagged = opted_out(vm.tags, self.settings)

        def learn(current: VmRecord) -> tuple[VmRecord, bool]:
            if current.deleted_at is not None:
                return current, False  # a deletion is being handled: its cleanup decides, not this read
            learnt = replace(adopt_incarnation(current, vm, self.now), opted_out=tagged)
            return learnt, learnt != current

        record, changed = await self.services.ledger.update(vm.ref, learn)
        self.summary.recorded += changed
        return record

    async def _align(self, vm: VmRef, power: PowerState, record: VmRecord | None) -> None:
        marked = record.suppression if record else SuppressionState.NONE
        suppression = self.settings.suppression
        if not suppression.configured or wanted_suppression(power, suppression) is marked:
            return
        stopped = record is not None and record.power_state in {PowerState.DEALLOCATED, PowerState.STOPPED}
        quiet_since = record.power_state_at if record is not None and stopped else None
        result = await align_power_mark(vm, self.now, "reconcile", self.services, quiet_since=quiet_since)
        if result.done:
            self.summary.repaired += 1
        elif result.findings:
            self.summary.refused += 1

    async def _check_device(self, vm: VmFacts, record: VmRecord | None) -> None:
        """Queue the device-side check of a Windows VM whose check never found its device (never ran:
        its create event was missed or its follow-ups were lost; or ended without a proven device),
        unless one is on its way; and a second look at a found device whose groups changed since."""
        if (vm.os_type or "").lower() != "windows" or not vm.vm_id:
            return
        if record is not None and record.check_fingerprint is None and record.incarnation.vm_id in {None, vm.vm_id}:
            # Never checked at creation: the create-time rules first, as its write event would have run
            # them. They queue the device check when Intune can manage the VM; a Windows Server or Pro
            # VM is never looked for.
            from responder.stages.creation import check_vm

            await check_vm(vm.ref, self.now, record, self.services)
            self.summary.create_checks += 1
            return
        if record is not None and record.incarnation.vm_id == vm.vm_id:
            if cannot_enrol(record.findings):
                return  # Windows Server, Pro: the create-time check said so; no device will come
            found = not any(finding.rule_id in DEVICE_NOT_FOUND for finding in record.findings)
            checked = record.device_checked_at
            if checked is not None and found:  # one more look if its groups changed since (a dynamic group)
                from responder.stages.device_check import look_again_if_groups_changed

                self.summary.device_checks_queued += await look_again_if_groups_changed(vm.ref, record, self.services)
                return
            if checked is not None and checked > self.now - LOOK_AGAIN_FOR_A_DEVICE_AFTER:
                return
            if record.device_check_due is not None and record.device_check_due > self.now:
                return
        from responder.stages.device_check import queue_device_check

        due = await queue_device_check(vm.ref, vm.vm_id, self.services)

        def expect(current: VmRecord) -> tuple[VmRecord, None]:
            return replace(adopt_incarnation(current, vm, self.now), device_check_due=due), None

        # The row read above is tried first; if aligning the mark changed it since, its ETag says so.
        await self.services.ledger.update(vm.ref, expect, read=record)
        self.summary.device_checks_queued += 1

    async def records(self) -> None:
        """The orphan sweep, on a complete list of VMs only."""
        if not self.listed_every_vm:
            self.failure(
                "sweep orphaned records", "skipped: a VM listing failed, and a VM missing from it would look deleted"
            )
            return
        await self.attempt("sweep orphaned records", None, self._sweep())

    async def _sweep(self) -> None:
        silent_since = self.now - timedelta(days=self.settings.reconcile.stale_days)
        async for device in self.services.directory.windows_virtual_machines():
            step = self.take()
            if step is None:
                return
            name = (device.device_name or "").lower()
            if not step or not name or not all(came_after(vm, device) for vm in self.vms_named.get(name, [])):
                continue  # done before, or a VM of its name that could be its machine exists (a later one can't)
            if device.last_sync_at is None or device.last_sync_at > silent_since:
                continue  # recently active: a machine somewhere still uses it
            request = CleanupRequest(
                event_id=f"reconcile-{device.id}-{self.now:%Y%m%d}",
                resource_id="",
                subscription_id="",
                resource_group="",
                vm_name=name,
                deleted_at=device.last_sync_at,
                incarnation=Incarnation(computer_name=device.device_name),
                device=DeviceMapping(managed_device_id=device.id, entra_device_id=device.azure_ad_device_id),
                found_by=Origin.RECONCILE,
            )
            await self.services.cleanup_queue.send(request.to_text(), 0)
            self.summary.queued += 1


async def reconcile(services: Services, now: datetime | None = None) -> ReconcileSummary:
    walk = _Pass(services, await services.audit.reconcile_cursor(), now or services.clock())
    cursor = 0
    try:
        await walk.vms()
        if not walk.bounded:
            await walk.records()
    except _GiveUp as gave_up:
        walk.failure(THE_RUN, f"stopped: {gave_up}")
        cursor = walk.cursor  # a service is down: the next run does this run's share again
    walk.summary.complete = not walk.bounded and walk.summary.failed == 0
    if walk.bounded:
        cursor = walk.position - 1  # resume after the bound (a failed step is due when the walk comes round)
    return await _stop(services, walk.summary, cursor)


async def _stop(services: Services, summary: ReconcileSummary, cursor: int) -> ReconcileSummary:
    """Report the counts once (the log line first: it is the heartbeat, whatever storage does next),
    then save where the next run starts and the audit row."""
    level = logging.WARNING if summary.failed else logging.INFO
    write(level, "reconcile", **{_camel(name): value for name, value in asdict(summary).items()})
    await services.audit.save_reconcile_cursor(cursor)
    counts = json.dumps(asdict(summary), sort_keys=True)
    await services.audit.record(AuditEntry(None, None, "reconcile", counts, services.settings.mode.value))
    return summary


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
