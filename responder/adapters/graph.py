"""`responder.ports.DeviceDirectory` over msgraph-sdk (Microsoft Graph v1.0).

The requests go through msgraph-sdk's request adapter on its HTTP stack (kiota
authentication with the app's identity, retry of 429/503/504 honouring
Retry-After, Graph's error model); they are written here as the URLs Graph
documents rather than through the generated request builders, whose imports
cost tens of milliseconds on every cold start for a dozen URLs.

Every read names its fields with `$select`, so user data (UPN, e-mail, phone)
never leaves Graph. Name lookups are exact (`eq`), never `startswith`: `VM1`
must not find `VM10` (design §2). 404 on a read is "absent", on a delete "already
done". 429/503/504 are retried by the SDK's retry middleware, honouring
Retry-After; what still fails, and any 5xx or network error, becomes a
TransientError so the event or queue message is retried later.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import httpx
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from httpx_aiohttp import AiohttpTransport
from kiota_abstractions.api_client_builder import register_default_deserializer, register_default_serializer
from kiota_abstractions.api_error import APIError
from kiota_abstractions.method import Method
from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer_factory import JsonSerializationWriterFactory
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from responder.adapters._environment import environment_matters
from responder.adapters._errors import GRAPH, service_failure, status_failure
from responder.adapters.graph_batching import Answer, GraphBatching
from responder.adapters.graph_beta import GraphBeta
from responder.decisions.clouds import PUBLIC, Cloud
from responder.decisions.errors import RequestRefused, TransientError
from responder.decisions.facts import DeviceFinds, DeviceReads, EntraDevice, ManagedDevice
from responder.decisions.graph_documents import entra_device_from_json, managed_device_from_json, policy_from_json
from responder.decisions.intune_policies import COMPLIANCE, CONFIGURATION, Policy, with_filters
from responder.decisions.names import clip
from responder.decisions.suppression import Action, AddToGroup, RemoveFromGroup, SetAttribute, SyncDevice

# Retries inside one call; beyond them the whole event is retried later.
T = TypeVar("T")

MAX_RETRIES = 5
POLICY_CACHE_SECONDS = 300  # a policy assigned a moment ago reaches the checks within five minutes
TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 100
BATCH_LIMIT = 20  # requests per $batch (Microsoft Graph, "JSON batching")

MANAGED_DEVICE_FIELDS = [
    "id",
    "deviceName",
    "azureADDeviceId",
    "model",
    "enrolledDateTime",
    "lastSyncDateTime",
    "deviceEnrollmentType",
    "enrollmentProfileName",
    # read for assignment filters (`intune_policies.filter_properties`)
    "manufacturer",
    "osVersion",
    "managedDeviceOwnerType",
    "deviceCategoryDisplayName",
]
ENTRA_DEVICE_FIELDS = [
    "id",
    "deviceId",
    "displayName",
    "trustType",
    "physicalIds",
    "onPremisesSyncEnabled",
    "approximateLastSignInDateTime",
    "registrationDateTime",
]


def _session(trust: ssl.SSLContext) -> aiohttp.ClientSession:
    """aiohttp under msgraph's httpx client; honours HTTPS_PROXY/NO_PROXY as httpx would, when set."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust), trust_env=environment_matters())


def build_graph_directory(
    credential: AsyncTokenCredential,
    base_url: str,
    ca_file: str | None,
    transport: httpx.AsyncBaseTransport | None = None,
    cloud: Cloud = PUBLIC,
) -> GraphDeviceDirectory:
    """msgraph-sdk's request adapter on the real kiota HTTP stack, pointed at `base_url`.

    `ca_file` replaces the system trust store (the local simulators' CA); the
    token is only ever sent to the host of `base_url`, over HTTPS. `transport`
    replaces the network (tests that run the simulator in-process). `cloud` names the
    token's audience and the `@odata.id` root, whatever URL Graph is reached at.
    """
    host = urlsplit(base_url).hostname or ""
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[cloud.graph_scope], allowed_hosts=[host])
    # One trust context, handed to the transport too: it builds its own otherwise (a second load
    # of the CA bundle on every cold start), though the session below is what connects.
    trust = ssl.create_default_context(cafile=ca_file) if ca_file else httpx.create_ssl_context()
    # aiohttp under httpx: the azure-* clients already load it, and httpcore's stack
    # (h11, h2, anyio) would add ~50 ms to every cold start.
    wire = transport or AiohttpTransport(verify=trust, client=lambda: _session(trust))
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(timeout=TIMEOUT_SECONDS, transport=wire),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=MAX_RETRIES)},
    )
    # Graph speaks JSON: what the SDK's client registers for it (error bodies, $batch content).
    register_default_serializer(JsonSerializationWriterFactory)
    register_default_deserializer(JsonParseNodeFactory)
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base_url
    return GraphDeviceDirectory(adapter, http, wire, base_url, cloud)


class GraphDeviceDirectory:
    """Intune managed devices, Entra devices and group membership."""

    def __init__(
        self,
        adapter: RequestAdapter,
        http: httpx.AsyncClient,
        wire: httpx.AsyncBaseTransport,
        base_url: str,
        cloud: Cloud,
    ) -> None:
        self._adapter = adapter
        self._http = http
        self._wire = wire
        self._base_url = base_url.rstrip("/")
        # Graph beta, for what v1.0 doesn't describe (README, "Permissions"): every beta read is in graph_beta.
        self._beta_url = self._base_url.removesuffix("/v1.0") + "/beta"
        self._beta = GraphBeta(self._beta_request, self._pages)
        self._directory_root = cloud.directory_object_root
        self._batching = GraphBatching(adapter, self._base_url, self._json, MAX_RETRIES)
        self._policies: tuple[float, list[Policy]] | None = None  # when read, and what
        self._reading_policies = asyncio.Lock()  # concurrent checks share one read

    async def close(self) -> None:
        try:
            await self._http.aclose()
        finally:
            await self._wire.aclose()  # msgraph-core's middleware transport doesn't pass the close on

    # --- Intune -----------------------------------------------------------------

    async def get_managed_device(self, managed_device_id: str) -> ManagedDevice | None:
        information = self._request(Method.GET, _managed(managed_device_id), {"$select": MANAGED_DEVICE_FIELDS})
        document = await _absent_on_404(self._json(information))
        return managed_device_from_json(document) if document else None

    async def windows_virtual_machines(self) -> AsyncIterator[ManagedDevice]:
        """All Windows managed devices whose model is `Virtual Machine`, page by page."""
        async for device in self._managed_devices("operatingSystem eq 'Windows' and model eq 'Virtual Machine'"):
            if device.is_virtual_machine:
                yield device

    async def _managed_devices(self, odata_filter: str) -> AsyncIterator[ManagedDevice]:
        async for item in self._pages(self._managed_query(odata_filter)):
            yield managed_device_from_json(item)

    async def _pages(self, information: RequestInformation) -> AsyncIterator[dict[str, Any]]:
        """Every item of a collection, following `@odata.nextLink` (same headers on every page)."""
        while True:
            page = await self._json(information)
            for item in page.get("value", []):
                yield item
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return
            information.url = str(next_link)

    async def _json(self, information: RequestInformation) -> dict[str, Any]:
        """Send through the SDK's adapter and read the JSON as Graph wrote it.

        msgraph-sdk's models cost milliseconds of CPU per object to deserialize (its Entity
        deserializer builds a map of every Graph type each time); the responder needs a
        dozen fields and reads them here from the document.
        """
        raw: Any = await _call(self._adapter.send_primitive_async(information, "bytes", GRAPH_ERRORS))
        document = json.loads(raw or b"{}")
        return document if isinstance(document, dict) else {}

    def _request(
        self,
        method: Method,
        path: str,
        query: Mapping[str, str | Sequence[str]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> RequestInformation:
        """A request for `path` under the Graph version URL, as the generated builders make it."""
        information = RequestInformation()
        information.http_method = method
        information.url = f"{self._base_url}{path}" + (f"?{_query(query)}" if query else "")
        information.headers.try_add("Accept", "application/json")
        if body is not None:
            information.set_stream_content(json.dumps(body).encode(), "application/json")
        return information

    # --- batched: one call per round of lookups, per plan, per delete or verify --------

    async def read_devices(self, reads: DeviceReads) -> DeviceFinds:
        """Every lookup of one round in one `$batch` (20 to a call): Graph throttles each inside on its
        own, so a batch saves round trips, not operations."""
        requests: dict[str, RequestInformation] = {}
        for managed_id in reads.managed_ids:
            requests[f"m{len(requests)}"] = self._request(
                Method.GET, _managed(managed_id), {"$select": MANAGED_DEVICE_FIELDS}
            )
        for object_id in reads.entra_object_ids:
            requests[f"e{len(requests)}"] = self._request(
                Method.GET, _device(object_id), {"$select": ENTRA_DEVICE_FIELDS}
            )
        lists: dict[str, tuple[str, str]] = {}  # request key → (lookup kind, the value looked up)
        for spelling in reads.anchors:
            key = f"a{len(requests)}"
            requests[key], lists[key] = self._entra_query(_anchor_filter(spelling), advanced=True), ("a", spelling)
        for name in reads.names:
            key = f"n{len(requests)}"
            requests[key], lists[key] = self._managed_query(f"deviceName eq {_quote(name)}"), ("n", name)
        for device_id in reads.device_ids:
            key = f"d{len(requests)}"
            requests[key], lists[key] = self._entra_query(f"deviceId eq {_quote(device_id)}"), ("d", device_id)
        answers = await self._batched(requests)
        managed, entra = [], []
        by_anchor: dict[str, tuple[EntraDevice, ...]] = {}
        by_name: dict[str, tuple[ManagedDevice, ...]] = {}
        by_device_id: dict[str, tuple[EntraDevice, ...]] = {}
        for key, answer in answers.items():
            _refuse_unless(answer, {200, 404} if key[0] in "me" else {200})
            if key[0] == "m" and answer.status == 200 and answer.body:
                managed.append(managed_device_from_json(answer.body))
            elif key[0] == "e" and answer.status == 200 and answer.body:
                entra.append(entra_device_from_json(answer.body))
            elif key in lists:
                kind, value = lists[key]
                items = [item async for item in self._rest_of(answer.body or {}, requests[key])]
                if kind == "a":
                    marker = _anchor(value).lower()
                    found = [entra_device_from_json(item) for item in items]
                    by_anchor[value] = tuple(d for d in found if marker in (p.lower() for p in d.physical_ids))
                elif kind == "n":
                    found_managed = [managed_device_from_json(item) for item in items]
                    by_name[value] = tuple(d for d in found_managed if (d.device_name or "").lower() == value.lower())
                else:
                    by_device_id[value] = tuple(entra_device_from_json(item) for item in items)
        return DeviceFinds(tuple(managed), tuple(entra), by_anchor, by_name, by_device_id)

    async def apply(self, actions: Sequence[Action]) -> list[bool | RequestRefused]:
        """A plan's writes in one `$batch`, each answered on its own: True (done), False (already so),
        or the refusal (the rest still run); a throttle or outage Graph kept up raises TransientError."""
        requests = {str(index): self._write(action) for index, action in enumerate(actions)}
        try:
            answers = await self._batched(requests)
        except RequestRefused as refused:  # the batch itself (no token, say): every write in it refused alike
            return [refused for _ in actions]
        outcomes: list[bool | RequestRefused] = []
        for index, action in enumerate(actions):
            answer = answers[str(index)]
            already = _already_so(action, answer)
            if already is not None:
                outcomes.append(not already)
                continue
            try:
                _refuse_unless(answer, {200, 204})
            except RequestRefused as refused:
                outcomes.append(refused)
                continue
            outcomes.append(True)
        return outcomes

    def _write(self, action: Action) -> RequestInformation:
        match action:
            case AddToGroup(group_id, object_id):
                body = {"@odata.id": f"{self._directory_root}{object_id}"}
                return self._request(Method.POST, f"/groups/{_segment(group_id)}/members/$ref", body=body)
            case RemoveFromGroup(group_id, object_id):
                return self._request(Method.DELETE, f"/groups/{_segment(group_id)}/members/{_segment(object_id)}/$ref")
            case SetAttribute(object_id, number, value):
                return self._request(Method.PATCH, _device(object_id), body=_attribute_patch(number, value))
            case SyncDevice(managed_device_id):
                return self._request(Method.POST, f"{_managed(managed_device_id)}/syncDevice")

    async def _batched(self, requests: dict[str, RequestInformation]) -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        keys = list(requests)
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = {key: requests[key] for key in keys[start : start + BATCH_LIMIT]}
            answers.update(await self._batching.send(chunk))
        return answers

    async def _rest_of(self, page: dict[str, Any], information: RequestInformation) -> AsyncIterator[dict[str, Any]]:
        """A list answered inside a batch, and its further pages (read one by one: lookups rarely have any)."""
        for item in page.get("value", []):
            yield item
        next_link = page.get("@odata.nextLink")
        if next_link:
            information.url = str(next_link)
            async for item in self._pages(information):
                yield item

    # --- batched, for the cleanup worker (one call instead of two each) -----------

    async def delete_records(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]:
        """Delete the Intune record and/or the Entra object in one call; False: it was already gone."""
        requests = {}
        if managed_device_id:
            requests["managed"] = self._request(Method.DELETE, _managed(managed_device_id))
        if entra_object_id:
            requests["entra"] = self._request(Method.DELETE, _device(entra_object_id))
        answers = await self._batching.send(requests) if requests else {}
        for answer in answers.values():
            _refuse_unless(answer, {204, 404})
        return {key: answer.status == 204 for key, answer in answers.items()}

    async def records_exist(self, managed_device_id: str | None, entra_object_id: str | None) -> dict[str, bool]:
        """Read both again after a delete, in one call: True means it is still there."""
        requests = {}
        only_id = {"$select": ["id"]}  # only the status is read: no user, e-mail or phone leaves Graph
        if managed_device_id:
            requests["managed"] = self._request(Method.GET, _managed(managed_device_id), only_id)
        if entra_object_id:
            requests["entra"] = self._request(Method.GET, _device(entra_object_id), only_id)
        answers = await self._batching.send(requests) if requests else {}
        for answer in answers.values():
            _refuse_unless(answer, {200, 404})
        return {key: answer.status == 200 for key, answer in answers.items()}

    # --- Entra ------------------------------------------------------------------

    async def find_entra_devices(self, device_id: str) -> list[EntraDevice]:
        """Entra devices by `deviceId` (the `azureADDeviceId` of the Intune record)."""
        return [device async for device in self._entra_devices(f"deviceId eq {_quote(device_id)}")]

    async def _entra_devices(self, odata_filter: str, *, advanced: bool = False) -> AsyncIterator[EntraDevice]:
        async for item in self._pages(self._entra_query(odata_filter, advanced=advanced)):
            yield entra_device_from_json(item)

    def _entra_query(self, odata_filter: str, *, advanced: bool = False) -> RequestInformation:
        query: dict[str, str | Sequence[str]] = {
            "$filter": odata_filter,
            "$select": ENTRA_DEVICE_FIELDS,
            "$top": str(PAGE_SIZE),
        }
        if advanced:
            query["$count"] = "true"
        information = self._request(Method.GET, DEVICES, query)
        if advanced:  # filters on collections need Graph's advanced query capabilities
            information.headers.try_add("ConsistencyLevel", "eventual")
        return information

    def _managed_query(self, odata_filter: str) -> RequestInformation:
        query = {"$filter": odata_filter, "$select": MANAGED_DEVICE_FIELDS, "$top": str(PAGE_SIZE)}
        return self._request(Method.GET, MANAGED_DEVICES, query)

    # --- Intune policies, for the device-side check (read-only) ---------------------

    async def device_group_ids(self, object_id: str) -> frozenset[str]:
        """Every group the Entra device is in, directly or through nested groups."""
        query = {"$select": ["id"], "$top": str(PAGE_SIZE)}
        information = self._request(Method.GET, f"{_device(object_id)}/transitiveMemberOf", query)
        return frozenset(
            [
                str(item["id"]).lower()
                async for item in self._pages(information)
                if item.get("id") and str(item.get("@odata.type", GROUP_TYPE)).lower() == GROUP_TYPE
            ]
        )

    async def intune_policies(self) -> list[Policy]:
        """Every configuration profile and compliance policy, each with its assignments.

        Tenant-wide and the same for every device, so one read serves this process's checks
        for `POLICY_CACHE_SECONDS` (a burst of new session hosts costs one read, not one each).
        """
        async with self._reading_policies:
            now = time.monotonic()
            if self._policies is None or now - self._policies[0] >= POLICY_CACHE_SECONDS:
                self._policies = (now, await self._read_policies())
            return list(self._policies[1])

    async def _read_policies(self) -> list[Policy]:
        """v1.0 for what v1.0 describes; beta (`graph_beta`) for the profile types v1.0 lacks (Domain Join,
        Wi-Fi, DFCI), for settings catalog and Endpoint security policies (`configurationPolicies`, and the
        deprecated profiles in `intents`), for every
        assignment's target (beta's carries the assignment filter, v1.0's doesn't), and for the tenant's
        assignment filters, attached to each policy's targets (read only when some target names one)."""
        expand = {"$expand": "assignments"}
        v1 = [
            policy_from_json(item, category)
            for path, category in ((CONFIGURATIONS, CONFIGURATION), (COMPLIANCE_POLICIES, COMPLIANCE))
            async for item in self._pages(self._request(Method.GET, path, expand))
        ]
        profiles = await self._beta.profiles()
        catalog = [*await self._beta.configuration_policies(), *await self._beta.intents()]
        targets = {CONFIGURATION: profiles.targets, COMPLIANCE: await self._beta.compliance_targets()}
        found: dict[str, Policy] = {}
        for policy in v1:
            beta = targets[policy.category].get(policy.id)  # the same assignments, with their filters
            found.setdefault(policy.id, policy if beta is None else replace(policy, targets=beta))
        for policy in (*profiles.beta_only, *catalog):
            found.setdefault(policy.id, policy)
        if not any(target.filter_id for policy in found.values() for target in policy.targets):
            return list(found.values())
        filters = await self._beta.assignment_filters()
        return [with_filters(policy, filters) for policy in found.values()]

    def _beta_request(
        self, method: Method, path: str, query: Mapping[str, str | Sequence[str]] | None
    ) -> RequestInformation:
        information = self._request(method, path, query)
        information.url = information.url.replace(self._base_url, self._beta_url, 1)
        return information


def _anchor(resource_id: str) -> str:
    return f"[AzureResourceId]:{resource_id}"


def _anchor_filter(resource_id: str) -> str:
    return f"physicalIds/any(p:p eq {_quote(_anchor(resource_id))})"


def _attribute_patch(number: int, value: str | None) -> dict[str, Any]:
    if not 1 <= number <= 15:
        raise ValueError(f"extension attributes are numbered 1 to 15, not {number}")
    return {"extensionAttributes": {f"extensionAttribute{number}": value}}


def _already_so(action: Action, answer: Answer) -> bool | None:
    """True when Graph says the write had nothing to do (the member already added or already gone, the
    device already gone for a sync); None otherwise."""
    if isinstance(action, AddToGroup) and answer.status == 400:
        message = str(((answer.body or {}).get("error") or {}).get("message", ""))
        return True if "already exist" in message else None
    if isinstance(action, RemoveFromGroup | SyncDevice) and answer.status == 404:
        return True
    return None


def _refuse_unless(answer: Answer, expected: set[int]) -> None:
    if answer.status not in expected:
        message = str(((answer.body or {}).get("error") or {}).get("message", "")) or "no message"
        raise status_failure(answer.status, clip(message), GRAPH)


MANAGED_DEVICES = "/deviceManagement/managedDevices"
CONFIGURATIONS = "/deviceManagement/deviceConfigurations"
COMPLIANCE_POLICIES = "/deviceManagement/deviceCompliancePolicies"
GROUP_TYPE = "#microsoft.graph.group"
DEVICES = "/devices"
GRAPH_ERRORS: dict[str, Any] = {"XXX": ODataError}  # any error status: Graph's error body, parsed


def _managed(managed_device_id: str) -> str:
    return f"{MANAGED_DEVICES}/{_segment(managed_device_id)}"


def _device(object_id: str) -> str:
    return f"{DEVICES}/{_segment(object_id)}"


def _segment(value: str) -> str:
    """A path segment, percent-encoded as the request builders' URI templates do."""
    return quote(value, safe="")


def _query(query: Mapping[str, str | Sequence[str]]) -> str:
    """OData query options: lists (`$select`) comma-joined, everything percent-encoded."""
    pairs = {name: value if isinstance(value, str) else ",".join(value) for name, value in query.items()}
    return urlencode(pairs, quote_via=quote)


def _quote(value: str) -> str:
    """An OData string literal: single quotes, inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _message(problem: APIError) -> str:
    error = getattr(problem, "error", None)
    return str(getattr(error, "message", None) or problem.message or problem)


async def _call(operation: Awaitable[T]) -> T:  # noqa: UP047 (Python 3.11 stays importable for the benchmark)
    """Await a Graph call: what a later retry can fix becomes TransientError,
    any other refusal RequestRefused (no SDK exception leaves this module)."""
    try:
        return await operation
    except APIError as problem:
        raise status_failure(problem.response_status_code, clip(_message(problem)), GRAPH) from problem
    except (httpx.TransportError, aiohttp.ClientError) as problem:  # aiohttp's own: httpx-aiohttp lets some through
        raise TransientError(f"Microsoft Graph unreachable: {problem!r}", GRAPH) from problem
    except ClientAuthenticationError as problem:  # the identity could not get a token for Graph
        raise service_failure(problem, GRAPH) from problem


async def _absent_on_404(operation: Awaitable[T | None]) -> T | None:  # noqa: UP047
    try:
        return await _call(operation)
    except RequestRefused as refused:
        if refused.status == 404:
            return None
        raise
