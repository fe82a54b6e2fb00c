"""Glue shared by the Event Grid triggers: trigger object → wire form → core."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import azure.functions as func

from responder.decisions.model import EventKind, parse_moment

if TYPE_CHECKING:
    from responder.stages.pipeline import Handled, Stage


def wire_form(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The event as it was on the wire, whichever schema the subscription delivers.

    The worker hands the function an EventGridEvent or a CloudEvent depending on
    the body; the core parses the JSON form of both, so the CLI and the local run
    take the same path as Azure.
    """
    if isinstance(event, func.CloudEvent):
        return {
            "specversion": event.specversion,
            "id": event.id,
            "source": event.source,
            "type": event.type,
            "time": event.time.isoformat() if event.time else None,
            "subject": event.subject,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "eventTime": event.event_time.isoformat() if event.event_time else None,
        "data": event.get_json(),
        "dataVersion": event.data_version,
    }


def trigger_input(raw: Mapping[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    """The trigger object the Python worker builds from one delivered event.

    The inverse of `wire_form`, for running the real handler functions without
    the host (local run, replay, tests). Fields are taken as they are, so a
    malformed event reaches the handler malformed, as it would in Azure.
    """
    if "specversion" in raw:
        return func.CloudEvent(
            id=_field(raw, "id"),
            source=_field(raw, "source"),
            specversion=_field(raw, "specversion"),
            type=_field(raw, "type"),
            datacontenttype=_field(raw, "datacontenttype"),
            dataschema=_field(raw, "dataschema"),
            subject=_field(raw, "subject"),
            time=parse_moment(_field(raw, "time")),
            data=_field(raw, "data"),
        )
    return func.EventGridEvent(
        id=_field(raw, "id"),
        data=_field(raw, "data"),
        topic=_field(raw, "topic"),
        subject=_field(raw, "subject"),
        event_type=_field(raw, "eventType"),
        event_time=parse_moment(_field(raw, "eventTime")),
        data_version=_field(raw, "dataVersion"),
    )


def _field(raw: Mapping[str, Any], key: str) -> Any:
    """A field as it is (None when absent): the worker's types are not checked here."""
    return raw.get(key)


async def deliver(event: func.EventGridEvent, accepts: Collection[EventKind], stage: Stage) -> Handled:
    """Run one delivery through the core and the trigger's `stage`. TransientError and SettingsError
    escape on purpose: the host then lets Event Grid retry and finally dead-letter."""
    # The core loads on the first event, not when the host indexes the app (cold start).
    from responder.composition import get_services
    from responder.stages.pipeline import handle

    return await handle(wire_form(event), accepts, stage, await get_services())
