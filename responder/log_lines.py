"""The responder's log lines: one JSON object each, with stable field names.

The workbook and the alerts (`infra/monitoring/`) read these fields, so they are a
contract: documented in the README ("Log lines are JSON"), checked by
tests/test_monitoring.py against the queries, and versioned by `schema`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from responder.errors import AccessDenied, RequestRefused, TransientError
from responder.events import vm_ref_from_resource_id
from responder.names import clip

LOG = "intune-vm-responder"
SCHEMA = 1

log = logging.getLogger("responder")


MAX_TEXT = 4000  # a reason names every candidate record; more is never useful, and the line must stay JSON


def write(level: int, kind: str, **fields: Any) -> None:
    """One line: `{"log": "intune-vm-responder", "schema": 1, "kind": kind, ...fields}`. Every string
    is clipped, so no line is cut short by the telemetry pipeline (a cut line is no longer JSON)."""
    bounded = {name: _bounded(value) for name, value in fields.items()}
    log.log(level, "%s", json.dumps({"log": LOG, "schema": SCHEMA, "kind": kind, **bounded}, default=str))


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return clip(value, MAX_TEXT)
    if isinstance(value, (list, tuple)):
        return [_bounded(item) for item in value]
    return value


def vm_fields(resource_id: str | None) -> dict[str, str | None]:
    """The VM's resource id and its parts, for filtering by subscription, group and name."""
    ref = vm_ref_from_resource_id(resource_id) if resource_id else None
    return {
        "resourceId": resource_id,
        "subscriptionId": ref.subscription_id if ref else None,
        "resourceGroup": ref.resource_group if ref else None,
        "vmName": ref.name if ref else None,
    }


def failure_of(problem: BaseException | None) -> tuple[str | None, str | None]:
    """What kind of failure, and of which service: what the throttling and access alerts read."""
    if isinstance(problem, AccessDenied):
        return "access-denied", problem.service
    if isinstance(problem, RequestRefused):
        return "refused", problem.service
    if isinstance(problem, TransientError):
        return "transient", problem.service
    return None, None


def failure_fields(problem: BaseException | None) -> dict[str, str | int | None]:
    """`failure` and `service`, with the `role` a refused identity needs (the access-denied alert is
    split by it) and the HTTP `status` (429: throttled, what the throttling alert counts)."""
    failure, service = failure_of(problem)
    role = problem.role if isinstance(problem, AccessDenied) else None
    status = problem.status if isinstance(problem, (TransientError, RequestRefused)) else None
    return {"failure": failure, "service": service, "role": role, "status": status}
