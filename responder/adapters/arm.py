"""`responder.ports.Compute` over ARM's REST API, through azure-mgmt-core's pipeline.

Four read operations don't need the whole of azure-mgmt-compute and
azure-mgmt-desktopvirtualization: their generated operations and models cost
about 170 ms of imports on every cold start, for two GETs. The requests go
through `AsyncARMPipelineClient` with the policies those SDKs' clients use
(ARM challenge authentication, retry of 429/5xx honouring Retry-After, redirect,
resource-provider registration, logging), at the api-versions those SDK releases
send; the JSON ARM returns goes to `arm_documents`, which reads the documented
shapes (tests/test_arm_contract.py). 404 is a typed `Gone`; what still fails
after the retries becomes a TransientError or a refusal (`_errors`).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import policies
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import AsyncHttpResponse, HttpRequest
from azure.mgmt.core import AsyncARMPipelineClient
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.policies import (
    ARMHttpLoggingPolicy,
    AsyncARMAutoResourceProviderRegistrationPolicy,
    AsyncARMChallengeAuthenticationPolicy,
)
from azure.mgmt.core.tools import parse_resource_id

from responder.adapters._environment import environment_matters
from responder.adapters._errors import ARM, service_failure
from responder.adapters.host_pool_index import HostPoolIndex, Registration, Walk
from responder.decisions import arm_documents
from responder.decisions.clouds import PUBLIC, Cloud
from responder.decisions.errors import AccessDenied
from responder.decisions.facts import Gone, HostPool, ImageDefinition, OsDisk, VmFacts
from responder.decisions.model import VmRef

T = TypeVar("T")

RETRY_TOTAL = 5  # per call; beyond it the event or message is retried later
# The api-versions azure-mgmt-compute 39.0.0 and azure-mgmt-desktopvirtualization 2.0.0 send.
VIRTUAL_MACHINES_API = "2026-04-01"
GALLERIES_API = "2026-03-03"
DISKS_API = "2026-03-02"
DESKTOP_VIRTUALIZATION_API = "2024-04-03"
USER_AGENT = "intune-vm-responder"
HOST_POOL_INDEX_SECONDS = 15 * 60  # how long a walk of a subscription's host pools serves lookups
# A directly shared or community gallery's image definition, read in a subscription and region.
_LOCATED_IMAGE = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)"
    r"/(?P<kind>sharedGalleries|communityGalleries)/(?P<gallery>[^/]+)/images/(?P<image>[^/]+)",
    re.IGNORECASE,
)


class ArmCompute:
    """VMs, gallery images and AVD host pools, read with the app's identity."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        base_url: str,
        ca_file: str | None,
        cloud: Cloud = PUBLIC,
        host_pool_index_seconds: float = HOST_POOL_INDEX_SECONDS,
    ) -> None:
        self._credential = credential
        self.host_pools = HostPoolIndex(host_pool_index_seconds)
        self._base_url = base_url.rstrip("/")
        self._client_options: dict[str, Any] = {
            "base_url": base_url,
            "credential_scopes": [cloud.arm_scope],  # the cloud's ARM, wherever it is reached
            "retry_total": RETRY_TOTAL,
            "use_env_settings": environment_matters(),
        }
        if ca_file:
            self._client_options["connection_verify"] = ca_file
        transport = _trusting(ca_file) if ca_file else AioHttpTransport(use_env_settings=environment_matters())
        redirect = policies.AsyncRedirectPolicy()
        self._client: AsyncARMPipelineClient[HttpRequest, AsyncHttpResponse] = AsyncARMPipelineClient(
            base_url=self._base_url,
            transport=transport,
            policies=[  # the order of the generated management clients
                policies.RequestIdPolicy(),
                policies.HeadersPolicy(),
                policies.UserAgentPolicy(sdk_moniker=USER_AGENT),
                policies.ProxyPolicy(),
                policies.ContentDecodePolicy(),
                AsyncARMAutoResourceProviderRegistrationPolicy(),
                redirect,
                policies.AsyncRetryPolicy(retry_total=RETRY_TOTAL),
                AsyncARMChallengeAuthenticationPolicy(credential, cloud.arm_scope),
                policies.CustomHookPolicy(),
                policies.NetworkTraceLoggingPolicy(),
                policies.DistributedTracingPolicy(),
                policies.SensitiveHeaderCleanupPolicy(),
                ARMHttpLoggingPolicy(),
            ],
        )
        self._resources: dict[str, Any] = {}

    async def close(self) -> None:
        await self._client.close()
        for client in self._resources.values():
            await client.close()
        self._resources.clear()

    async def get_vm(self, vm: VmRef) -> VmFacts | Gone:
        path = (
            f"/subscriptions/{_segment(vm.subscription_id)}/resourceGroups/{_segment(vm.resource_group)}"
            f"/providers/Microsoft.Compute/virtualMachines/{_segment(vm.name)}"
        )
        document = await self._get(path, VIRTUAL_MACHINES_API, {"$expand": "instanceView"})
        return Gone(vm.resource_id) if document is None else arm_documents.vm_facts(document)

    async def get_image_definition(self, image_id: str) -> ImageDefinition | Gone:
        """A gallery image definition by its id (or a version's), or a shared or community gallery's
        at the path `arm_documents.image_definition_path` gives (SharedGalleryImages_Get and
        CommunityGalleryImages_Get, at the galleries' api-version)."""
        if located := _LOCATED_IMAGE.fullmatch(image_id.rstrip("/")):
            kind = "sharedGalleries" if located["kind"].lower() == "sharedgalleries" else "communityGalleries"
            path = (
                f"/subscriptions/{_segment(located['sub'])}/providers/Microsoft.Compute"
                f"/locations/{_segment(located['location'])}/{kind}/{_segment(located['gallery'])}"
                f"/images/{_segment(located['image'])}"
            )
            document = await self._get(path, GALLERIES_API)
            return Gone(image_id) if document is None else arm_documents.image_definition(document)
        definition_id = arm_documents.gallery_image_definition_id(image_id)
        parts = parse_resource_id(definition_id or "")
        if definition_id is None or not parts.get("child_name_1"):
            raise ValueError(f"not a gallery image: {image_id}")
        path = (
            f"/subscriptions/{_segment(parts['subscription'])}/resourceGroups/{_segment(parts['resource_group'])}"
            f"/providers/Microsoft.Compute/galleries/{_segment(parts['name'])}"
            f"/images/{_segment(parts['child_name_1'])}"
        )
        document = await self._get(path, GALLERIES_API)
        return Gone(definition_id) if document is None else arm_documents.image_definition(document)

    async def get_disk(self, disk_id: str) -> OsDisk | Gone:
        parts = parse_resource_id(disk_id)
        if str(parts.get("type", "")).lower() != "disks" or not parts.get("resource_group"):
            raise ValueError(f"not a managed disk: {disk_id}")
        path = (
            f"/subscriptions/{_segment(parts['subscription'])}/resourceGroups/{_segment(parts['resource_group'])}"
            f"/providers/Microsoft.Compute/disks/{_segment(parts['name'])}"
        )
        document = await self._get(path, DISKS_API)
        return Gone(disk_id) if document is None else arm_documents.os_disk(document)

    async def find_host_pool(self, vm: VmFacts) -> HostPool | None:
        """The AVD host pool the VM is a session host of, or None when it is not one.

        The proof is the pool's session host whose `resourceId` is the VM. Where to look comes first
        from this instance's index (`host_pools`) and from what the VM names itself (its pool's id in the
        `cm-resource-parent` tag, its name in the registration extension: `arm_documents.named_host_pools`),
        each proved with two GETs: the session host by name (`arm_documents.session_host_name`), then its
        pool. Only when neither holds the VM is the subscription walked (every pool, every session host),
        at most once per period per subscription and instance: a miss on a stale (or no) walk walks again,
        once. A refusal (403) is raised, as AccessDenied naming what was refused, only when no readable
        pool holds the VM."""
        wanted = vm.ref.resource_id
        subscription = vm.ref.subscription_id
        seen = self.host_pools.last(subscription)
        refused: AccessDenied | None = None
        tried: set[tuple[str, str]] = set()
        candidates: list[tuple[str, str]] = []
        if seen is not None and (entry := seen.hosts.get(wanted)) is not None:
            candidates.append((entry.pool.id, entry.session_host))
        if name := arm_documents.session_host_name(vm):
            candidates += [(pool, name) for pool in arm_documents.named_host_pools(vm)]
        for pool_id, host in candidates:
            if (pool_id.lower(), host.lower()) in tried:
                continue
            tried.add((pool_id.lower(), host.lower()))
            try:
                if (found := await self._prove(pool_id, host, wanted)) is not None:
                    return found
            except AccessDenied as denied:
                refused = refused or denied
        walk = seen
        if walk is None or not self.host_pools.is_fresh(walk):
            walk = await self.host_pools.refresh(subscription, lambda: self._walk(subscription), seen)
            if walk is not seen and (entry := walk.hosts.get(wanted)) is not None:
                return entry.pool  # seen during this lookup: as fresh as a proof
        refused = refused or walk.refused
        if refused is not None:
            raise refused
        return None

    async def _prove(self, pool_id: str, session_host: str, wanted: str) -> HostPool | None:
        """The pool, if its session host of that name is the VM `wanted` (a pooled host rebuilt under the
        same name is another VM until it registers again); two GETs, one when the session host isn't."""
        pool_path = _host_pool_path(pool_id)
        try:
            host = await self._get(f"{pool_path}/sessionHosts/{_segment(session_host)}", DESKTOP_VIRTUALIZATION_API)
        except AccessDenied as denied:
            raise _naming(denied, f"{pool_id}/sessionHosts") from denied
        registration = None if host is None else arm_documents.registration_of(host)
        if registration is None or registration[0] != wanted:
            return None
        try:
            pool = await self._get(pool_path, DESKTOP_VIRTUALIZATION_API)
        except AccessDenied as denied:
            raise _naming(denied, pool_id) from denied
        agent_version = (host.get("properties") or {}).get("agentVersion")
        return None if pool is None else arm_documents.host_pool(pool, agent_version=agent_version)

    async def _walk(self, subscription_id: str) -> Walk:
        """Every session host of the subscription's host pools: a pool whose session hosts ARM refuses to
        list is passed over, its refusal kept; a refused list of the pools themselves is kept too."""
        hosts: dict[str, Registration] = {}
        refused: AccessDenied | None = None
        pools = f"/subscriptions/{_segment(subscription_id)}/providers/Microsoft.DesktopVirtualization/hostPools"
        try:
            async for pool in self._list(pools, DESKTOP_VIRTUALIZATION_API):
                pool_id = str(pool.get("id", ""))
                try:
                    async for host in self._list(
                        f"{_host_pool_path(pool_id)}/sessionHosts", DESKTOP_VIRTUALIZATION_API
                    ):
                        if (registration := arm_documents.registration_of(host)) is not None:
                            agent_version = (host.get("properties") or {}).get("agentVersion")
                            found = arm_documents.host_pool(pool, agent_version=agent_version)
                            hosts[registration[0]] = Registration(found, registration[1])
                except AccessDenied as denied:
                    refused = refused or _naming(denied, f"{pool_id}/sessionHosts")
        except AccessDenied as denied:
            refused = refused or denied
        return Walk(hosts, refused)

    async def list_vms(self, subscription_id: str) -> AsyncIterator[VmFacts]:
        """Every VM of the subscription with its power state (`statusOnly=true`), paged."""
        path = f"/subscriptions/{_segment(subscription_id)}/providers/Microsoft.Compute/virtualMachines"
        async for document in self._list(path, VIRTUAL_MACHINES_API, {"statusOnly": "true"}):
            yield arm_documents.vm_facts(document)

    async def _get(self, path: str, api_version: str, params: dict[str, str] | None = None) -> Any:
        """The resource's JSON document, or None when ARM says it doesn't exist (404)."""
        request = _get(f"{self._base_url}{path}", {**(params or {}), "api-version": api_version})
        return await _call(self._fetch(request, absent_is_none=True))

    async def _list(self, path: str, api_version: str, params: dict[str, str] | None = None) -> AsyncIterator[Any]:
        """Items of an ARM collection, following `nextLink` (which carries its own api-version)."""
        request = _get(f"{self._base_url}{path}", {**(params or {}), "api-version": api_version})
        while True:
            page = await _call(self._fetch(request))
            for item in page.get("value") or []:
                yield item
            next_link = page.get("nextLink")
            if not next_link:
                return
            # As the management SDKs do (desktopvirtualization sets it on every page): our api-version.
            request = _get(str(next_link), {"api-version": api_version})

    async def _fetch(self, request: HttpRequest, absent_is_none: bool = False) -> Any:
        """The answer's JSON; an error answer as the azure-core exception ARM's error body makes."""
        response = await self._client.send_request(request)
        if response.status_code == 404 and absent_is_none:
            return None
        if response.status_code != 200:
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return response.json()

    async def merge_tags(self, vm: VmRef, tags: dict[str, str]) -> None:
        """Add or update tags on the VM without touching its others (Tags API, `Merge`).

        Needs the Tag Contributor role; used only when findings tagging is switched on.
        """
        from azure.mgmt.resource.resources.aio import ResourceManagementClient
        from azure.mgmt.resource.resources.models import Tags, TagsPatchResource

        if vm.subscription_id not in self._resources:
            self._resources[vm.subscription_id] = ResourceManagementClient(
                self._credential, vm.subscription_id, **self._client_options
            )
        client = self._resources[vm.subscription_id]
        patch = TagsPatchResource(operation="Merge", properties=Tags(tags=tags))
        poller = await _call(client.tags.begin_update_at_scope(vm.resource_id, patch))
        await _call(poller.result())


def _get(url: str, params: dict[str, str]) -> HttpRequest:
    """A GET as the generated operations send it: JSON accepted, `params` set on the query
    (replacing what the URL carries, as for a `nextLink`)."""
    parts = urlsplit(url)
    query = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
    query.update(params)
    return HttpRequest(
        "GET",
        urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), "")),
        headers={"Accept": "application/json"},
    )


def _host_pool_path(pool_id: str) -> str:
    """A host pool's path, its segments as the management SDKs quote them."""
    parts = parse_resource_id(pool_id)
    return (
        f"/subscriptions/{_segment(parts['subscription'])}/resourceGroups/{_segment(parts['resource_group'])}"
        f"/providers/Microsoft.DesktopVirtualization/hostPools/{_segment(parts['name'])}"
    )


def _naming(denied: AccessDenied, resource: str) -> AccessDenied:
    """The refusal, naming what was refused (the caller can't tell from the message alone)."""
    return AccessDenied(denied.status, denied.message, denied.service, resource, denied.role)


def _segment(value: Any) -> str:
    return quote(str(value), safe="")


async def _call(operation: Awaitable[T]) -> T:  # noqa: UP047 (Python 3.11 stays importable for the benchmark)
    try:
        return await operation
    except (ServiceRequestError, ServiceResponseError, HttpResponseError) as problem:
        raise service_failure(problem, ARM) from problem


def _trusting(ca_file: str) -> AioHttpTransport:
    """A transport that verifies ARM's TLS with the CA in `ca_file` (the local simulators' only).

    Handed the file's path, azure-core builds an SSL context from it for every request, and
    aiohttp, seeing a new context each time, opens a new connection: a TLS handshake per ARM call
    that Azure, verified through the trust store, never pays. One context, one session instead.
    """
    trust = ssl.create_default_context(cafile=ca_file)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust), trust_env=environment_matters())
    return AioHttpTransport(session=session, session_owner=True)
