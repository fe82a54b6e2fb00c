"""What an event teaches the ledger, decided without I/O.

Event Grid delivers at least once, out of order and up to 24 h late (design §1).
So a repeated event id changes nothing, and a power event older than the one
the ledger already holds is kept as history but never moves the power state
back: a late `deallocate` must not make a running VM look deallocated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from responder.decisions.events import VmEvent
from responder.decisions.facts import VmFacts
from responder.decisions.joins import join_kind
from responder.decisions.model import DeviceMapping, EventKind, Incarnation, PowerState, SuppressionState, VmRecord

# Enough to recognise Event Grid's retries, which arrive within 24 hours,
# while keeping the ledger row small.
RECENT_EVENT_IDS_KEPT = 32

# A VM is deleted once; the events of one deletion (and their redeliveries) carry times this close
# together, while creating a VM again and deleting it takes longer.
SAME_DELETION = timedelta(minutes=10)

# An OS disk swap seen with no time to date it: no record is younger than this, so none passes for the
# new installation's (blind, never wrong).
SWAPPED_UNSEEN = datetime.max.replace(tzinfo=UTC)

POWER_STATE_AFTER: dict[EventKind, PowerState] = {
    EventKind.DEALLOCATED: PowerState.DEALLOCATED,
    EventKind.POWERED_OFF: PowerState.STOPPED,
    EventKind.STARTED: PowerState.RUNNING,
    EventKind.DELETED: PowerState.DELETED,
}


class Outcome(StrEnum):
    RECORDED = "recorded"  # the newest news about this VM: its work is to be done
    RESUMED = "resumed"  # seen before but its work never finished (a fault): do it now
    DUPLICATE = "duplicate"  # this event's work is done: nothing changes
    STALE = "stale"  # older than what the ledger knows: history only, nothing to do


NEEDS_WORK = frozenset({Outcome.RECORDED, Outcome.RESUMED})


@dataclass(frozen=True, slots=True)
class Observation:
    record: VmRecord
    outcome: Outcome


def observe(record: VmRecord, event: VmEvent) -> Observation:
    """The ledger row after `event`, and whether the event still has work to do.

    An event is *seen* here and *settled* (`settle`) only once its stage has done its
    work, so a redelivery after any fault finds it pending and resumes it, and a
    redelivery after success is a duplicate. A stale event has no work: settled at once.
    """
    if event.event_id in record.recent_event_ids:
        return Observation(record, Outcome.DUPLICATE)
    resuming = event.event_id in record.pending_event_ids
    news = Outcome.RESUMED if resuming else Outcome.RECORDED
    history = replace(
        record,
        pending_event_ids=record.pending_event_ids
        if resuming
        else (*record.pending_event_ids, event.event_id)[-RECENT_EVENT_IDS_KEPT:],
        last_event_at=_latest(record, event),
    )
    if event.kind is EventKind.CREATED:
        return _observe_write(history, event, news)
    if event.kind is EventKind.DELETED:
        return _observe_delete(history, event, news)
    known = record.power_state_at
    if known is not None and (event.event_time < known or (event.event_time == known and not resuming)):
        return Observation(settle(history, event.event_id), Outcome.STALE)
    state = POWER_STATE_AFTER[event.kind]
    return Observation(replace(history, power_state=state, power_state_at=event.event_time), news)


def settle(record: VmRecord, event_id: str) -> VmRecord:
    """The event's work is done (or there is none left): a redelivery is now a duplicate,
    and a lease the event still held after a crash is given back."""
    if event_id in record.recent_event_ids:
        return record
    settled = replace(
        record,
        pending_event_ids=tuple(seen for seen in record.pending_event_ids if seen != event_id),
        recent_event_ids=(*record.recent_event_ids, event_id)[-RECENT_EVENT_IDS_KEPT:],
    )
    if settled.lease_owner == event_id:
        settled = replace(settled, lease_owner=None, lease_until=None)
    return settled


def deletion_ended_this_incarnation(record: VmRecord, event: VmEvent) -> bool:
    """Whether a delete event is about the VM the ledger row describes, not an earlier one:
    a VM created after the deletion can't be the one deleted."""
    created = record.incarnation.created_at
    return created is None or event.event_time >= created


def _observe_delete(history: VmRecord, event: VmEvent, news: Outcome) -> Observation:
    """Every deletion needs its cleanup, even one that arrives late: after a re-created VM's
    events (it ended an earlier VM) or after newer power news (the row's state stays)."""
    known = history.power_state_at
    if not deletion_ended_this_incarnation(history, event) or (known is not None and event.event_time < known):
        return Observation(history, news)
    if history.deleted_at is not None and event.event_time > history.deleted_at:
        if event.event_time - history.deleted_at <= SAME_DELETION:
            # Another event of the same deletion (Event Grid sends some twice, under other ids): its
            # cleanup is the one already queued; queued again, it finds that one's record.
            return Observation(history, news)
        # Deleted again: a VM came and went under this resource id unseen (its write event is late or
        # lost). What the row knows is the earlier VM's, whose cleanup is already on its way.
        history = forget_incarnation(history)
    return Observation(
        replace(
            history,
            power_state=PowerState.DELETED,
            power_state_at=event.event_time,
            deleted_at=event.event_time,
        ),
        news,
    )


def _observe_write(history: VmRecord, event: VmEvent, news: Outcome) -> Observation:
    """A write after the recorded deletion is a new VM under the same resource id: until ARM
    names its vmId, the row knows nothing of it (its deletion, if first, is its own cleanup)."""
    if history.deleted_at is None:
        return Observation(history, news)
    if event.event_time <= history.deleted_at:
        return Observation(settle(history, event.event_id), Outcome.STALE)
    return Observation(
        replace(
            forget_incarnation(history),
            power_state=PowerState.UNKNOWN,
            power_state_at=event.event_time,
            deleted_at=None,
        ),
        news,
    )


def _latest(record: VmRecord, event: VmEvent) -> dict[EventKind, datetime]:
    times = dict(record.last_event_at)
    known = times.get(event.kind)
    if known is None or event.event_time > known:
        times[event.kind] = event.event_time
    return times


def forget_incarnation(record: VmRecord) -> VmRecord:
    """The row once a new VM holds the resource id: nothing known of the old one carries over,
    except what belongs to its Windows installation (`Incarnation.forgotten`; the device proven
    for it and its mark), which `adopt_incarnation` hands to a new VM booting that same disk, or
    drops; and the opt-out tag, until ARM is read: a VM the responder never reads (a deletion of
    it is all it hears) is taken to be tagged as the one before it under that resource id."""
    return replace(
        record,
        incarnation=record.incarnation.forgotten(),
        findings=(),
        check_fingerprint=None,
        device_check_due=None,
        device_checked_at=None,
    )


def forget_machine(record: VmRecord) -> VmRecord:
    """The row once a VM boots another OS disk: the old installation's device and mark are not its."""
    return replace(
        record,
        incarnation=replace(record.incarnation, os_disk_id=None, machine_since=None),
        device=DeviceMapping(),
        device_groups=None,
        suppression=SuppressionState.NONE,
        marked_at=None,
    )


def learn_device(record: VmRecord, device: DeviceMapping) -> VmRecord:
    """The device proven for the VM's incarnation now: the row keeps it, with the vmId it was proven for."""
    return replace(record, device=replace(device, learnt_for_vm_id=record.incarnation.vm_id))


def adopt_incarnation(
    record: VmRecord, facts: VmFacts, noticed_at: datetime | None = None, disk_since: datetime | None = None
) -> VmRecord:
    """What ARM says about the VM now, bound to its vmId.

    A vmId other than the one the row describes is a new VM under the same resource
    id (deleted and created again): what the row knew about the old one's computer
    is forgotten, so it can never be taken for the new one's. Its device goes with its
    OS disk: a new VM that boots the old one's disk (re-created by attaching it) is the
    same Windows installation, so the same Entra and Intune device (design §2); a new VM
    on another disk inherits nothing, and neither does the same VM once it boots another
    OS disk (swapped). `disk_since`: when ARM says the OS disk was created (read when the
    row doesn't know this disk), which dates the installation; without it a swapped-in
    disk is dated `noticed_at`, when the swap was first seen, so no record of the old
    installation passes for the new one's.
    """
    known = record.incarnation
    if facts.vm_id and facts.vm_id != known.vm_id:
        # An earlier VM's installation, when the row knew one (a row that never knew a vmId may still
        # hold what was learnt before ARM was read: that is this VM's).
        earlier = bool(known.vm_id or record.device.learnt_for_vm_id or known.os_disk_id)
        if known.vm_id:
            record = forget_incarnation(record)
        if earlier:
            record = _inherit_machine(record, facts) if boots_same_disk(record, facts) else forget_machine(record)
    elif facts.os_disk_id and known.os_disk_id and facts.os_disk_id != known.os_disk_id:
        # The same VM boots another OS disk (an OS disk swap): another installation, whose device the
        # row doesn't know (a restored copy of this one is the same device, but nothing here proves it).
        swapped = forget_machine(record)
        record = replace(
            swapped,
            incarnation=replace(swapped.incarnation, machine_since=disk_since or noticed_at or SWAPPED_UNSEEN),
        )
    now = record.incarnation
    return replace(
        record,
        incarnation=Incarnation(
            vm_id=facts.vm_id or now.vm_id,
            computer_name=facts.computer_name or now.computer_name,
            os_type=facts.os_type or now.os_type,
            created_at=facts.time_created or now.created_at,
            join_kind=join_kind(facts.extensions) or now.join_kind,
            arm_id=facts.arm_id or now.arm_id,
            os_disk_id=facts.os_disk_id or now.os_disk_id,
            machine_since=now.machine_since or disk_since,  # None: not read yet (the VM's creation stands in)
        ),
    )


def boots_same_disk(record: VmRecord, facts: VmFacts) -> bool:
    """The VM ARM describes boots the OS disk the row's earlier VM booted."""
    return facts.os_disk_id is not None and facts.os_disk_id == record.incarnation.os_disk_id


def _inherit_machine(record: VmRecord, facts: VmFacts) -> VmRecord:
    """The new vmId takes over the device proven for the VM that booted this disk before."""
    if record.device.learnt_for_vm_id is None:
        return record
    return replace(record, device=replace(record.device, learnt_for_vm_id=facts.vm_id))
