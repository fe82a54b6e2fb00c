"""Device-check queue message → the device-side prerequisite check of a new VM, once it enrolled."""

import azure.functions as func

blueprint = func.Blueprint()


@blueprint.function_name("on_device_check_message")
@blueprint.queue_trigger(
    arg_name="message", queue_name="%RESPONDER_DEVICE_CHECK_QUEUE%", connection="AzureWebJobsStorage"
)
async def on_device_check_message(message: func.QueueMessage) -> None:
    """TransientError escapes while retries remain: the host makes the message visible again."""
    from responder.composition import get_services  # on first use: cheap indexing
    from responder.stages.device_check import process_device_check

    await process_device_check(message.get_body(), message.dequeue_count or 1, await get_services())
