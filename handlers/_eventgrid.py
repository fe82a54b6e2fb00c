"""Glue shared by the Event Grid triggers: trigger object → wire form → core."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import azure.functions as func

from responder.composition import get_services
from responder.model import EventKind
from responder.pipeline import Handled, handle


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


async def deliver(event: func.EventGridEvent, accepts: Collection[EventKind]) -> Handled:
    """Run one delivery through the core. TransientError and SettingsError escape
    on purpose: the host then lets Event Grid retry and finally dead-letter."""
    return await handle(wire_form(event), accepts, await get_services())
