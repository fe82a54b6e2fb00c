"""Carry out a plan against Microsoft Graph, or in audit mode only describe it.

Every action is idempotent at the adapter (False: already so), so a retried
event repeats a plan safely. A refusal (RequestRefused) becomes a finding and
the remaining actions still run; a TransientError escapes so the event is
retried later.
"""

from __future__ import annotations

from dataclasses import dataclass

from responder.errors import RequestRefused
from responder.model import Finding, Severity
from responder.ports import DeviceDirectory
from responder.settings import Mode
from responder.suppression import Action, AddToGroup, Plan, RemoveFromGroup, SetAttribute, SyncDevice


@dataclass(frozen=True, slots=True)
class Execution:
    done: tuple[str, ...]  # what was carried out (enforce) or would have been (audit)
    refused: tuple[Finding, ...]


async def execute(plan: Plan, directory: DeviceDirectory, mode: Mode) -> Execution:
    if mode is Mode.AUDIT:
        return Execution(tuple(f"audit: would {action.describe()}" for action in plan.actions), ())
    done: list[str] = []
    refused: list[Finding] = []
    for action in plan.actions:
        try:
            changed = await _perform(action, directory)
        except RequestRefused as refusal:
            refused.append(
                Finding("action-refused", Severity.WARNING, f"Graph refused to {action.describe()}", str(refusal))
            )
            continue
        done.append(action.describe() + ("" if changed else " (already so)"))
    return Execution(tuple(done), tuple(refused))


async def _perform(action: Action, directory: DeviceDirectory) -> bool:
    match action:
        case AddToGroup(group_id, object_id):
            return await directory.add_group_member(group_id, object_id)
        case RemoveFromGroup(group_id, object_id):
            return await directory.remove_group_member(group_id, object_id)
        case SetAttribute(object_id, number, value):
            await directory.set_extension_attribute(object_id, number, value)
            return True
        case SyncDevice(managed_device_id):
            return await directory.sync_device(managed_device_id)
