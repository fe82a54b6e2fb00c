"""What an event teaches the ledger, decided without I/O.

Event Grid delivers at least once, out of order and up to 24 h late (SPEC §1).
So a repeated event id changes nothing, and a power event older than the one
the ledger already holds is kept as history but never moves the power state
back: a late `deallocate` must not make a running VM look deallocated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from responder.events import ClassifiedEvent
from responder.model import EventKind, PowerState, VmRecord

# Enough to recognise Event Grid's retries, which arrive within 24 hours,
# while keeping the ledger row small.
RECENT_EVENT_IDS_KEPT = 32

POWER_STATE_AFTER: dict[EventKind, PowerState] = {
    EventKind.DEALLOCATED: PowerState.DEALLOCATED,
    EventKind.POWERED_OFF: PowerState.STOPPED,
    EventKind.STARTED: PowerState.RUNNING,
    EventKind.DELETED: PowerState.DELETED,
}


class Outcome(StrEnum):
    RECORDED = "recorded"  # the newest news about this VM
    DUPLICATE = "duplicate"  # this event id was seen before: nothing changes
    STALE = "stale"  # older than what the ledger knows: history only


@dataclass(frozen=True, slots=True)
class Observation:
    record: VmRecord
    outcome: Outcome


def observe(record: VmRecord, event: ClassifiedEvent) -> Observation:
    """The ledger row after `event`, and whether the event was news."""
    if event.kind is EventKind.IGNORED:
        raise ValueError("ignored events are not recorded in the ledger")
    if event.event_id in record.recent_event_ids:
        return Observation(record, Outcome.DUPLICATE)

    history = replace(
        record,
        recent_event_ids=(*record.recent_event_ids, event.event_id)[-RECENT_EVENT_IDS_KEPT:],
        last_event_at=_latest(record, event),
    )
    if event.kind is EventKind.CREATED:
        return _observe_write(history, event)

    if record.power_state_at is not None and event.event_time <= record.power_state_at:
        return Observation(history, Outcome.STALE)
    state = POWER_STATE_AFTER[event.kind]
    return Observation(
        replace(
            history,
            power_state=state,
            power_state_at=event.event_time,
            deleted_at=event.event_time if state is PowerState.DELETED else history.deleted_at,
        ),
        Outcome.RECORDED,
    )


def _observe_write(history: VmRecord, event: ClassifiedEvent) -> Observation:
    """A write after the recorded deletion means the name was reused for a new VM."""
    if history.deleted_at is None:
        return Observation(history, Outcome.RECORDED)
    if event.event_time <= history.deleted_at:
        return Observation(history, Outcome.STALE)
    return Observation(
        replace(
            history,
            power_state=PowerState.UNKNOWN,
            power_state_at=event.event_time,
            deleted_at=None,
        ),
        Outcome.RECORDED,
    )


def _latest(record: VmRecord, event: ClassifiedEvent) -> dict[EventKind, datetime]:
    times = dict(record.last_event_at)
    known = times.get(event.kind)
    if known is None or event.event_time > known:
        times[event.kind] = event.event_time
    return times
