"""The cleanup queue and its poison queue, over azure-storage-queue.

Bodies are Base64-encoded text, the encoding the Functions queue trigger
expects by default (`host.json` says so explicitly). A message is sent with a
visibility delay, so the worker sees it only after the VM had time to be
re-created under the same name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueServiceClient

from responder.adapters._errors import QUEUES, service_failure


class StorageCleanupQueue:
    def __init__(self, service: QueueServiceClient, queue: str, poison_queue: str) -> None:
        self._queue = service.get_queue_client(
            queue,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        self._poison = service.get_queue_client(
            poison_queue,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    async def ensure_queues(self) -> None:
        """Create the queues when missing (Bicep creates them in Azure)."""
        for client in (self._queue, self._poison):
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
                raise service_failure(error, QUEUES) from error

    async def send(self, text: str, delay_seconds: int) -> None:
        try:
            await self._queue.send_message(text, visibility_timeout=delay_seconds or None)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error

    async def send_poison(self, text: str, reason: str) -> None:
        """Park a message with the reason it can't be processed; a person looks at it."""
        envelope = {"reason": reason, "parked_at": datetime.now(UTC).isoformat(), "message": text}
        try:
            await self._poison.send_message(json.dumps(envelope, sort_keys=True))
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, QUEUES) from error

    async def close(self) -> None:
        await self._queue.close()
        await self._poison.close()
