"""Timer → reconciliation: repair what the events missed (design §6)."""

import azure.functions as func

blueprint = func.Blueprint()


@blueprint.function_name("on_reconcile_timer")
@blueprint.timer_trigger(arg_name="timer", schedule="%RESPONDER_RECONCILE_SCHEDULE%", run_on_startup=False)
async def on_reconcile_timer(timer: func.TimerRequest) -> None:
    """Bounded per run; a run that stops at the bound is resumed by the next one."""
    from responder.composition import get_services  # on first use: cheap indexing
    from responder.stages.reconciliation import reconcile

    await reconcile(await get_services())
