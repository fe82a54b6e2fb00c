"""`responder.ports.DeviceDirectory` over msgraph-sdk (Microsoft Graph v1.0).

Every read names its fields with `$select`, so user data (UPN, e-mail, phone)
never leaves Graph. Name lookups are exact (`eq`), never `startswith`: `VM1`
must not find `VM10` (SPEC §2). 404 on a read is "absent", on a delete "already
done". 429/503/504 are retried by the SDK's retry middleware, honouring
Retry-After; what still fails, and any 5xx or network error, becomes a
TransientError so the event or queue message is retried later.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.device_management.managed_devices.item.managed_device_item_request_builder import (
    ManagedDeviceItemRequestBuilder,
)
from msgraph.generated.device_management.managed_devices.managed_devices_request_builder import (
    ManagedDevicesRequestBuilder,
)
from msgraph.generated.devices.devices_request_builder import DevicesRequestBuilder
from msgraph.generated.devices.item.device_item_request_builder import DeviceItemRequestBuilder
from msgraph.generated.models.device import Device
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from responder.adapters._errors import GRAPH, service_failure, status_failure
from responder.clouds import PUBLIC, Cloud
from responder.errors import RequestRefused, TransientError
from responder.facts import EntraDevice, ManagedDevice
from responder.model import parse_moment
from responder.names import clip

# Retries inside one call; beyond them the whole event is retried later.
MAX_RETRIES = 5
TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 100

MANAGED_DEVICE_FIELDS = [
    "id",
    "deviceName",
    "azureADDeviceId",
    "model",
    "manufacturer",
    "serialNumber",
    "operatingSystem",
    "osVersion",
    "enrolledDateTime",
    "lastSyncDateTime",
    "deviceEnrollmentType",
    "managementAgent",
]
ENTRA_DEVICE_FIELDS = [
    "id",
    "deviceId",
    "displayName",
    "trustType",
    "physicalIds",
    "extensionAttributes",
    "onPremisesSyncEnabled",
    "approximateLastSignInDateTime",
    "registrationDateTime",
]


def build_graph_directory(
    credential: AsyncTokenCredential,
    base_url: str,
    ca_file: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
    cloud: Cloud = PUBLIC,
) -> GraphDeviceDirectory:
    """A GraphServiceClient on the real kiota HTTP stack, pointed at `base_url`.

    `ca_file` replaces the system trust store (the local simulators' CA); the
    token is only ever sent to the host of `base_url`, over HTTPS. `transport`
    replaces the network (tests that run the simulator in-process). `cloud` names the
    token's audience and the `@odata.id` root, whatever URL Graph is reached at.
    """
    host = urlsplit(base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[cloud.graph_scope], allowed_hosts=[host])
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=verify, timeout=TIMEOUT_SECONDS, transport=transport),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=MAX_RETRIES)},
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphDeviceDirectory(GraphServiceClient(request_adapter=adapter), http, base_url, cloud)


class GraphDeviceDirectory:
    """Intune managed devices, Entra devices and group membership."""

    def __init__(self, client: GraphServiceClient, http: httpx.AsyncClient, base_url: str, cloud: Cloud) -> None:
        self._client = client
        self._http = http
        self._directory_root = cloud.directory_object_root
        self._batching = _Batching(client, base_url)

    async def close(self) -> None:
        await self._http.aclose()

    # --- Intune -----------------------------------------------------------------

    async def find_managed_devices_by_name(self, device_name: str) -> list[ManagedDevice]:
        """Every managed device whose name equals `device_name` (Graph compares
        case-insensitively); the caller decides what two or more matches mean."""
        wanted = device_name.lower()
        found = [
            device
            async for device in self._managed_devices(f"deviceName eq {_quote(device_name)}")
            if (device.device_name or "").lower() == wanted
        ]
        return found

    async def get_managed_device(self, managed_device_id: str) -> ManagedDevice | None:
        query = ManagedDeviceItemRequestBuilder.ManagedDeviceItemRequestBuilderGetQueryParameters(
            select=MANAGED_DEVICE_FIELDS
        )
        builder = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
        document = await _absent_on_404(
            self._json(builder.to_get_request_information(RequestConfiguration(query_parameters=query)))
        )
        return managed_device_from_json(document) if document else None

    async def delete_managed_device(self, managed_device_id: str) -> bool:
        builder = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
        return await _done_unless_404(builder.delete())

    async def sync_device(self, managed_device_id: str) -> bool:
        builder = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
        return await _done_unless_404(builder.sync_device.post())

    async def windows_virtual_machines(self) -> AsyncIterator[ManagedDevice]:
        """All Windows managed devices whose model is `Virtual Machine`, page by page."""
        async for device in self._managed_devices("operatingSystem eq 'Windows' and model eq 'Virtual Machine'"):
            if device.is_virtual_machine:
                yield device

    async def _managed_devices(self, odata_filter: str) -> AsyncIterator[ManagedDevice]:
        collection = self._client.device_management.managed_devices
        query = ManagedDevicesRequestBuilder.ManagedDevicesRequestBuilderGetQueryParameters(
            filter=odata_filter, select=MANAGED_DEVICE_FIELDS, top=PAGE_SIZE
        )
        config = RequestConfiguration(query_parameters=query)
        pages = self._pages(collection.to_get_request_information(config), collection.with_url, config)
        async for item in pages:
            yield managed_device_from_json(item)

    async def _pages(
        self, information: RequestInformation, with_url: Callable[[str], Any], config: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a collection, following `@odata.nextLink` (same headers on every page)."""
        while True:
            page = await self._json(information)
            for item in page.get("value", []):
                yield item
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            information = with_url(str(next_link)).to_get_request_information(config)

    async def _json(self, information: RequestInformation) -> dict[str, Any]:
        """Send through the SDK's adapter and read the JSON as Graph wrote it.

        msgraph-sdk's models cost milliseconds of CPU per object to deserialize (its Entity
        deserializer builds a map of every Graph type each time); the responder needs a
        dozen fields and reads them here from the document.
        """
        adapter: RequestAdapter = self._client.request_adapter
        raw: Any = await _call(adapter.send_primitive_async(information, "bytes", {}))
        document = json.loads(raw or b"{}")
        return document if isinstance(document, dict) else {}

    # --- batched, for the cleanup worker (one call instead of two each) -----------

    async def read_records(
        self, managed_device_id: str, entra_device_id: str
    ) -> tuple[ManagedDevice | None, list[EntraDevice]]:
        """The Intune record and the Entra objects with `entra_device_id`, in one call."""
        managed = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
        devices = self._client.devices
        requests = {
            "managed": managed.to_get_request_information(
                RequestConfiguration(
                    query_parameters=ManagedDeviceItemRequestBuilder.ManagedDeviceItemRequestBuilderGetQueryParameters(
                        select=MANAGED_DEVICE_FIELDS
                    )
                )
            ),
            "entra": devices.to_get_request_information(
                RequestConfiguration(
                    query_parameters=DevicesRequestBuilder.DevicesRequestBuilderGetQueryParameters(
                        filter=f"deviceId eq {_quote(entra_device_id)}", select=ENTRA_DEVICE_FIELDS
                    )
                )
            ),
        }
        answers = await self._batching.send(requests)
        managed_answer, entra_answer = answers["managed"], answers["entra"]
        _refuse_unless(managed_answer, {200, 404})
        _refuse_unless(entra_answer, {200})
        device = managed_device_from_json(managed_answer.body or {}) if managed_answer.status == 200 else None
        entra = [entra_device_from_json(item) for item in (entra_answer.body or {}).get("value", [])]
        return device, entra

    async def delete_records(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]:
        """Delete the Intune record and/or the Entra object in one call; False: it was already gone."""
        requests = {}
        if managed_device_id:
            builder = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
            requests["managed"] = builder.to_delete_request_information()
        if entra_object_id:
            requests["entra"] = self._client.devices.by_device_id(entra_object_id).to_delete_request_information()
        answers = await self._batching.send(requests) if requests else {}
        for answer in answers.values():
            _refuse_unless(answer, {204, 404})
        return {key: answer.status == 204 for key, answer in answers.items()}

    async def records_exist(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]:
        """Read both again after a delete, in one call: True means it is still there."""
        requests = {}
        if managed_device_id:
            builder = self._client.device_management.managed_devices.by_managed_device_id(managed_device_id)
            requests["managed"] = builder.to_get_request_information()
        if entra_object_id:
            requests["entra"] = self._client.devices.by_device_id(entra_object_id).to_get_request_information()
        answers = await self._batching.send(requests) if requests else {}
        for answer in answers.values():
            _refuse_unless(answer, {200, 404})
        return {key: answer.status == 200 for key, answer in answers.items()}

    # --- Entra ------------------------------------------------------------------

    async def find_entra_devices(self, device_id: str) -> list[EntraDevice]:
        """Entra devices by `deviceId` (the `azureADDeviceId` of the Intune record)."""
        return [device async for device in self._entra_devices(f"deviceId eq {_quote(device_id)}")]

    async def find_entra_devices_by_resource_id(self, resource_id: str) -> list[EntraDevice]:
        """Entra devices that name the VM in `physicalIds` (`[AzureResourceId]:<id>`).

        Not documented by Microsoft but seen on Entra-joined Azure VMs: used
        when present, never required (SPEC §2).
        """
        marker = f"[AzureResourceId]:{resource_id}"
        found = self._entra_devices(f"physicalIds/any(p:p eq {_quote(marker)})", advanced=True)
        return [device async for device in found if marker.lower() in (p.lower() for p in device.physical_ids)]

    async def get_entra_device(self, object_id: str) -> EntraDevice | None:
        query = DeviceItemRequestBuilder.DeviceItemRequestBuilderGetQueryParameters(select=ENTRA_DEVICE_FIELDS)
        builder = self._client.devices.by_device_id(object_id)
        information = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        document = await _absent_on_404(self._json(information))
        return entra_device_from_json(document) if document else None

    async def delete_entra_device(self, object_id: str) -> bool:
        return await _done_unless_404(self._client.devices.by_device_id(object_id).delete())

    async def set_extension_attribute(self, object_id: str, number: int, value: str | None) -> None:
        """Set (or clear, with None) `extensionAttribute<number>` of an Entra device.

        A synced (hybrid) device refuses with 400 (RequestRefused): the caller
        turns that into a finding, not a retry.
        """
        if not 1 <= number <= 15:
            raise ValueError(f"extension attributes are numbered 1 to 15, not {number}")
        patch = Device(additional_data={"extensionAttributes": {f"extensionAttribute{number}": value}})
        await _call(self._client.devices.by_device_id(object_id).patch(patch))

    async def _entra_devices(self, odata_filter: str, *, advanced: bool = False) -> AsyncIterator[EntraDevice]:
        query = DevicesRequestBuilder.DevicesRequestBuilderGetQueryParameters(
            filter=odata_filter, select=ENTRA_DEVICE_FIELDS, top=PAGE_SIZE, count=True if advanced else None
        )
        # Filters on collections need Graph's advanced query capabilities.
        headers = {"ConsistencyLevel": "eventual"} if advanced else None
        config = RequestConfiguration(query_parameters=query)
        if headers:
            config.headers.add_all(headers)
        devices = self._client.devices
        async for item in self._pages(devices.to_get_request_information(config), devices.with_url, config):
            yield entra_device_from_json(item)

    # --- groups -----------------------------------------------------------------

    async def add_group_member(self, group_id: str, object_id: str) -> bool:
        """Add a device to a group; False when it already was a member."""
        body = ReferenceCreate(odata_id=f"{self._directory_root}{object_id}")
        try:
            await _call(self._client.groups.by_group_id(group_id).members.ref.post(body))
        except RequestRefused as refused:
            if refused.status == 400 and "already exist" in refused.message:
                return False
            raise
        return True

    async def remove_group_member(self, group_id: str, object_id: str) -> bool:
        """Remove a device from a group; False when it was not a member."""
        member = self._client.groups.by_group_id(group_id).members.by_directory_object_id(object_id)
        return await _done_unless_404(member.ref.delete())


def _refuse_unless(answer: _Answer, expected: set[int]) -> None:
    if answer.status not in expected:
        message = str(((answer.body or {}).get("error") or {}).get("message", "")) or "no message"
        raise status_failure(answer.status, clip(message), GRAPH)


def _quote(value: str) -> str:
    """An OData string literal: single quotes, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _message(problem: APIError) -> str:
    error = getattr(problem, "error", None)
    return str(getattr(error, "message", None) or problem.message or problem)


async def _call[T](operation: Awaitable[T]) -> T:
    """Await a Graph call: what a later retry can fix becomes TransientError,
    any other refusal RequestRefused (no SDK exception leaves this module)."""
    try:
        return await operation
    except APIError as problem:
        raise status_failure(problem.response_status_code, clip(_message(problem)), GRAPH) from problem
    except httpx.TransportError as problem:
        raise TransientError(f"Microsoft Graph unreachable: {problem!r}") from problem
    except ClientAuthenticationError as problem:  # the identity could not get a token for Graph
        raise service_failure(problem, GRAPH) from problem


async def _absent_on_404[T](operation: Awaitable[T | None]) -> T | None:
    try:
        return await _call(operation)
    except RequestRefused as refused:
        if refused.status == 404:
            return None
        raise


async def _done_unless_404(operation: Awaitable[Any]) -> bool:
    """True when the call changed something, False when its target was already gone."""
    try:
        await _call(operation)
    except RequestRefused as refused:
        if refused.status == 404:
            return False
        raise
    return True


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: dict[str, Any] | None


class _Batching:
    """Graph JSON batching ($batch, up to 20 requests per call), through msgraph-sdk's batch builder.

    Each inner request is throttled on its own: 429/503/504 answers are sent again
    after their Retry-After, a bounded number of times; other 5xx are transient.
    """

    def __init__(self, client: GraphServiceClient, base_url: str) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")

    async def send(self, requests: dict[str, RequestInformation]) -> dict[str, _Answer]:
        from msgraph_core.requests.batch_request_content import BatchRequestContent
        from msgraph_core.requests.batch_request_item import BatchRequestItem

        pending, answers = dict(requests), {}
        for attempt in range(MAX_RETRIES + 1):
            content = BatchRequestContent()
            for key, information in pending.items():
                item = BatchRequestItem(request_information=information, id=key)
                item.url = item.url.removeprefix(self._base_url)  # Graph wants URLs relative to the version
                content.add_request(key, item)
            # msgraph-core reads inner bodies as base64 only; Graph sends JSON objects. So the
            # batch goes through the SDK's request adapter (auth, retries, TLS) and its
            # response is read as the JSON Graph documents.
            information = await self._client.batch.to_post_request_information(content)
            adapter: RequestAdapter = self._client.request_adapter
            raw: Any = await _call(adapter.send_primitive_async(information, "bytes", {}))
            document = json.loads(raw or b"{}")
            by_id = {str(item.get("id")): item for item in document.get("responses", [])}
            wait = 0
            for key in list(pending):
                item = by_id.get(key, {})
                status = int(item.get("status") or 0)
                if status in RETRIED_STATUSES:
                    wait = max(wait, _retry_after(item.get("headers")))
                    continue
                if status >= 500 or status == 0:
                    raise TransientError(f"Microsoft Graph answered {status or 'nothing'} inside a batch")
                body = item.get("body")
                answers[key] = _Answer(status, body if isinstance(body, dict) else None)
                del pending[key]
            if not pending:
                return answers
            if attempt < MAX_RETRIES:
                await asyncio.sleep(wait)
        raise TransientError(f"Microsoft Graph kept throttling {len(pending)} batched request(s)")


RETRIED_STATUSES = frozenset({429, 503, 504})


def _retry_after(headers: dict[str, Any] | None) -> int:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after" and str(value).isdigit():
            return max(1, int(value))
    return 1


def managed_device_from_json(document: dict[str, Any]) -> ManagedDevice:
    return ManagedDevice(
        id=str(document["id"]),
        device_name=document.get("deviceName"),
        azure_ad_device_id=document.get("azureADDeviceId"),
        model=document.get("model"),
        manufacturer=document.get("manufacturer"),
        serial_number=document.get("serialNumber"),
        operating_system=document.get("operatingSystem"),
        os_version=document.get("osVersion"),
        enrolled_at=parse_moment(document.get("enrolledDateTime")),
        last_sync_at=parse_moment(document.get("lastSyncDateTime")),
        enrollment_type=document.get("deviceEnrollmentType"),
        management_agent=document.get("managementAgent"),
    )


def entra_device_from_json(document: dict[str, Any]) -> EntraDevice:
    return EntraDevice(
        object_id=str(document["id"]),
        device_id=document.get("deviceId"),
        display_name=document.get("displayName"),
        trust_type=document.get("trustType"),
        physical_ids=tuple(document.get("physicalIds") or ()),
        extension_attributes=dict(document.get("extensionAttributes") or {}),
        on_premises_sync_enabled=bool(document.get("onPremisesSyncEnabled")),
        last_sign_in_at=parse_moment(document.get("approximateLastSignInDateTime")),
        registered_at=parse_moment(document.get("registrationDateTime")),
    )
