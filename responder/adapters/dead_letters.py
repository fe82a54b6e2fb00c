"""Event Grid's dead letters: the deliveries it gave up on, as blobs in the app's storage account.

Only counted (for the queue watch's `dead-letters` line, which the alert and the workbook read): each blob
is a batch of events that failed for 24 hours, and a person reads them in the portal.
The client is made on the first count, so no other event imports azure-storage-blob.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError, ServiceResponseError

from responder.adapters._errors import BLOBS, service_failure

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

MAX_COUNTED = 10_000  # enough to say "many"; listing more only costs time


class BlobDeadLetters:
    def __init__(self, connect: Callable[[], ContainerClient]) -> None:
        self._connect = connect
        self._container: ContainerClient | None = None

    async def count(self) -> int:
        """Blobs in the dead-letter container (at most MAX_COUNTED); 0 when it doesn't exist yet."""
        if self._container is None:
            self._container = self._connect()
        counted = 0
        try:
            async for _ in self._container.list_blobs():
                counted += 1
                if counted >= MAX_COUNTED:
                    break
        except ResourceNotFoundError:
            return 0
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
            raise service_failure(error, BLOBS) from error
        return counted

    async def close(self) -> None:
        if self._container is not None:
            await self._container.close()
            self._container = None
