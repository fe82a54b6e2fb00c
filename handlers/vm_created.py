"""VM created or updated (`virtualMachines/write`), or one of its extensions written
(`virtualMachines/extensions/write`, after the VM's own write) → prerequisite check (design §3)."""

import azure.functions as func

from handlers._eventgrid import deliver
from responder.decisions.model import EventKind

ACCEPTS = frozenset({EventKind.CREATED})

blueprint = func.Blueprint()


@blueprint.function_name("on_vm_created")
@blueprint.event_grid_trigger(arg_name="event")
async def on_vm_created(event: func.EventGridEvent) -> None:
    from responder.stages.creation import creation_stage  # loaded by the first event: a cold start loads one stage

    await deliver(event, ACCEPTS, creation_stage)
