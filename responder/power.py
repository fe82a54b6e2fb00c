"""The power-change stage: mark a deallocated VM's device, lift the mark on start.

One VM's events are handled one at a time: the stage takes a short lease on
the VM's ledger row (an ETag-guarded write) before it reads ARM and acts, so a
`deallocate` and a `start` handled at once can't interleave their Graph
writes. An event that finds the lease taken raises TransientError and Event
Grid delivers it again a little later. The lease expires on its own if its
holder dies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from responder.composition import Services
from responder.errors import TransientError
from responder.events import ClassifiedEvent
from responder.executor import execute
from responder.facts import Gone
from responder.matching import resolve_device
from responder.model import Finding, PowerState, VmRecord, VmRef
from responder.scope import opted_out
from responder.settings import Mode
from responder.suppression import DeviceIds, DeviceMatch, Plan, plan_suppression, wanted_suppression

LEASE = timedelta(minutes=2)
SUPPRESSION_RULES = frozenset(
    {
        "suppression-not-configured",
        "needs-review",
        "no-intune-device",
        "no-entra-device",
        "hybrid-attribute-not-writable",
        "action-refused",
    }
)


class VmBusy(TransientError):
    """Another invocation holds this VM's lease; retry later."""


@dataclass(frozen=True, slots=True)
class PowerResult:
    plan: Plan
    done: tuple[str, ...]
    findings: tuple[Finding, ...]

    def summary(self) -> str:
        parts = [self.plan.reason, *(f"{f.rule_id}: {f.message}" for f in self.findings)]
        return "; ".join(parts)


async def respond_to_power_change(event: ClassifiedEvent, services: Services) -> PowerResult:
    if event.vm is None:
        raise ValueError("a power event names a VM")
    return await align_power_mark(event.vm, event.event_time, event.event_id, services)


async def align_power_mark(vm: VmRef, at: datetime, actor: str, services: Services) -> PowerResult:
    """Make the device's mark agree with what ARM says now; shared by events and reconciliation.

    `at` is when the power change happened (the mark says since when); `actor` names
    the event or run holding the lease, for the ledger.
    """
    owner = f"{actor}/{uuid.uuid4().hex[:8]}"
    record = await _acquire(vm, owner, services)
    try:
        result, device, computer_name, is_opted_out = await _decide_and_act(at, record, services)
    except BaseException:
        await _release(vm, owner, services)
        raise
    await _commit(vm, owner, result, device, computer_name=computer_name, is_opted_out=is_opted_out, services=services)
    return result


async def _decide_and_act(
    at: datetime, record: VmRecord, services: Services
) -> tuple[PowerResult, DeviceMatch | None, str | None, bool]:
    settings = services.settings
    facts = await services.compute.get_vm(record.ref)
    power = PowerState.DELETED if isinstance(facts, Gone) else facts.power_state
    computer_name = None if isinstance(facts, Gone) else facts.computer_name
    if not isinstance(facts, Gone) and opted_out(facts.tags, settings):
        name, value = settings.opt_out_tag
        plan = Plan((), (), record.suppression, f"the VM is tagged {name}={value}: left alone")
        return PowerResult(plan, (), ()), None, computer_name, True
    device: DeviceMatch | None = None
    if power not in {PowerState.DELETED, PowerState.UNKNOWN} and (
        wanted_suppression(power, settings.suppression) is not record.suppression and settings.suppression.configured
    ):
        device = await resolve_device(record.ref, computer_name, record, services.directory)
    plan = plan_suppression(
        power=power,
        marked=record.suppression,
        device=device,
        settings=settings.suppression,
        event_time=at,
    )
    execution = await execute(plan, services.directory, settings.mode)
    result = PowerResult(plan, execution.done, (*plan.findings, *execution.refused))
    return result, device, computer_name, False


async def _acquire(vm: VmRef, owner: str, services: Services) -> VmRecord:
    now = datetime.now(UTC)

    def take(record: VmRecord) -> tuple[VmRecord, bool]:
        if record.lease_owner and record.lease_until and record.lease_until > now:
            return record, False
        return replace(record, lease_owner=owner, lease_until=now + LEASE), True

    record, taken = await services.ledger.update(vm, take)
    if not taken:
        raise VmBusy(f"another event for {vm.resource_id} is being handled; Event Grid will retry")
    return record


async def _release(vm: VmRef, owner: str, services: Services) -> None:
    def give_back(record: VmRecord) -> tuple[VmRecord, None]:
        if record.lease_owner != owner:
            return record, None
        return replace(record, lease_owner=None, lease_until=None), None

    await services.ledger.update(vm, give_back)


async def _commit(
    vm: VmRef,
    owner: str,
    result: PowerResult,
    device: DeviceMatch | None,
    *,
    computer_name: str | None,
    is_opted_out: bool,
    services: Services,
) -> None:
    """Record what was decided and done, the device mapping learnt, and free the lease."""
    enforced = services.settings.mode is Mode.ENFORCE

    def record_outcome(record: VmRecord) -> tuple[VmRecord, None]:
        updated = replace(
            record,
            findings=_merge_findings(record.findings, result.findings),
            last_plan=result.done,
            computer_name=computer_name or record.computer_name,
            opted_out=is_opted_out,
        )
        if enforced and not any(f.rule_id == "action-refused" for f in result.findings):
            updated = replace(updated, suppression=result.plan.suppression_after)
        if isinstance(device, DeviceIds):
            updated = replace(
                updated,
                managed_device_id=device.managed_device_id or record.managed_device_id,
                entra_object_id=device.entra_object_id or record.entra_object_id,
                entra_device_id=device.entra_device_id or record.entra_device_id,
            )
        if updated.lease_owner == owner:
            updated = replace(updated, lease_owner=None, lease_until=None)
        return updated, None

    await services.ledger.update(vm, record_outcome)


def _merge_findings(old: tuple[Finding, ...], new: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """This stage's findings replace its earlier ones; other stages' findings stay."""
    return (*(f for f in old if f.rule_id not in SUPPRESSION_RULES), *new)
