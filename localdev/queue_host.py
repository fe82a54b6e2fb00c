"""What the Functions host does for a queue trigger, for runs without the host.

Receive visible messages, call the function with an `azure.functions`
QueueMessage, delete the message when the function returns, make it visible
again when it raises, and move it to `<queue>-poison` after `maxDequeueCount`
deliveries (host.json). Used by the local run and the tests, against Azurite.

Message expiry is Azurite's, which is Azure's: before every receive it deletes each
message whose expiry time has come, so a message whose delay reached its time-to-live is
never delivered. The poison copy is sent as the host sends it, body only and without a
time-to-live, so it expires after Azure's default 7 days (the worker's own parked
envelope never expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as WorkerQueueMessage
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
log = logging.getLogger("localdev.queue_host")


@dataclass
class HostRun:
    completed: int = 0
    retried: int = 0
    poisoned: int = 0


def max_dequeue_count() -> int:
    queues = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    return int(queues["maxDequeueCount"])


def queue_client(connection_string: str, queue: str) -> QueueClient:
    return QueueClient.from_connection_string(
        connection_string,
        queue,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


async def provision_queues(connection_string: str, *queues: str) -> None:
    """Create the queues as the deployment does in Azure (Bicep); the app itself creates
    them only when it first sends."""
    for name in queues:
        async with queue_client(connection_string, name) as client:
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()


async def run_queue_trigger(
    connection_string: str,
    queue: str,
    function: Callable[[func.QueueMessage], Awaitable[None]],
    *,
    retry_after_seconds: int = 0,
) -> HostRun:
    """Deliver every currently visible message until none is left visible.

    Like the host: messages come in batches of `batchSize`, and a new batch is fetched
    whenever the messages still running fall to `newBatchThreshold` (so up to their sum run at
    once, as Microsoft documents for the queue trigger); each is held invisible while it runs
    (10 minutes, the host's lease), deleted on success, made visible again on failure, and
    moved to the poison queue after `maxDequeueCount` deliveries.
    """
    result = HostRun()
    limit = max_dequeue_count()
    queues = json.loads(HOST_JSON.read_text())["extensions"]["queues"]
    batch_size = int(queues.get("batchSize", 16))
    threshold = int(queues.get("newBatchThreshold", batch_size // 2))
    running: set[asyncio.Task[None]] = set()
    async with (
        queue_client(connection_string, queue) as source,
        queue_client(connection_string, f"{queue}-poison") as poison,
    ):
        try:
            while True:
                if len(running) <= threshold:
                    batch = await _receive(source, batch_size)
                    if not batch and not running:
                        return result
                    if not batch:  # none visible now: what runs may make its message visible again
                        await _finished(running, asyncio.ALL_COMPLETED)
                        continue
                    running |= {
                        asyncio.create_task(
                            _deliver(
                                message,
                                function=function,
                                source=source,
                                poison=poison,
                                limit=limit,
                                retry_after_seconds=retry_after_seconds,
                                result=result,
                            )
                        )
                        for message in batch
                    }
                    if len(running) <= threshold:
                        continue
                await _finished(running, asyncio.FIRST_COMPLETED)
        finally:
            for task in running:
                task.cancel()


async def _receive(source: QueueClient, batch_size: int) -> list[Any]:
    try:
        return [message async for message in source.receive_messages(max_messages=batch_size, visibility_timeout=600)]
    except ResourceNotFoundError:  # the app creates the queue with its first message
        return []


async def _finished(running: set[asyncio.Task[None]], when: str) -> None:
    """Wait for some (or all) running deliveries; a delivery's own failure (not the function's) is raised."""
    done, _ = await asyncio.wait(running, return_when=when)
    running -= done
    for task in done:
        task.result()


async def _deliver(
    message: Any,
    *,
    function: Callable[[func.QueueMessage], Awaitable[None]],
    source: QueueClient,
    poison: QueueClient,
    limit: int,
    retry_after_seconds: int,
    result: HostRun,
) -> None:
    # The subclass the Python worker builds, with the delivery count.
    trigger = WorkerQueueMessage(id=message.id, body=str(message.content).encode(), dequeue_count=message.dequeue_count)
    try:
        await function(trigger)
    except Exception as error:  # the host catches everything a function raises
        if (message.dequeue_count or 0) >= limit:
            await poison.send_message(message.content)  # as the host does: body only
            await source.delete_message(message)
            result.poisoned += 1
        else:
            log.info("retrying message %s after %r", message.id, error)
            await source.update_message(message, visibility_timeout=retry_after_seconds)
            result.retried += 1
        return
    await source.delete_message(message)
    result.completed += 1
