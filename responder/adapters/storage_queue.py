"""A work queue (cleanups, device checks) and its poison queue, over azure-storage-queue.

Bodies are Base64-encoded text, the encoding the Functions queue trigger
expects by default (`host.json` says so explicitly). A message is sent with a
visibility delay, so the worker sees it only after the VM had time to be
re-created under the same name.

The client is made (and the queues created when missing) on first use: only
deletions and the cleanup worker use the queues, and a deallocate event's cold
start should not import azure-storage-queue.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from responder.adapters._errors import QUEUES, service_failure

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient, QueueServiceClient


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
        try:
            queue, _ = await self._queues()
            await queue.send_message(text, visibility_timeout=delay_seconds or None)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error

    async def send_poison(self, text: str, reason: str) -> None:
        """Park a message with the reason it can't be processed; a person looks at it."""
        envelope = {"reason": reason, "parked_at": datetime.now(UTC).isoformat(), "message": text}
        try:
            _, poison = await self._queues()
            await poison.send_message(json.dumps(envelope, sort_keys=True))
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
