"""Event intake: ARM events from an Event Grid system topic → one typed value.

Both delivery schemas (Event Grid and CloudEvents 1.0) and both shapes (one
event or a batch array) are accepted. Nothing here raises on bad input: a
malformed event becomes an `IntakeError` that names the problem, because a
handler that raises makes Event Grid retry the same bad event for 24 hours.

The user claims that ARM puts in `data.claims` are deliberately not carried:
the responder needs no personal data to do its job (design §9, README "Privacy").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from responder.decisions.model import EventKind, VmRef
from responder.decisions.names import (
    MAX_RESOURCE_ID,
    clip,
    event_id_problem,
    event_time_problem,
    resource_group_problem,
    subscription_problem,
    vm_name_problem,
)

WRITE_SUCCESS = "microsoft.resources.resourcewritesuccess"
ACTION_SUCCESS = "microsoft.resources.resourceactionsuccess"
DELETE_SUCCESS = "microsoft.resources.resourcedeletesuccess"

# A VM's extensions are resources of their own: a template or the portal PUTs the VM first and
# each extension (Entra join, AD join, the AVD registration) later, as its own operation, whose
# event names the extension (`.../virtualMachines/{vm}/extensions/{name}`). Its work is the VM's.
EXTENSION_WRITE = "microsoft.compute/virtualmachines/extensions/write"

# design §1, keyed by lower-cased data.operationName. The event type a row needs
# is part of the key: a write operation reported as an action is not a write.
OPERATIONS: Mapping[tuple[str, str], EventKind] = {
    (WRITE_SUCCESS, "microsoft.compute/virtualmachines/write"): EventKind.CREATED,
    (WRITE_SUCCESS, EXTENSION_WRITE): EventKind.CREATED,  # a write of the VM's model: checked as the VM
    (ACTION_SUCCESS, "microsoft.compute/virtualmachines/deallocate/action"): EventKind.DEALLOCATED,
    (ACTION_SUCCESS, "microsoft.compute/virtualmachines/poweroff/action"): EventKind.POWERED_OFF,
    (ACTION_SUCCESS, "microsoft.compute/virtualmachines/start/action"): EventKind.STARTED,
    (ACTION_SUCCESS, "microsoft.compute/virtualmachines/restart/action"): EventKind.STARTED,
    (ACTION_SUCCESS, "microsoft.compute/virtualmachines/redeploy/action"): EventKind.STARTED,
    (DELETE_SUCCESS, "microsoft.compute/virtualmachines/delete"): EventKind.DELETED,
}

# The operations whose resource is a VM's child of this type: the event is about that VM.
CHILD_OF_VM: Mapping[str, str] = {EXTENSION_WRITE: "extensions"}

# The operation names as Azure spells them, for event subscription filters.
OPERATION_NAMES: Mapping[EventKind, tuple[str, ...]] = {
    EventKind.CREATED: (
        "Microsoft.Compute/virtualMachines/write",
        "Microsoft.Compute/virtualMachines/extensions/write",
    ),
    EventKind.DEALLOCATED: ("Microsoft.Compute/virtualMachines/deallocate/action",),
    EventKind.POWERED_OFF: ("Microsoft.Compute/virtualMachines/powerOff/action",),
    EventKind.STARTED: (
        "Microsoft.Compute/virtualMachines/start/action",
        "Microsoft.Compute/virtualMachines/restart/action",
        "Microsoft.Compute/virtualMachines/redeploy/action",
    ),
    EventKind.DELETED: ("Microsoft.Compute/virtualMachines/delete",),
}


class Schema(StrEnum):
    EVENT_GRID = "eventgrid"
    CLOUD_EVENTS = "cloudevents"


@dataclass(frozen=True, slots=True)
class VmEvent:
    """An event about one VM: what `observe` and every stage work on. It always names its VM."""

    kind: EventKind
    event_id: str
    event_time: datetime
    operation_name: str
    vm: VmRef
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClassifiedEvent:
    """A well-formed event and what it means.

    `vm` is set for every kind but `ignored`; an ignored event says why in
    `ignore_reason` so the debug log explains every event it drops.
    """

    kind: EventKind
    event_id: str
    event_time: datetime
    event_type: str
    operation_name: str
    schema: Schema
    vm: VmRef | None = None
    correlation_id: str | None = None
    ignore_reason: str | None = None

    @property
    def vm_event(self) -> VmEvent | None:
        """The event as the stages take it, or None for an ignored one (no VM to work on)."""
        if self.kind is EventKind.IGNORED or self.vm is None:
            return None
        return VmEvent(self.kind, self.event_id, self.event_time, self.operation_name, self.vm, self.correlation_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "event_id": self.event_id,
            "event_time": self.event_time.isoformat(),
            "event_type": self.event_type,
            "operation_name": self.operation_name,
            "schema": self.schema.value,
            "resource_id": self.vm.resource_id if self.vm else None,
            "subscription_id": self.vm.subscription_id if self.vm else None,
            "resource_group": self.vm.resource_group if self.vm else None,
            "vm_name": self.vm.name if self.vm else None,
            "correlation_id": self.correlation_id,
            "ignore_reason": self.ignore_reason,
        }


@dataclass(frozen=True, slots=True)
class IntakeError:
    """A malformed event: logged with its id (when it has one) and dropped."""

    message: str
    event_id: str | None = None
    index: int | None = None  # position in a batch

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "event_id": self.event_id, "index": self.index}


IntakeResult = ClassifiedEvent | IntakeError


def parse_payload(payload: str | bytes, now: datetime | None = None) -> list[IntakeResult]:
    """Parse a request body: a JSON object or an array of them (a batch)."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as error:
        return [IntakeError(f"not JSON: {clip(str(error))}")]
    if isinstance(document, list):
        if not document:
            return [IntakeError("empty batch")]
        return [_at(parse_event(item, now), index) for index, item in enumerate(document)]
    return [parse_event(document, now)]


def parse_event(raw: object, now: datetime | None = None) -> IntakeResult:
    """Parse one event in either schema; never raises. `now` bounds the event's time."""
    if not isinstance(raw, Mapping):
        return IntakeError(f"an event must be a JSON object, got {type(raw).__name__}")
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not event_id:
        return IntakeError("missing or non-string 'id'")
    if (problem := event_id_problem(event_id)) is not None:
        return IntakeError(problem)
    moment = now or datetime.now(UTC)
    if "specversion" in raw:
        return _parse_envelope(
            raw, event_id, moment, schema=Schema.CLOUD_EVENTS, type_key="type", time_key="time", topic_key="source"
        )
    return _parse_envelope(
        raw, event_id, moment, schema=Schema.EVENT_GRID, type_key="eventType", time_key="eventTime", topic_key="topic"
    )


def _parse_envelope(
    raw: Mapping[str, Any],
    event_id: str,
    now: datetime,
    *,
    schema: Schema,
    type_key: str,
    time_key: str,
    topic_key: str,
) -> IntakeResult:
    if schema is Schema.CLOUD_EVENTS and raw.get("specversion") != "1.0":
        return IntakeError(f"unsupported CloudEvents specversion {raw.get('specversion')!r}", event_id)
    event_type = raw.get(type_key)
    if not isinstance(event_type, str) or not event_type:
        return IntakeError(f"missing or non-string '{type_key}'", event_id)
    event_time = _parse_time(raw.get(time_key))
    if event_time is None:
        return IntakeError(f"missing or unparseable '{time_key}': {clip(raw.get(time_key))}", event_id)
    if (problem := event_time_problem(event_time, now)) is not None:
        return IntakeError(problem, event_id)
    for key in ("subject", topic_key):
        if key in raw and not isinstance(raw[key], str):
            return IntakeError(f"'{key}' must be a string, got {type(raw[key]).__name__}", event_id)
    data = raw.get("data")
    if data is not None and not isinstance(data, Mapping):
        return IntakeError(f"'data' must be an object, got {type(data).__name__}", event_id)
    return _classify(
        event_id=event_id,
        event_type=event_type,
        event_time=event_time,
        schema=schema,
        subject=raw.get("subject"),
        topic=raw.get(topic_key),
        data=data or {},
    )


def _classify(
    *,
    event_id: str,
    event_type: str,
    event_time: datetime,
    schema: Schema,
    subject: object,
    topic: object,
    data: Mapping[str, Any],
) -> IntakeResult:
    operation = data.get("operationName")
    operation_name = operation if isinstance(operation, str) else ""
    correlation = data.get("correlationId")

    def classified(kind: EventKind, vm: VmRef | None, ignore_reason: str | None = None) -> ClassifiedEvent:
        return ClassifiedEvent(
            kind=kind,
            event_id=event_id,
            event_time=event_time,
            event_type=event_type,
            operation_name=operation_name,
            schema=schema,
            vm=vm,
            correlation_id=correlation if isinstance(correlation, str) else None,
            ignore_reason=ignore_reason,
        )

    def ignored(reason: str, vm: VmRef | None = None) -> ClassifiedEvent:
        return classified(EventKind.IGNORED, vm, reason)

    if not event_type.lower().startswith("microsoft.resources.resource"):
        return ignored(f"not an Azure Resource Manager event: {event_type}")
    if not data:
        return IntakeError("an Azure Resource Manager event without 'data'", event_id)
    if not operation_name:
        return IntakeError("missing or non-string 'data.operationName'", event_id)

    kind = OPERATIONS.get((event_type.lower(), operation_name.lower()))
    if kind is None:
        if operation_name.lower().startswith("microsoft.compute/virtualmachines/"):
            return ignored(f"{event_type} of {operation_name} needs no action")
        return ignored(f"operation {operation_name} is not a VM lifecycle operation")

    resource_uri = data.get("resourceUri", subject)
    if not isinstance(resource_uri, str) or not resource_uri:
        return IntakeError("missing 'data.resourceUri' and 'subject'", event_id)
    if len(resource_uri) > MAX_RESOURCE_ID:
        return IntakeError(f"resource id of {len(resource_uri)} characters: {clip(resource_uri)}", event_id)
    if isinstance(subject, str) and subject and _normalised(subject) != _normalised(resource_uri):
        return IntakeError(f"subject {clip(subject)} disagrees with data.resourceUri {clip(resource_uri)}", event_id)
    child_type = CHILD_OF_VM.get(operation_name.lower())
    vm = vm_ref_from_resource_id(resource_uri, child_type)
    if vm is None:
        what = f"an {child_type[:-1]} of a virtual machine" if child_type else "a virtual machine"
        return ignored(f"resource is not {what}: {clip(resource_uri)}")
    if (problem := _vm_ref_problem(vm)) is not None:
        return IntakeError(problem, event_id)
    if isinstance(topic, str) and topic and not _same_subscription(topic, vm):
        return IntakeError(f"resource {clip(resource_uri)} is outside the event's topic {clip(topic)}", event_id)

    return classified(kind, vm)


def vm_ref_from_resource_id(resource_id: str, child_type: str | None = None) -> VmRef | None:
    """The VM a resource id names, or None for anything else; with `child_type` (`extensions`),
    the VM whose child of that type the id names.

    Scale-set instances (`virtualMachineScaleSets/x/virtualMachines/0`) and VM
    child resources (extensions, run commands) are not VMs of their own.
    """
    from azure.mgmt.core.tools import parse_resource_id  # on first use: keeps the app's import cheap

    parts = {
        key: value.lower()
        for key, value in parse_resource_id(resource_id.strip().rstrip("/")).items()
        if isinstance(value, str)
    }
    children = parts.get("children", "").strip("/").split("/") if parts.get("children") else []
    expected = 2 if child_type else 0  # the child's type and name
    if (
        parts.get("namespace") != "microsoft.compute"
        or parts.get("type") != "virtualmachines"
        or len(children) != expected
        or (child_type and children[0] != child_type.lower())
        or not parts.get("subscription")
        or not parts.get("resource_group")
        or not parts.get("name")
    ):
        return None
    return VmRef(
        subscription_id=parts["subscription"],
        resource_group=parts["resource_group"],
        name=parts["name"],
    )


def _normalised(resource_id: str) -> str:
    return resource_id.strip().rstrip("/").lower()


def _vm_ref_problem(vm: VmRef) -> str | None:
    """A VM reference that Azure could not have produced: it must never reach a ledger key or a log."""
    return (
        subscription_problem(vm.subscription_id)
        or resource_group_problem(vm.resource_group)
        or (vm_name_problem(vm.name))
    )


def _same_subscription(topic: str, vm: VmRef) -> bool:
    """A subscription system topic only reports its own subscription's resources."""
    segments = [segment.lower() for segment in topic.strip("/").split("/")]
    if len(segments) >= 2 and segments[0] == "subscriptions":
        return segments[1] == vm.subscription_id
    return True  # a custom topic or a test harness: nothing to compare


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else None


def _at(result: IntakeResult, index: int) -> IntakeResult:
    if isinstance(result, IntakeError):
        return IntakeError(result.message, result.event_id, index)
    return result


def subscription_filter_kind(raw: object) -> EventKind | None:
    """The kind whose event subscription would deliver `raw`, as Event Grid decides.

    Mirrors the filters the Bicep template sets (event type plus `data.operationName`,
    both compared case-insensitively, as Event Grid string filters are): the local
    run and `replay` route events the way Azure would, malformed ones included.
    """
    if not isinstance(raw, Mapping):
        return None
    event_type = raw.get("type") if "specversion" in raw else raw.get("eventType")
    data = raw.get("data")
    operation = data.get("operationName") if isinstance(data, Mapping) else None
    if not isinstance(event_type, str) or not isinstance(operation, str):
        return None
    return OPERATIONS.get((event_type.lower(), operation.lower()))
