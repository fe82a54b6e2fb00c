"""A local Event Grid custom topic: accepts published events, keeps them for inspection.

`POST /api/events?api-version=2018-01-01` with an array of Event Grid schema
events, as `EventGridPublisherClient` sends them; 400 for anything else.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from localdev.sim_http import Request, Response, error

REQUIRED = ("id", "subject", "eventType", "eventTime", "data", "dataVersion")


class EventGridTopicSimulator:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, request: Request) -> Response:
        if (request.method, request.path.rstrip("/")) != ("POST", "/api/events"):
            return error(HTTPStatus.NOT_FOUND, "NotFound", f"no route for {request.method} {request.path}")
        if not isinstance(request.body, list) or not all(
            isinstance(event, dict) and all(key in event for key in REQUIRED) for event in request.body
        ):
            return error(HTTPStatus.BAD_REQUEST, "BadRequest", f"events need {', '.join(REQUIRED)}")
        self.events.extend(request.body)
        return Response(HTTPStatus.OK)
