"""`responder.ports.Compute` over azure-mgmt-compute and azure-mgmt-desktopvirtualization.

One management client per subscription, built on first use. 404 is a typed
`Gone`. azure-core's retry policy retries 429/5xx honouring Retry-After, a
bounded number of times; what still fails becomes a TransientError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.core.tools import parse_resource_id
from azure.mgmt.desktopvirtualization.aio import DesktopVirtualizationMgmtClient

from responder import arm_documents
from responder.adapters._errors import ARM, service_failure
from responder.clouds import PUBLIC, Cloud
from responder.facts import Gone, HostPool, ImageDefinition, VmFacts
from responder.model import VmRef

RETRY_TOTAL = 5  # per call; beyond it the event or message is retried later


class ArmCompute:
    """VMs, gallery images and AVD host pools, read with the app's identity."""

    def __init__(
        self, credential: AsyncTokenCredential, base_url: str, ca_file: str | None, cloud: Cloud = PUBLIC
    ) -> None:
        self._credential = credential
        self._client_options: dict[str, Any] = {
            "base_url": base_url,
            "credential_scopes": [cloud.arm_scope],  # the cloud's ARM, wherever it is reached
            "retry_total": RETRY_TOTAL,
        }
        if ca_file:
            self._client_options["connection_verify"] = ca_file
        self._compute: dict[str, ComputeManagementClient] = {}
        self._avd: dict[str, DesktopVirtualizationMgmtClient] = {}
        self._resources: dict[str, Any] = {}

    async def close(self) -> None:
        clients: list[Any] = [*self._compute.values(), *self._avd.values(), *self._resources.values()]
        for client in clients:
            await client.close()
        self._compute.clear()
        self._avd.clear()
        self._resources.clear()

    async def get_vm(self, vm: VmRef) -> VmFacts | Gone:
        compute = self._compute_client(vm.subscription_id)
        try:
            model = await _call(compute.virtual_machines.get(vm.resource_group, vm.name, expand="instanceView"))
        except ResourceNotFoundError:
            return Gone(vm.resource_id)
        return arm_documents.vm_facts(model.as_dict())

    async def get_image_definition(self, image_id: str) -> ImageDefinition | Gone:
        definition_id = arm_documents.gallery_image_definition_id(image_id)
        parts = parse_resource_id(definition_id or "")
        if definition_id is None or not parts.get("child_name_1"):
            raise ValueError(f"not a gallery image: {image_id}")
        compute = self._compute_client(str(parts["subscription"]))
        try:
            image = await _call(
                compute.gallery_images.get(str(parts["resource_group"]), str(parts["name"]), str(parts["child_name_1"]))
            )
        except ResourceNotFoundError:
            return Gone(definition_id)
        return arm_documents.image_definition(image.as_dict())

    async def find_host_pool(self, vm: VmRef) -> HostPool | None:
        """The AVD host pool the VM is a session host of, or None when it is not one."""
        avd = self._avd_client(vm.subscription_id)
        wanted = vm.resource_id
        async for pool in _iterate(avd.host_pools.list()):
            pool_parts = parse_resource_id(str(pool.id))
            hosts = avd.session_hosts.list(str(pool_parts["resource_group"]), str(pool.name))
            async for host in _iterate(hosts):
                if (host.resource_id or "").lower() == wanted:
                    document = {"id": pool.id, "name": pool.name, "properties": _pool_properties(pool)}
                    return arm_documents.host_pool(document, agent_version=host.agent_version)
        return None

    async def list_vms(self, subscription_id: str) -> AsyncIterator[VmFacts]:
        """Every VM of the subscription with its power state (`statusOnly=true`), paged."""
        compute = self._compute_client(subscription_id)
        async for vm in _iterate(compute.virtual_machines.list_all(status_only="true")):
            yield arm_documents.vm_facts(vm.as_dict())

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

    def _compute_client(self, subscription_id: str) -> ComputeManagementClient:
        if subscription_id not in self._compute:
            self._compute[subscription_id] = ComputeManagementClient(
                self._credential, subscription_id, **self._client_options
            )
        return self._compute[subscription_id]

    def _avd_client(self, subscription_id: str) -> DesktopVirtualizationMgmtClient:
        if subscription_id not in self._avd:
            self._avd[subscription_id] = DesktopVirtualizationMgmtClient(
                self._credential, subscription_id, **self._client_options
            )
        return self._avd[subscription_id]


def _pool_properties(pool: Any) -> dict[str, Any]:
    return {
        "hostPoolType": _text(pool.host_pool_type),
        "loadBalancerType": _text(pool.load_balancer_type),
        "personalDesktopAssignmentType": _text(pool.personal_desktop_assignment_type),
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


async def _call[T](operation: Awaitable[T]) -> T:
    try:
        return await operation
    except ResourceNotFoundError:
        raise
    except (ServiceRequestError, ServiceResponseError, HttpResponseError) as problem:
        raise service_failure(problem, ARM) from problem


async def _iterate(pages: Any) -> AsyncIterator[Any]:
    """Items of an SDK pager, with its failures mapped like single calls."""
    iterator = pages.__aiter__()
    while True:
        try:
            item = await _call(iterator.__anext__())
        except StopAsyncIteration:
            return
        yield item
