"""The deletion stage: queue a deleted VM's cleanup (the cleanup stage carries it out).

One message per deletion of one incarnation, sent with the configured delay. A redelivered
delete event may send a second message for the same deletion; both carry the same cleanup
key, so the second finds the first's row.
"""

from __future__ import annotations

from dataclasses import replace

from responder.decisions.cleanup import CleanupRequest
from responder.decisions.events import VmEvent
from responder.decisions.model import VmRecord
from responder.decisions.observe import deletion_ended_this_incarnation
from responder.ports import DeletionPorts
from responder.stages.pipeline import Work


async def deletion_stage(event: VmEvent, record: VmRecord, services: DeletionPorts) -> Work:
    """The stage of `on_vm_deleted`: queue the cleanup of the incarnation the delete event ended
    (`record`: the row the event produced)."""
    vm = event.vm
    base = CleanupRequest(
        event_id=event.event_id,
        resource_id=vm.resource_id,
        subscription_id=vm.subscription_id,
        resource_group=vm.resource_group,
        vm_name=vm.name,
        deleted_at=event.event_time,
    )
    if deletion_ended_this_incarnation(record, event):
        request = replace(base, incarnation=record.incarnation, device=record.device, opted_out=record.opted_out)
        what = "cleanup queued"
    else:
        # The ledger already describes a later VM under this resource id: nothing it knows is the deleted one's.
        request = replace(base, replaced_by_vm_id=record.incarnation.vm_id)
        what = "cleanup of an earlier VM under this resource id queued"
    delay = services.settings.cleanup.delay_seconds
    await services.cleanup_queue.send(request.to_text(), delay)
    return Work(f"{what}, visible in {delay} s")
