"""VM deallocated, powered off, started, restarted or redeployed → suppression (design §4)."""

import azure.functions as func

from handlers._eventgrid import deliver
from responder.decisions.model import EventKind

ACCEPTS = frozenset({EventKind.DEALLOCATED, EventKind.POWERED_OFF, EventKind.STARTED})

blueprint = func.Blueprint()


@blueprint.function_name("on_vm_power_changed")
@blueprint.event_grid_trigger(arg_name="event")
async def on_vm_power_changed(event: func.EventGridEvent) -> None:
    from responder.stages.power import power_stage  # loaded by the first event: a cold start loads one stage

    await deliver(event, ACCEPTS, power_stage)
