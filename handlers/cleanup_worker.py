"""Cleanup queue message → carry out one VM's record cleanup (design §5)."""

import azure.functions as func

blueprint = func.Blueprint()


@blueprint.function_name("on_cleanup_message")
@blueprint.queue_trigger(arg_name="message", queue_name="%RESPONDER_CLEANUP_QUEUE%", connection="AzureWebJobsStorage")
async def on_cleanup_message(message: func.QueueMessage) -> None:
    """TransientError escapes while retries remain: the host makes the message
    visible again after host.json's visibilityTimeout."""
    from responder.composition import get_services
    from responder.stages.cleanup import process_cleanup  # on first use: cheap indexing

    await process_cleanup(message.get_body(), message.dequeue_count or 1, await get_services())
