"""VM deleted (`virtualMachines/delete`) → queue the cleanup of its records (design §5)."""

import azure.functions as func

from handlers._eventgrid import deliver
from responder.decisions.model import EventKind

ACCEPTS = frozenset({EventKind.DELETED})

blueprint = func.Blueprint()


@blueprint.function_name("on_vm_deleted")
@blueprint.event_grid_trigger(arg_name="event")
async def on_vm_deleted(event: func.EventGridEvent) -> None:
    from responder.stages.deletion import deletion_stage  # loaded by the first event: a cold start loads one stage

    await deliver(event, ACCEPTS, deletion_stage)
