"""The path every delivered event takes, shared by all Event Grid handlers.

parse → (drop malformed) → (skip ignored, foreign and out-of-scope) → record in
the ledger → the trigger's stage (prerequisite check, suppression, cleanup) →
settle. Malformed input is logged with its id and dropped; a TransientError
escapes so the host lets Event Grid retry (design §1).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from responder.decisions.errors import RequestRefused, TransientError
from responder.decisions.events import ClassifiedEvent, IntakeError, VmEvent, parse_event
from responder.decisions.model import EventKind, VmRecord
from responder.decisions.names import MAX_EVENT_ID, MAX_RESOURCE_ID, clip
from responder.decisions.observe import NEEDS_WORK, Outcome, observe, settle
from responder.decisions.scope import out_of_scope_reason
from responder.log_lines import failure_fields, vm_fields, write
from responder.ports import Services

MAX_REASON = 4000  # a reason names every candidate record; more than this is never useful in one line

_collector: ContextVar[list[Handled] | None] = ContextVar("responder_handled", default=None)


class EventOutcome(StrEnum):
    """What became of a delivery: every delivered event ends in exactly one (design §1)."""

    RECORDED = "recorded"  # its work is done
    RESUMED = "resumed"  # a redelivery finished the work a fault had interrupted
    DUPLICATE = "duplicate"  # its work was done before: nothing changed
    STALE = "stale"  # older than what the ledger knows: history only
    IGNORED = "ignored"  # not a VM event this app acts on
    MISROUTED = "misrouted"  # the subscription filter let through what this function doesn't handle
    OUT_OF_SCOPE = "out-of-scope"  # outside the allow-lists
    MALFORMED = "malformed"  # unreadable: logged with its id and dropped
    FAILED = "failed"  # a service refused (a role, a bad request): logged once, not retried
    RETRYING = "retrying"  # a line only: a service failed transiently and Event Grid redelivers


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of one delivered event: one structured log line, one report row."""

    outcome: EventOutcome
    event_id: str | None
    kind: EventKind | None = None
    resource_id: str | None = None
    reason: str = ""
    actions: tuple[str, ...] = ()  # done (enforce) or only recorded (audit)
    correlation_id: str | None = None  # the ARM operation's, to join the Activity Log
    suppression: str | None = None  # marked | unmarked: where a power event left the device's mark
    problem: Exception | None = None  # what failed (transient, access-denied, refused: `log_lines.failure_fields`)

    def log_fields(self) -> dict[str, Any]:
        """The `event` log line's fields (README, "Log lines are JSON"), bounded like `to_json`."""
        row = self.to_json()
        return {
            "outcome": self.outcome,
            "eventId": row["event_id"],
            "eventKind": row["kind"],
            **vm_fields(row["resource_id"]),
            "reason": row["reason"],
            "actions": row["actions"],
            "correlationId": row["correlation_id"],
            "suppression": self.suppression,
            **failure_fields(self.problem),
        }

    def to_json(self) -> dict[str, Any]:
        """Bounded: whatever came from outside is clipped before it reaches a log line."""
        return {
            "outcome": self.outcome,
            "event_id": clip(self.event_id, MAX_EVENT_ID) if self.event_id else None,
            "kind": self.kind.value if self.kind else None,
            "resource_id": clip(self.resource_id, MAX_RESOURCE_ID) if self.resource_id else None,
            "reason": clip(self.reason, MAX_REASON),
            "actions": [clip(action, MAX_REASON) for action in self.actions],
            "correlation_id": clip(self.correlation_id, MAX_EVENT_ID) if self.correlation_id else None,
        }


@dataclass(frozen=True, slots=True)
class Work:
    """What a stage did with one event: the summary and actions of its `event` line."""

    summary: str
    actions: tuple[str, ...] = ()  # done (enforce) or only recorded (audit)
    suppression: str | None = None  # marked | unmarked: where a power event left the device's mark
    problem: RequestRefused | None = None  # a write Graph refused: the event is done, but not all of it


# A stage: the work of one VM event, given the ledger row the event produced (`responder.stages.power`,
# `responder.stages.creation`, `responder.stages.cleanup`). Each trigger names its own.
Stage = Callable[[VmEvent, VmRecord, Services], Awaitable[Work]]


async def handle(raw: Mapping[str, Any], accepts: Collection[EventKind], stage: Stage, services: Services) -> Handled:
    """Handle one delivered event addressed to a function that accepts `accepts` and does `stage`:
    one outcome, one log line (with the ARM operation's correlation id, to join the Activity Log)."""
    parsed = parse_event(raw, services.clock())
    if isinstance(parsed, IntakeError):
        return _logged(Handled(EventOutcome.MALFORMED, parsed.event_id, reason=parsed.message))
    try:
        handled = await _handle_classified(parsed, accepts, stage, services)
    except TransientError as problem:  # Event Grid redelivers; the line says which service and why
        resource_id = parsed.vm.resource_id if parsed.vm else None
        retrying = Handled(
            EventOutcome.RETRYING,
            parsed.event_id,
            parsed.kind,
            resource_id,
            str(problem),  # clipped by log_fields, like every reason
            correlation_id=parsed.correlation_id,
            problem=problem,
        )
        write(
            LEVELS[EventOutcome.RETRYING], "event", **retrying.log_fields()
        )  # a line, not an outcome: the event isn't done
        raise
    return _logged(replace(handled, correlation_id=parsed.correlation_id))


async def _handle_classified(
    parsed: ClassifiedEvent, accepts: Collection[EventKind], stage: Stage, services: Services
) -> Handled:
    event = parsed.vm_event
    if event is None:
        reason = parsed.ignore_reason or "not a VM event"
        ignored_id = parsed.vm.resource_id if parsed.vm else None
        return Handled(EventOutcome.IGNORED, parsed.event_id, parsed.kind, ignored_id, reason)
    resource_id = event.vm.resource_id
    if event.kind not in accepts:
        # The event subscription's filter should have kept it away: say so loudly.
        reason = f"{event.operation_name} is not handled by this function; check the event subscription filter"
        return Handled(EventOutcome.MISROUTED, event.event_id, event.kind, resource_id, reason)
    scope_reason = out_of_scope_reason(event.vm, services.settings)
    if scope_reason is not None:
        return Handled(EventOutcome.OUT_OF_SCOPE, event.event_id, event.kind, resource_id, scope_reason)
    try:
        return await _record_and_work(event, stage, services)
    except RequestRefused as refused:
        # Retrying won't change a refusal (a missing role, a bad request): say so once, don't retry for a day.
        reason = f"{refused}; the event is left unfinished, reconciliation repairs the VM once the cause is fixed"
        return Handled(EventOutcome.FAILED, event.event_id, event.kind, resource_id, reason, problem=refused)


async def _record_and_work(event: VmEvent, stage: Stage, services: Services) -> Handled:
    """Seen (the ledger row), the work, then settled: a redelivery before the settle resumes."""
    vm, resource_id = event.vm, event.vm.resource_id

    def decide(record: VmRecord) -> tuple[VmRecord, Outcome]:
        observation = observe(record, event)
        return observation.record, observation.outcome

    record, outcome = await services.ledger.update(vm, decide)
    if outcome not in NEEDS_WORK:
        reason = {
            Outcome.DUPLICATE: "event id already handled",
            Outcome.STALE: "older than what the ledger already knows; history only",
        }[outcome]
        return Handled(EventOutcome(outcome.value), event.event_id, event.kind, resource_id, reason)
    work = await stage(event, record, services)  # it only counts as handled once this returns
    await services.ledger.update(vm, lambda current: (settle(current, event.event_id), None))
    return Handled(
        EventOutcome(outcome.value),
        event.event_id,
        event.kind,
        resource_id,
        work.summary,
        work.actions,
        suppression=work.suppression,
        problem=work.problem,
    )


@contextlib.contextmanager
def collecting() -> Iterator[list[Handled]]:
    """Collect what the handlers called in this context decided (replay reports).

    The Functions host discards a trigger's return value, so a report that runs
    the real handler functions gets their outcomes here, not by parsing logs.
    """
    sink: list[Handled] = []
    token = _collector.set(sink)
    try:
        yield sink
    finally:
        _collector.reset(token)


# How loud each outcome is: what a person must act on is a warning or an error.
LEVELS = {
    EventOutcome.MALFORMED: logging.ERROR,
    EventOutcome.FAILED: logging.ERROR,
    EventOutcome.MISROUTED: logging.WARNING,
    EventOutcome.RETRYING: logging.WARNING,
    EventOutcome.IGNORED: logging.DEBUG,
}


def _logged(handled: Handled) -> Handled:
    level = LEVELS.get(handled.outcome, logging.WARNING if handled.problem else logging.INFO)
    write(level, "event", **handled.log_fields())
    if (sink := _collector.get()) is not None:
        sink.append(handled)
    return handled
