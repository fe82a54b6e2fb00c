"""A work queue (cleanups, device checks) and its poison queue, over azure-storage-queue.

Bodies are Base64-encoded text, the encoding the Functions queue trigger
expects by default (`host.json` says so explicitly). A message is sent with a
visibility delay, so the worker sees it only after the VM had time to be
re-created under the same name.

Every message this adapter sends, to a work queue or its poison queue, never
expires (`messagettl=-1`, API version 2017-07-29 and later). Put Message takes a
visibility delay of at most 7 days, which must be smaller than the message's
time-to-live, and that is 7 days when the sender gives none: a message sent with the
longest delay would expire the moment it became visible, and a cleanup with it.
`message_timing` is that rule, shared with the in-memory queue of the stateful model.

The client is made (and the queues created when missing) on first use: only
deletions and the cleanup worker use the queues, and a deallocate event's cold
start should not import azure-storage-queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from responder.adapters._errors import QUEUES, service_failure
from responder.decisions.settings import MAX_QUEUE_DELAY_SECONDS
from responder.log_lines import write

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

NEVER_EXPIRES = -1  # Put Message's messagettl for "the message does not expire"


@dataclass(frozen=True, slots=True)
class MessageTiming:
    """What Put Message is sent: how long the message stays invisible, and how long it lives."""

    visibility_timeout: int  # seconds, 0 to MAX_QUEUE_DELAY_SECONDS
    time_to_live: int  # seconds, or NEVER_EXPIRES
    clamped: str | None = None  # why the delay sent is not the delay asked for


def message_timing(delay_seconds: int) -> MessageTiming:
    """A delay Azure takes, and a message that outlives it: it never expires.

    A delay longer than Azure's longest visibility timeout (7 days) would be refused
    (400), and the work lost with it; it is sent as 7 days instead, and a warning says so.
    No caller asks for more today: the settings keep the configured delays within 7 days
    and the computed ones (device-check back-off, blast-radius wait) are hours at most;
    and each worker re-reads what it acts on when its message arrives."""
    if delay_seconds > MAX_QUEUE_DELAY_SECONDS:
        reason = (
            f"a delay of {delay_seconds} s is longer than Azure Storage's longest visibility timeout "
            f"({MAX_QUEUE_DELAY_SECONDS} s, 7 days): the message becomes visible after {MAX_QUEUE_DELAY_SECONDS} s"
        )
        return MessageTiming(MAX_QUEUE_DELAY_SECONDS, NEVER_EXPIRES, reason)
    if delay_seconds < 0:
        reason = f"a delay of {delay_seconds} s is negative: the message is visible at once"
        return MessageTiming(0, NEVER_EXPIRES, reason)
    return MessageTiming(delay_seconds, NEVER_EXPIRES)


class StorageWorkQueue:
    def __init__(self, connect: Callable[[], QueueServiceClient], queue: str, poison_queue: str) -> None:
        self._connect = connect
        self._names = (queue, poison_queue)
        self._service: QueueServiceClient | None = None
        self._clients: tuple[QueueClient, QueueClient] | None = None
        self._making = asyncio.Lock()  # concurrent first uses make one client, not one each

    async def _queues(self) -> tuple[QueueClient, QueueClient]:
        """The queue and its poison queue, created when missing (Bicep creates them in Azure)."""
        async with self._making:
            if self._clients is None:
                self._clients = await self._make()
            return self._clients

    async def _make(self) -> tuple[QueueClient, QueueClient]:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

        if self._service is None:
            self._service = self._connect()
        queue, poison = (
            self._service.get_queue_client(
                name,
                message_encode_policy=TextBase64EncodePolicy(),
                message_decode_policy=TextBase64DecodePolicy(),
            )
            for name in self._names
        )
        for client in (queue, poison):
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
                await queue.close()  # the service stays, for the next attempt
                await poison.close()
                raise service_failure(error, QUEUES) from error
        return queue, poison

    async def send(self, text: str, delay_seconds: int) -> None:
        timing = message_timing(delay_seconds)
        if timing.clamped:
            write(logging.WARNING, "queue-delay", queue=self._names[0], reason=timing.clamped)
        try:
            queue, _ = await self._queues()
            await queue.send_message(
                text, visibility_timeout=timing.visibility_timeout or None, time_to_live=timing.time_to_live
            )
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error

    async def send_poison(self, text: str, reason: str) -> None:
        """Park a message with the reason it can't be processed; a person looks at it."""
        envelope = {"reason": reason, "parked_at": datetime.now(UTC).isoformat(), "message": text}
        try:
            _, poison = await self._queues()
            await poison.send_message(json.dumps(envelope, sort_keys=True), time_to_live=NEVER_EXPIRES)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error

    async def poison_depth(self) -> int:
        try:
            _, poison = await self._queues()
            properties = await poison.get_queue_properties()
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error
        return int(properties.approximate_message_count or 0)

    async def close(self) -> None:
        for client in self._clients or ():
            await client.close()
        if self._service is not None:
            await self._service.close()
        self._clients = self._service = None
