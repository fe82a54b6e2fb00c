"""Timer → the queue watch: poison queues and dead letters counted every 15 minutes (design §8)."""

import azure.functions as func

blueprint = func.Blueprint()

EVERY_15_MINUTES = "0 */15 * * * *"


@blueprint.function_name("on_queue_watch_timer")
@blueprint.timer_trigger(arg_name="timer", schedule=EVERY_15_MINUTES, run_on_startup=False)
async def on_queue_watch_timer(timer: func.TimerRequest) -> None:
    """Three storage reads; the lines feed the poison-queue and dead-letter alerts."""
    from responder.composition import get_services  # on first use: cheap indexing
    from responder.stages.queue_watch import watch_queues

    await watch_queues(await get_services())
