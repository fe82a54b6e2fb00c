"""A local Azure Resource Manager: the subset the responder reads, in ARM's JSON shapes.

Virtual machines (get with `$expand=instanceView`, list per subscription with
`statusOnly=true`, paged with `nextLink`), gallery image definitions, and Azure
Virtual Desktop host pools with their session hosts. Paths are matched
case-insensitively, as ARM does; a missing resource is ARM's 404
`ResourceNotFound`. Tests change the world between events (`set_power_state`,
`delete_vm`) the way the portal would.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from localdev.sim_http import Request, Response, error

DEFAULT_PAGE_SIZE = 50
Json = dict[str, Any]

_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_RG = _SUB + r"/resourcegroups/(?P<rg>[^/]+)"
_VMS = r"/providers/microsoft\.compute/virtualmachines"
_IMAGE = r"/providers/microsoft\.compute/galleries/(?P<gallery>[^/]+)/images/(?P<image>[^/]+)"
_POOLS = r"/providers/microsoft\.desktopvirtualization/hostpools"


@dataclass
class ArmWorld:
    """The resources the simulator serves, keyed by lower-cased resource id."""

    vms: dict[str, Json] = field(default_factory=dict)
    gallery_images: dict[str, Json] = field(default_factory=dict)
    host_pools: dict[str, Json] = field(default_factory=dict)
    session_hosts: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def from_seed(cls, seed: Json) -> ArmWorld:
        world = cls()
        for vm in seed.get("virtualMachines", []):
            world.vms[vm["id"].lower()] = copy.deepcopy(vm)
        for image in seed.get("galleryImages", []):
            world.gallery_images[image["id"].lower()] = copy.deepcopy(image)
        for seeded_pool in seed.get("hostPools", []):
            pool = copy.deepcopy(seeded_pool)
            for host in pool.pop("sessionHosts", []):
                world.session_hosts[host["id"].lower()] = host
            world.host_pools[pool["id"].lower()] = pool
        return world

    def set_power_state(self, vm_id: str, state: str) -> None:
        """`state` as ARM spells it after `PowerState/`: running, deallocated, stopped..."""
        statuses = self.vms[vm_id.lower()]["properties"]["instanceView"]["statuses"]
        statuses[:] = [status for status in statuses if not status["code"].startswith("PowerState/")]
        statuses.append({"code": f"PowerState/{state}", "level": "Info", "displayStatus": f"VM {state}"})

    def delete_vm(self, vm_id: str) -> Json:
        return self.vms.pop(vm_id.lower())


class ArmSimulator:
    """Routes ARM requests to an `ArmWorld`."""

    def __init__(self, world: ArmWorld, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.world = world
        self.page_size = page_size
        self.base_url = ""
        self._routes: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(_RG + _VMS + r"/(?P<name>[^/]+)"), self._get_vm),
            (re.compile(_SUB + _VMS), self._list_vms),
            (re.compile(_RG + _IMAGE), self._get_image),
            (re.compile(_SUB + _POOLS), self._list_host_pools),
            (re.compile(_RG + _POOLS + r"/(?P<pool>[^/]+)/sessionhosts"), self._list_session_hosts),
        ]

    def __call__(self, request: Request) -> Response:
        if request.method == "PATCH" and request.path.lower().endswith("/providers/microsoft.resources/tags/default"):
            return self._patch_tags(request)
        if request.method != "GET":
            return error(HTTPStatus.METHOD_NOT_ALLOWED, "MethodNotAllowed", "the local ARM only reads, and writes tags")
        if "api-version" not in request.query:
            return error(HTTPStatus.BAD_REQUEST, "MissingApiVersionParameter", "api-version is required")
        path = request.path.rstrip("/").lower()
        for pattern, handler in self._routes:
            if match := pattern.fullmatch(path):
                return handler(request, path=path, **match.groupdict())
        return error(HTTPStatus.NOT_FOUND, "InvalidResourceType", f"no resource type for {request.path}")

    def _patch_tags(self, request: Request) -> Response:
        """The Tags API at a resource scope: `Merge` adds or updates, never removes."""
        scope = request.path.lower().removesuffix("/providers/microsoft.resources/tags/default")
        vm = self.world.vms.get(scope)
        if vm is None:
            return _not_found(scope)
        body = request.body or {}
        if body.get("operation") != "Merge":
            return error(HTTPStatus.BAD_REQUEST, "InvalidTagOperation", "the local ARM supports Merge only")
        vm.setdefault("tags", {}).update(body.get("properties", {}).get("tags", {}))
        tags_id = f"{vm['id']}/providers/Microsoft.Resources/tags/default"
        document = {"id": tags_id, "name": "default", "type": "Microsoft.Resources/tags"}
        return Response(HTTPStatus.OK, {**document, "properties": {"tags": dict(vm["tags"])}})

    def _get_vm(self, request: Request, path: str, **_: str) -> Response:
        vm = self.world.vms.get(path)
        if vm is None:
            return _not_found(path)
        body = copy.deepcopy(vm)
        if request.query.get("$expand", "").lower() != "instanceview":
            body["properties"].pop("instanceView", None)
        return Response(HTTPStatus.OK, body)

    def _list_vms(self, request: Request, path: str, sub: str) -> Response:
        vms = [copy.deepcopy(vm) for vm in self.world.vms.values() if _in_subscription(vm, sub)]
        if request.query.get("statusOnly", "").lower() != "true":
            for vm in vms:
                vm["properties"].pop("instanceView", None)
        return self._page(request, vms)

    def _get_image(self, request: Request, path: str, **_: str) -> Response:
        image = self.world.gallery_images.get(path)
        return Response(HTTPStatus.OK, copy.deepcopy(image)) if image else _not_found(path)

    def _list_host_pools(self, request: Request, path: str, sub: str) -> Response:
        pools = [pool for pool in self.world.host_pools.values() if _in_subscription(pool, sub)]
        return self._page(request, pools)

    def _list_session_hosts(self, request: Request, path: str, **_: str) -> Response:
        pool_id = path.removesuffix("/sessionhosts")
        if pool_id not in self.world.host_pools:
            return _not_found(pool_id)
        prefix = pool_id + "/sessionhosts/"
        hosts = [host for key, host in self.world.session_hosts.items() if key.startswith(prefix)]
        return self._page(request, hosts)

    def _page(self, request: Request, items: list[Json]) -> Response:
        query = dict(request.query)
        start = int(query.pop("$skiptoken", "0") or 0)
        body: Json = {"value": copy.deepcopy(items[start : start + self.page_size])}
        if start + self.page_size < len(items):
            query["$skiptoken"] = str(start + self.page_size)
            body["nextLink"] = f"{self.base_url}{request.path}?{urlencode(query)}"
        return Response(HTTPStatus.OK, body)


def _in_subscription(resource: Json, subscription: str) -> bool:
    return str(resource["id"]).lower().startswith(f"/subscriptions/{subscription}/")


def _not_found(resource_id: str) -> Response:
    return error(HTTPStatus.NOT_FOUND, "ResourceNotFound", f"The Resource '{resource_id}' was not found.")
