"""The one place that turns settings into live clients.

Built on first use and cached per event loop: the Functions worker runs one
loop for the life of the process, so clients and their connection pools are
reused across invocations, while tests and CLI runs that start new loops get
fresh clients (aiohttp sessions can't cross loops). SDK modules are imported
here, lazily, so importing `function_app` stays cheap (cold start).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from responder.adapters._environment import environment_matters
from responder.decisions.settings import Settings
from responder.ports import DeviceDirectory, Services

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue.aio import QueueServiceClient


@dataclass
class _Storage:
    """The storage clients: tables now, queues and dead letters when first used."""

    table: TableClient
    audit_table: TableClient
    connect_queues: Callable[[], QueueServiceClient]
    connect_dead_letters: Callable[[], ContainerClient] | None


def _storage(settings: Settings, closing: contextlib.AsyncExitStack) -> _Storage:
    """A connection string (Azurite only), or the service endpoints with the managed identity."""
    from azure.data.tables.aio import TableClient

    storage, container = settings.storage, settings.cleanup.dead_letter_container
    env = environment_matters()  # look for proxies and netrc only where one exists
    if connection := storage.connection_string:
        return _Storage(
            TableClient.from_connection_string(connection, settings.ledger_table, use_env_settings=env),
            TableClient.from_connection_string(connection, settings.cleanup.audit_table, use_env_settings=env),
            lambda: _queues(connection, None, None),
            lambda: _dead_letter_container(connection, None, container, None),
        )
    tables, queues, blobs = storage.table_service_uri, storage.queue_service_uri, storage.blob_service_uri
    if tables is None or queues is None:
        raise RuntimeError("storage settings name neither a connection string nor service endpoints")
    credential = _credential(storage.client_id, settings)
    closing.push_async_callback(credential.close)
    return _Storage(
        TableClient(tables, settings.ledger_table, credential=credential, use_env_settings=env),
        TableClient(tables, settings.cleanup.audit_table, credential=credential, use_env_settings=env),
        lambda: _queues(None, queues, credential),
        (lambda: _dead_letter_container(None, blobs, container, credential)) if blobs else None,
    )


# azure-storage-queue and -blob are imported by the first event that uses them (cold start).
def _queues(connection: str | None, uri: str | None, credential: AsyncTokenCredential | None) -> QueueServiceClient:
    from azure.storage.queue.aio import QueueServiceClient

    if connection:
        return QueueServiceClient.from_connection_string(connection, use_env_settings=environment_matters())
    return QueueServiceClient(str(uri), credential=credential, use_env_settings=environment_matters())


def _dead_letter_container(
    connection: str | None, uri: str | None, container: str, credential: AsyncTokenCredential | None
) -> ContainerClient:
    from azure.storage.blob.aio import ContainerClient

    if connection:
        return ContainerClient.from_connection_string(connection, container, use_env_settings=environment_matters())
    return ContainerClient(str(uri), container, credential=credential, use_env_settings=environment_matters())


async def build_services(settings: Settings) -> Services:
    from responder.adapters.arm import ArmCompute
    from responder.adapters.audit_table import AuditTable
    from responder.adapters.dead_letters import BlobDeadLetters
    from responder.adapters.storage_queue import StorageWorkQueue
    from responder.adapters.table_ledger import TableLedger

    closing = contextlib.AsyncExitStack()
    storage = _storage(settings, closing)
    table = storage.table
    closing.push_async_callback(table.close)
    audit = AuditTable(storage.audit_table)
    closing.push_async_callback(audit.close)
    cleanup_queue = StorageWorkQueue(storage.connect_queues, settings.cleanup.queue, settings.cleanup.poison_queue)
    closing.push_async_callback(cleanup_queue.close)
    checks = settings.device_check
    device_check_queue = StorageWorkQueue(storage.connect_queues, checks.queue, checks.poison_queue)
    closing.push_async_callback(device_check_queue.close)
    dead_letters = BlobDeadLetters(storage.connect_dead_letters) if storage.connect_dead_letters else None
    if dead_letters is not None:
        closing.push_async_callback(dead_letters.close)

    cloud_credential = _credential(settings.identity_client_id, settings)
    closing.push_async_callback(cloud_credential.close)

    def connect_graph() -> DeviceDirectory:
        from responder.adapters.graph import build_graph_directory

        return build_graph_directory(cloud_credential, settings.graph_url, settings.ca_file, cloud=settings.cloud)

    directory = GraphOnFirstUse(connect_graph)
    closing.push_async_callback(directory.close)
    compute = ArmCompute(
        cloud_credential,
        settings.arm_url,
        settings.ca_file,
        settings.cloud,
        host_pool_index_seconds=settings.host_pool_index_minutes * 60,
    )
    closing.push_async_callback(compute.close)
    publisher = None
    if settings.findings_topic_endpoint:
        from responder.adapters.findings_publisher import FindingsPublisher

        publisher = FindingsPublisher(settings.findings_topic_endpoint, cloud_credential, settings.ca_file)
        closing.push_async_callback(publisher.close)

    ledger = TableLedger(table)
    services = Services(
        settings=settings,
        ledger=ledger,
        directory=cast(DeviceDirectory, directory),
        compute=compute,
        cleanup_queue=cleanup_queue,
        device_check_queue=device_check_queue,
        audit=audit,
        findings_publisher=publisher,
        dead_letters=dead_letters,
        closing=closing,
    )
    try:
        await ledger.ensure_table()
        await audit.ensure_table()
    except BaseException:
        await services.aclose()  # no half-built services with open sessions
        raise
    return services


class GraphOnFirstUse:
    """The Graph directory, built when an event first needs it: creation and deletion events
    never call Graph, and msgraph-sdk's stack costs ~50 ms of a cold start."""

    def __init__(self, connect: Callable[[], DeviceDirectory]) -> None:
        self._connect = connect
        self._directory: DeviceDirectory | None = None

    @property
    def connected(self) -> bool:
        """Whether an event has needed Graph yet (the client exists)."""
        return self._directory is not None

    def __getattr__(self, name: str) -> Any:
        if self._directory is None:
            self._directory = self._connect()
        return getattr(self._directory, name)

    async def close(self) -> None:
        if self._directory is not None:
            await self._directory.close()
            self._directory = None


def _credential(client_id: str | None, settings: Settings) -> AsyncTokenCredential:
    """The app's managed identity where the platform offers one (Functions sets `IDENTITY_ENDPOINT`;
    so do the local simulators); elsewhere (a developer's machine) whatever DefaultAzureCredential
    finds, such as `az login`. Deterministic in Azure, and ~100 ms cheaper on a cold start than
    building DefaultAzureCredential's chain."""
    if settings.managed_identity:
        from azure.identity.aio import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=client_id, authority=settings.cloud.authority)


_services: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Services] = weakref.WeakKeyDictionary()
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def get_services() -> Services:
    """The services of this process, built from the app settings on first use."""
    loop = asyncio.get_running_loop()
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:
        if loop not in _services:
            _services[loop] = await build_services(Settings.from_env(os.environ))
        return _services[loop]


async def close_services() -> None:
    """Close this loop's cached clients (tests and CLI runs, before the loop ends)."""
    services = _services.pop(asyncio.get_running_loop(), None)
    if services is not None:
        await services.aclose()
