"""The power-change stage: mark a deallocated VM's device, lift the mark on start.

One VM's events are handled one at a time: the stage takes a short lease on
the VM's ledger row (an ETag-guarded write) before it reads ARM and acts, so a
`deallocate` and a `start` handled at once can't interleave their Graph
writes. An event that finds the lease taken raises TransientError and Event
Grid delivers it again a little later. The lease expires on its own if its
holder dies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from responder.decisions.errors import TransientError
from responder.decisions.events import VmEvent
from responder.decisions.facts import Gone, VmFacts
from responder.decisions.model import (
    DeviceMapping,
    EventKind,
    Finding,
    FindingSource,
    PowerState,
    SuppressionState,
    VmRecord,
    VmRef,
)
from responder.decisions.observe import adopt_incarnation, learn_device
from responder.decisions.ownership import Ownership, Verdict
from responder.decisions.scope import opted_out
from responder.decisions.settings import Mode
from responder.decisions.suppression import DeviceMatch, NoDevice, Plan, plan_suppression, wanted_suppression
from responder.log_lines import failure_fields, vm_fields, write
from responder.ports import PowerPorts
from responder.stages.executor import Refusal, execute
from responder.stages.matching import find_own_device, installation_since, subject_of
from responder.stages.pipeline import Work

LEASE = timedelta(minutes=2)


class VmBusy(TransientError):
    """Another invocation holds this VM's lease; retry later."""


@dataclass(frozen=True, slots=True)
class PowerResult:
    plan: Plan
    done: tuple[str, ...]
    findings: tuple[Finding, ...]
    refusals: tuple[Refusal, ...] = ()  # writes Graph refused: the mark is not where the plan wanted it

    def summary(self) -> str:
        parts = [self.plan.reason, *(f"{f.rule_id}: {f.message}" for f in self.findings)]
        return "; ".join(parts)


async def power_stage(event: VmEvent, record: VmRecord, services: PowerPorts) -> Work:
    """The stage of `on_vm_power_changed`: the device's mark made to agree with ARM."""
    # A device that was active after the VM went down is another machine's.
    quiet_since = event.event_time if event.kind in {EventKind.DEALLOCATED, EventKind.POWERED_OFF} else None
    result = await align_power_mark(event.vm, event.event_time, event.event_id, services, quiet_since=quiet_since)
    marked = result.plan.suppression_after is SuppressionState.SUPPRESSED
    problem = result.refusals[0].problem if result.refusals else None
    return Work(result.summary(), result.done, suppression="marked" if marked else "unmarked", problem=problem)


async def align_power_mark(
    vm: VmRef, at: datetime, actor: str, services: PowerPorts, *, quiet_since: datetime | None = None
) -> PowerResult:
    """Make the device's mark agree with what ARM says now; shared by events and reconciliation.

    `at` is when the power change happened (the mark says since when); `actor` names
    the event or run holding the lease, for the ledger; `quiet_since` is when the VM
    stopped, when known.
    """
    # The lease is the event's (or the run's): a redelivery after a crash takes over its own lease
    # at once instead of waiting for it to expire; another event still waits.
    owner = actor
    record = await _acquire(vm, owner, services)
    try:
        decided = await _decide_and_act(at, record, services, quiet_since)
    except BaseException:
        await _release(vm, owner, services)
        raise
    await _commit(vm, owner, at, decided, services)
    _report(vm, decided.result, "reconcile" if actor == "reconcile" else "event", services.settings.mode)
    return decided.result


def _report(vm: VmRef, result: PowerResult, origin: str, mode: Mode) -> None:
    """A `mark` line when the plan changed the mark (what the workbook's current state reads: in
    enforce mode, accepted only when Graph refused none of it), and an `action-refused` line per
    refused write, naming the Graph app role it needs (the access-denied alert is split by it)."""
    for refusal in result.refusals:
        write(
            logging.WARNING,
            "action-refused",
            action=refusal.action,
            reason=str(refusal.problem),
            mode=mode.value,
            **vm_fields(vm.resource_id),
            **failure_fields(refusal.problem),
        )
    if not result.plan.actions:
        return
    marked = result.plan.suppression_after is SuppressionState.SUPPRESSED
    write(
        logging.INFO,
        "mark",
        suppression="marked" if marked else "unmarked",
        mode=mode.value,
        accepted=mode is Mode.ENFORCE and not result.refusals,
        origin=origin,
        actions=list(result.done),
        **vm_fields(vm.resource_id),
    )


@dataclass(frozen=True, slots=True)
class _Decided:
    result: PowerResult
    device: DeviceMatch | None  # the VM's own device when proven, for the ledger
    facts: VmFacts | None  # what ARM said (None: the VM is gone)
    opted_out: bool
    disk_since: datetime | None = None  # when ARM says the VM's OS disk was created, when it was read


async def _decide_and_act(
    at: datetime, record: VmRecord, services: PowerPorts, quiet_since: datetime | None
) -> _Decided:
    settings = services.settings
    facts = await services.compute.get_vm(record.ref)
    since = None
    if isinstance(facts, Gone):
        power, current, arm = PowerState.DELETED, record, None
    else:
        since = await installation_since(record, facts, services.compute)
        power, current, arm = facts.power_state, adopt_incarnation(record, facts, at, since), facts
    if arm is not None and opted_out(arm.tags, settings):
        name, value = settings.opt_out_tag
        plan = Plan((), (), current.suppression, f"the VM is tagged {name}={value}: left alone")
        return _Decided(PowerResult(plan, (), ()), None, arm, True, since)
    device: DeviceMatch | None = None
    wanted = wanted_suppression(power, settings.suppression)
    if power not in {PowerState.DELETED, PowerState.UNKNOWN} and (
        wanted is not current.suppression and settings.suppression.configured
    ):
        ownership = await find_own_device(
            subject_of(current),
            current.device,
            services.directory,
            quiet_since=quiet_since if wanted is SuppressionState.SUPPRESSED else None,
        )
        device = device_match(ownership)
    plan = plan_suppression(
        power=power,
        marked=current.suppression,
        device=device,
        settings=settings.suppression,
        event_time=at,
    )
    execution = await execute(plan, services.directory, settings.mode)
    result = PowerResult(plan, execution.done, (*plan.findings, *execution.refused), execution.refusals)
    return _Decided(result, device, arm, False, since)


def device_match(ownership: Ownership) -> DeviceMatch:
    """The ownership answer in the terms the suppression plan uses."""
    own = ownership.own
    if ownership.verdict is Verdict.OWN and own is not None:
        return own.device
    return NoDevice(ownership.reason, ambiguous=ownership.verdict is Verdict.AMBIGUOUS)


async def _acquire(vm: VmRef, owner: str, services: PowerPorts) -> VmRecord:
    now = services.clock()

    def take(record: VmRecord) -> tuple[VmRecord, bool]:
        if record.lease_owner not in {None, owner} and record.lease_until and record.lease_until > now:
            return record, False
        return replace(record, lease_owner=owner, lease_until=now + LEASE), True

    record, taken = await services.ledger.update(vm, take)
    if not taken:
        raise VmBusy(f"another event for {vm.resource_id} is being handled; Event Grid will retry")
    return record


async def _release(vm: VmRef, owner: str, services: PowerPorts) -> None:
    def give_back(record: VmRecord) -> tuple[VmRecord, None]:
        if record.lease_owner != owner:
            return record, None
        return replace(record, lease_owner=None, lease_until=None), None

    await services.ledger.update(vm, give_back)


async def _commit(vm: VmRef, owner: str, at: datetime, decided: _Decided, services: PowerPorts) -> None:
    """Record what was decided and done, what ARM said, the device proven, and free the lease."""
    enforced = services.settings.mode is Mode.ENFORCE
    result, device = decided.result, decided.device

    def record_outcome(record: VmRecord) -> tuple[VmRecord, None]:
        updated = record
        if decided.facts is not None:  # what ARM said; a VM that is gone keeps what was known of it
            adopted = adopt_incarnation(record, decided.facts, at, decided.disk_since)
            updated = replace(adopted, opted_out=decided.opted_out)
        updated = replace(updated, findings=_merge_findings(updated.findings, result.findings), last_plan=result.done)
        if enforced and not any(f.rule_id == "action-refused" for f in result.findings):
            after = result.plan.suppression_after
            marked_at = None
            if after is SuppressionState.SUPPRESSED:  # marked now, or since the mark it already had
                already = updated.suppression is SuppressionState.SUPPRESSED
                marked_at = (updated.marked_at or at) if already else at
            updated = replace(updated, suppression=after, marked_at=marked_at)
        if isinstance(device, DeviceMapping):
            updated = learn_device(updated, device)
        if updated.lease_owner == owner:
            updated = replace(updated, lease_owner=None, lease_until=None)
        return updated, None

    await services.ledger.update(vm, record_outcome)


def _merge_findings(old: tuple[Finding, ...], new: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """This stage's findings replace its earlier ones; other stages' findings stay."""
    return (*(f for f in old if f.phase is not FindingSource.POWER), *new)
