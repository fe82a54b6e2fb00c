"""Replay recorded Event Grid deliveries through the handler functions.

Each event is routed the way its event subscription filter would route it in
Azure, run through the function's real code, and reported with what the
handler decided. The engine of the local run and of `python -m tools replay`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from responder.decisions.errors import TransientError
from responder.decisions.events import subscription_filter_kind
from responder.decisions.model import EventKind
from responder.stages.pipeline import Handled, collecting


@dataclass(frozen=True, slots=True)
class Route:
    """One Event Grid function: its name, the kinds its subscription admits, its code."""

    name: str
    accepts: frozenset[EventKind]
    call: Callable[[Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One replayed event: where it came from, which function took it, what happened."""

    source: str
    event_id: str | None
    function: str | None
    outcome: str
    resource_id: str | None = None
    reason: str = ""
    details: tuple[str, ...] = ()  # actions taken or planned, findings made

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "event_id": self.event_id,
            "function": self.function,
            "outcome": self.outcome,
            "resource_id": self.resource_id,
            "reason": self.reason,
            "details": list(self.details),
        }


async def replay(
    deliveries: Iterable[tuple[str, bytes]],
    routes: Iterable[Route],
    before_delivery: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[ReplayRow]:
    """Run each delivery (source name, request body) through the matching function.

    `before_delivery` sees each event first: the local run uses it to make the
    simulated ARM show what the event reports, as Azure would by then.
    """
    route_list = tuple(routes)
    rows: list[ReplayRow] = []
    for source, body in deliveries:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            rows.append(ReplayRow(source, None, None, "not-delivered", reason=f"body is not JSON: {error}"))
            continue
        for raw in document if isinstance(document, list) else [document]:
            if before_delivery is not None and isinstance(raw, Mapping):
                before_delivery(raw)
            rows.append(await _replay_one(source, raw, route_list))
    return rows


async def _replay_one(source: str, raw: object, routes: tuple[Route, ...]) -> ReplayRow:
    event_id = raw.get("id") if isinstance(raw, Mapping) else None
    event_id = event_id if isinstance(event_id, str) else None
    kind = subscription_filter_kind(raw)
    route = next((route for route in routes if kind in route.accepts), None)
    if route is None or not isinstance(raw, Mapping):
        return ReplayRow(source, event_id, None, "not-delivered", reason="no event subscription filter admits it")
    with collecting() as decisions:
        try:
            await route.call(raw)
        except TransientError as error:
            return ReplayRow(source, event_id, route.name, "retry", reason=f"transient: {error}")
    return _row(source, event_id, route.name, decisions)


def _row(source: str, event_id: str | None, function: str, decisions: list[Handled]) -> ReplayRow:
    if not decisions:
        return ReplayRow(source, event_id, function, "no-decision", reason="the handler reported nothing")
    last = decisions[-1]
    return ReplayRow(
        source, last.event_id or event_id, function, last.outcome, last.resource_id, last.reason, last.actions
    )
