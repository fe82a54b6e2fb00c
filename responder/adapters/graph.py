"""`responder.ports.DeviceDirectory` over msgraph-sdk (Microsoft Graph v1.0).

Every read names its fields with `$select`, so user data (UPN, e-mail, phone)
never leaves Graph. Name lookups are exact (`eq`), never `startswith`: `VM1`
must not find `VM10` (SPEC §2). 404 on a read is "absent", on a delete "already
done". 429/503/504 are retried by the SDK's retry middleware, honouring
Retry-After; what still fails, and any 5xx or network error, becomes a
TransientError so the event or queue message is retried later.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from kiota_abstractions.api_error import APIError
from kiota_abstractions.base_request_configuration import RequestConfiguration
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
from msgraph.generated.models.managed_device import ManagedDevice as GraphManagedDevice
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from responder.errors import RequestRefused, TransientError
from responder.facts import EntraDevice, ManagedDevice

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DIRECTORY_OBJECT_REF = "https://graph.microsoft.com/v1.0/directoryObjects/"
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
]

T = TypeVar("T")


def build_graph_directory(credential: AsyncTokenCredential, base_url: str, ca_file: str | None) -> GraphDeviceDirectory:
    """A GraphServiceClient on the real kiota HTTP stack, pointed at `base_url`.

    `ca_file` replaces the system trust store (the local simulators' CA); the
    token is only ever sent to the host of `base_url`, over HTTPS.
    """
    host = urlsplit(base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host])
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=verify, timeout=TIMEOUT_SECONDS),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=MAX_RETRIES)},
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphDeviceDirectory(GraphServiceClient(request_adapter=adapter), http)


class GraphDeviceDirectory:
    """Intune managed devices, Entra devices and group membership."""

    def __init__(self, client: GraphServiceClient, http: httpx.AsyncClient) -> None:
        self._client = client
        self._http = http

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
        device = await _absent_on_404(builder.get(RequestConfiguration(query_parameters=query)))
        return _managed_device(device) if device is not None else None

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
        page = await _call(collection.get(RequestConfiguration(query_parameters=query)))
        while page is not None:
            for device in page.value or []:
                yield _managed_device(device)
            if not page.odata_next_link:
                break
            page = await _call(collection.with_url(page.odata_next_link).get())

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
        device = await _absent_on_404(builder.get(RequestConfiguration(query_parameters=query)))
        return _entra_device(device) if device is not None else None

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
        page = await _call(self._client.devices.get(config))
        while page is not None:
            for device in page.value or []:
                yield _entra_device(device)
            if not page.odata_next_link:
                break
            page = await _call(self._client.devices.with_url(page.odata_next_link).get())

    # --- groups -----------------------------------------------------------------

    async def add_group_member(self, group_id: str, object_id: str) -> bool:
        """Add a device to a group; False when it already was a member."""
        body = ReferenceCreate(odata_id=f"{DIRECTORY_OBJECT_REF}{object_id}")
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


def _managed_device(device: GraphManagedDevice) -> ManagedDevice:
    return ManagedDevice(
        id=str(device.id),
        device_name=device.device_name,
        azure_ad_device_id=device.azure_a_d_device_id,
        model=device.model,
        manufacturer=device.manufacturer,
        serial_number=device.serial_number,
        operating_system=device.operating_system,
        os_version=device.os_version,
        enrolled_at=(device.enrolled_date_time),
        last_sync_at=(device.last_sync_date_time),
        enrollment_type=_enum_text(device.device_enrollment_type),
        management_agent=_enum_text(device.management_agent),
    )


def _entra_device(device: Device) -> EntraDevice:
    attributes = (device.additional_data or {}).get("extensionAttributes") or {}
    return EntraDevice(
        object_id=str(device.id),
        device_id=device.device_id,
        display_name=device.display_name,
        trust_type=device.trust_type,
        physical_ids=tuple(device.physical_ids or ()),
        extension_attributes={str(name): value for name, value in attributes.items()},
        on_premises_sync_enabled=bool(device.on_premises_sync_enabled),
        last_sign_in_at=(device.approximate_last_sign_in_date_time),
    )


def _quote(value: str) -> str:
    """An OData string literal: single quotes, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _enum_text(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _message(problem: APIError) -> str:
    error = getattr(problem, "error", None)
    return str(getattr(error, "message", None) or problem.message or problem)


async def _call(operation: Awaitable[T]) -> T:
    """Await a Graph call: what a later retry can fix becomes TransientError,
    any other refusal RequestRefused (no SDK exception leaves this module)."""
    try:
        return await operation
    except APIError as problem:
        status = problem.response_status_code or 0
        if status == 429 or status >= 500:
            raise TransientError(f"Microsoft Graph answered {status}: {_message(problem)}") from problem
        raise RequestRefused(status, _message(problem)) from problem
    except httpx.TransportError as problem:
        raise TransientError(f"Microsoft Graph unreachable: {problem!r}") from problem


async def _absent_on_404(operation: Awaitable[T | None]) -> T | None:
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
