"""A local Azure Resource Manager: the subset the responder reads, in ARM's JSON shapes.

Virtual machines (get with `$expand=instanceView`, list per subscription with
`statusOnly=true`, paged with `nextLink`), gallery image definitions (a gallery's,
and those shared directly or to the community, read by region), and Azure
Virtual Desktop host pools with their session hosts (the subscription's pools listed, one pool read,
a pool's session hosts listed or one read by name). Paths are matched
case-insensitively, as ARM does; a missing resource is ARM's 404
`ResourceNotFound`; a read in a scope the app has no role on (`unreadable_scopes`:
a central gallery's subscription, say) is ARM's 403 `AuthorizationFailed`. Tests
change the world between events (`set_power_state`, `delete_vm`) the way the
portal would.
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
_DISKS = r"/providers/microsoft\.compute/disks"
_LOCATED_IMAGE = (
    r"/providers/microsoft\.compute/locations/(?P<location>[^/]+)"
    r"/(?P<kind>sharedgalleries|communitygalleries)/(?P<gallery>[^/]+)/images/(?P<image>[^/]+)"
)
# The client ARM names in a refusal: the app's managed identity (the local one has no real id).
APP_CLIENT_ID = "00000000-0000-0000-0000-00000000a990"


@dataclass
class ArmWorld:
    """The resources the simulator serves, keyed by lower-cased resource id."""

    vms: dict[str, Json] = field(default_factory=dict)
    disks: dict[str, Json] = field(default_factory=dict)
    gallery_images: dict[str, Json] = field(default_factory=dict)
    host_pools: dict[str, Json] = field(default_factory=dict)
    served: set[str] = field(default_factory=set)  # VMs whose document was read while they existed (tests ask)
    session_hosts: dict[str, Json] = field(default_factory=dict)
    # Images shared directly or to the community, keyed by `located_image_key`: they have no
    # resource id, only `identifier.uniqueId`, and every subscription reads them in their region.
    located_images: dict[str, Json] = field(default_factory=dict)
    # Scopes (subscription or resource group ids, lower case) where the app's identity has no role,
    # and scopes inside them where it has one (Reader on a resource group, not on its subscription).
    unreadable_scopes: set[str] = field(default_factory=set)
    granted_scopes: set[str] = field(default_factory=set)

    @classmethod
    def from_seed(cls, seed: Json) -> ArmWorld:
        world = cls()
        for vm in seed.get("virtualMachines", []):
            world.put_vm(copy.deepcopy(vm))
        for image in seed.get("galleryImages", []):
            world.gallery_images[image["id"].lower()] = copy.deepcopy(image)
        for seeded_pool in seed.get("hostPools", []):
            pool = copy.deepcopy(seeded_pool)
            for host in pool.pop("sessionHosts", []):
                world.session_hosts[host["id"].lower()] = host
            world.host_pools[pool["id"].lower()] = pool
        for image in [*seed.get("sharedGalleryImages", []), *seed.get("communityGalleryImages", [])]:
            world.add_located_image(copy.deepcopy(image))
        world.unreadable_scopes.update(scope.lower() for scope in seed.get("unreadableScopes", []))
        world.granted_scopes.update(scope.lower() for scope in seed.get("grantedScopes", []))
        return world

    def add_located_image(self, document: Json) -> None:
        """A shared or community gallery image definition, in the shape of SharedGalleryImage_Get."""
        self.located_images[located_image_key(document["location"], document["identifier"]["uniqueId"])] = document

    def image_definition(self, path: str) -> Json | None:
        """The image definition ARM serves at `path`: a gallery's (at its resource id) or a located one."""
        lowered = path.rstrip("/").lower()
        if located := re.fullmatch(_SUB + _LOCATED_IMAGE, lowered):
            unique_id = f"/{located['kind']}/{located['gallery']}/images/{located['image']}"
            return self.located_images.get(located_image_key(located["location"], unique_id))
        return self.gallery_images.get(lowered)

    def refused_scope(self, path: str) -> str | None:
        """The unreadable scope `path` lies in, if any: roles are inherited, so a granted scope above wins."""
        lowered = f"{path.rstrip('/').lower()}/"
        if any(lowered.startswith(f"{scope}/") for scope in self.granted_scopes):
            return None
        return next((scope for scope in self.unreadable_scopes if lowered.startswith(f"{scope}/")), None)

    def set_power_state(self, vm_id: str, state: str) -> None:
        """`state` as ARM spells it after `PowerState/`: running, deallocated, stopped..."""
        statuses = self.vms[vm_id.lower()]["properties"]["instanceView"]["statuses"]
        statuses[:] = [status for status in statuses if not status["code"].startswith("PowerState/")]
        statuses.append({"code": f"PowerState/{state}", "level": "Info", "displayStatus": f"VM {state}"})

    def put_vm(self, document: Json) -> None:
        """Create (or re-create) a VM as ARM does: its managed OS disk exists and is attached to it.

        A document whose OS disk has no `managedDisk.id` gets the one ARM would give it (the disk's
        name in the VM's resource group); `createOption: Attach` re-attaches a kept disk."""
        vm_id = str(document["id"])
        os_disk = document["properties"]["storageProfile"]["osDisk"]
        managed = os_disk.setdefault("managedDisk", {})
        if "id" not in managed:
            group = vm_id.split("/providers/", maxsplit=1)[0]
            managed["id"] = (
                f"{group}/providers/Microsoft.Compute/disks/{os_disk.get('name') or document['name'] + '-osdisk'}"
            )
        disk_id = str(managed["id"])
        created = document["properties"].get("timeCreated")
        disk = self.disks.setdefault(disk_id.lower(), _disk(disk_id, os_disk, document.get("location"), created))
        disk["managedBy"] = vm_id
        disk["properties"]["diskState"] = "Attached"
        self.vms[vm_id.lower()] = document

    def create_vm(self, document: Json) -> None:
        """A VM created from an image: a new OS disk of its own, named as the portal names it."""
        os_disk = document["properties"]["storageProfile"]["osDisk"]
        os_disk.pop("managedDisk", {}).pop("id", None)
        os_disk["name"] = f"{document['name']}_OsDisk_{document['properties'].get('vmId', '')}"
        os_disk["createOption"] = "FromImage"
        self.put_vm(document)

    def swap_os_disk(self, vm_id: str, disk_id: str, created: str) -> None:
        """Change the OS disk a VM boots (an OS disk swap) for a new disk created at `created` (ISO 8601):
        the old disk is kept, unattached."""
        document = self.vms[vm_id.lower()]
        os_disk = document["properties"]["storageProfile"]["osDisk"]
        old = self.disks.get(str(os_disk["managedDisk"]["id"]).lower())
        if old is not None:
            old.pop("managedBy", None)
            old["properties"]["diskState"] = "Unattached"
        os_disk["managedDisk"] = {**os_disk["managedDisk"], "id": disk_id}
        os_disk["name"] = disk_id.rsplit("/", 1)[-1]
        self.disks[disk_id.lower()] = _disk(disk_id, os_disk, document.get("location"), created)
        self.put_vm(document)

    def move_vm(self, vm_id: str, resource_group: str) -> Json:
        """Move a VM and its OS disk to another resource group, as a resource move does: new resource
        ids, the same vmId, the disk still attached (the move itself is one action on the source group)."""
        document = self.vms.pop(vm_id.lower())
        moved = _in_group(str(document["id"]), resource_group)
        document["id"] = moved
        managed = document["properties"]["storageProfile"]["osDisk"]["managedDisk"]
        disk = self.disks.pop(str(managed["id"]).lower())
        disk["id"] = managed["id"] = _in_group(str(managed["id"]), resource_group)
        self.disks[str(disk["id"]).lower()] = disk
        self.put_vm(document)
        return document

    def delete_vm(self, vm_id: str) -> Json:
        """The VM goes; its OS disk goes with it only when `osDisk.deleteOption` is `Delete`."""
        document = self.vms.pop(vm_id.lower())
        os_disk = document["properties"]["storageProfile"]["osDisk"]
        disk_id = str((os_disk.get("managedDisk") or {}).get("id", "")).lower()
        if disk_id in self.disks:
            if str(os_disk.get("deleteOption", "Detach")).lower() == "delete":
                del self.disks[disk_id]
            else:
                self.disks[disk_id].pop("managedBy", None)
                self.disks[disk_id]["properties"]["diskState"] = "Unattached"
        return document


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
            (re.compile(_SUB + _LOCATED_IMAGE), self._get_located_image),
            (re.compile(_RG + _DISKS + r"/(?P<disk>[^/]+)"), self._get_disk),
            (re.compile(_SUB + _POOLS), self._list_host_pools),
            (re.compile(_RG + _POOLS + r"/(?P<pool>[^/]+)"), self._get_host_pool),
            (re.compile(_RG + _POOLS + r"/(?P<pool>[^/]+)/sessionhosts"), self._list_session_hosts),
            (re.compile(_RG + _POOLS + r"/(?P<pool>[^/]+)/sessionhosts/(?P<host>[^/]+)"), self._get_session_host),
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
                if self.world.refused_scope(path) is not None:
                    return _authorization_failed(request.path.rstrip("/"))
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
        self.world.served.add(path)
        body = copy.deepcopy(vm)
        if request.query.get("$expand", "").lower() != "instanceview":
            body["properties"].pop("instanceView", None)
        return Response(HTTPStatus.OK, body)

    def _list_vms(self, request: Request, path: str, sub: str) -> Response:
        vms = [copy.deepcopy(vm) for vm in self.world.vms.values() if _in_subscription(vm, sub)]
        self.world.served.update(str(vm["id"]).lower() for vm in vms)
        if request.query.get("statusOnly", "").lower() != "true":
            for vm in vms:
                vm["properties"].pop("instanceView", None)
        return self._page(request, vms)

    def _get_image(self, request: Request, path: str, **_: str) -> Response:
        image = self.world.gallery_images.get(path)
        return Response(HTTPStatus.OK, copy.deepcopy(image)) if image else _not_found(path)

    def _get_located_image(self, request: Request, path: str, **_: str) -> Response:
        document = self.world.image_definition(path)
        return Response(HTTPStatus.OK, copy.deepcopy(document)) if document else _not_found(path)

    def _get_disk(self, request: Request, path: str, **_: str) -> Response:
        disk = self.world.disks.get(path)
        return Response(HTTPStatus.OK, copy.deepcopy(disk)) if disk else _not_found(path)

    def _list_host_pools(self, request: Request, path: str, sub: str) -> Response:
        pools = [pool for pool in self.world.host_pools.values() if _in_subscription(pool, sub)]
        return self._page(request, pools)

    def _get_host_pool(self, request: Request, path: str, **_: str) -> Response:
        pool = self.world.host_pools.get(path)
        return Response(HTTPStatus.OK, copy.deepcopy(pool)) if pool else _not_found(path)

    def _get_session_host(self, request: Request, path: str, **_: str) -> Response:
        """One session host by name; under a pool that doesn't exist, ARM's 404 names the pool."""
        pool_id = path.rsplit("/sessionhosts/", 1)[0]
        if pool_id not in self.world.host_pools:
            return _not_found(pool_id)
        host = self.world.session_hosts.get(path)
        return Response(HTTPStatus.OK, copy.deepcopy(host)) if host else _not_found(path)

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


def _in_group(resource_id: str, resource_group: str) -> str:
    head, _, rest = resource_id.partition("/resourceGroups/")
    return f"{head}/resourceGroups/{resource_group}/{rest.split('/', 1)[1]}"


def _disk(disk_id: str, os_disk: Json, location: object, created: object) -> Json:
    """A managed disk document in the shape of Microsoft's `Disk_Get` example."""
    return {
        "id": disk_id,
        "name": disk_id.rsplit("/", 1)[-1],
        "type": "Microsoft.Compute/disks",
        "location": location or "westeurope",
        "sku": {"name": (os_disk.get("managedDisk") or {}).get("storageAccountType", "Premium_LRS")},
        "properties": {
            "osType": os_disk.get("osType", "Windows"),
            "creationData": {"createOption": "FromImage"},
            "diskState": "Attached",
            "provisioningState": "Succeeded",
            **({"timeCreated": created} if isinstance(created, str) else {}),
        },
    }


def located_image_key(location: str, unique_id: str) -> str:
    """`westeurope` + `/SharedGalleries/g/Images/i` → `westeurope/sharedgalleries/g/images/i`."""
    return f"{location.replace(' ', '')}/{unique_id.strip('/')}".lower()


def read_action(path: str) -> str:
    """The Azure RBAC action a GET of `path` needs: `Microsoft.Compute/galleries/images/read`."""
    parts = path.partition("/providers/")[2].split("/")
    return "/".join([parts[0], *parts[1::2], "read"]) if parts[0] else "Microsoft.Resources/subscriptions/read"


def _authorization_failed(path: str) -> Response:
    """ARM's refusal when the caller holds no role with the action at the resource's scope."""
    message = (
        f"The client '{APP_CLIENT_ID}' with object id '{APP_CLIENT_ID}' does not have authorization to perform "
        f"action '{read_action(path)}' over scope '{path}' or the scope is invalid. If access was recently "
        "granted, please refresh your credentials."
    )
    return Response(
        HTTPStatus.FORBIDDEN,
        {"error": {"code": "AuthorizationFailed", "message": message}},
        {"x-ms-failure-cause": "gateway"},
    )


def _in_subscription(resource: Json, subscription: str) -> bool:
    return str(resource["id"]).lower().startswith(f"/subscriptions/{subscription}/")


def _not_found(resource_id: str) -> Response:
    return error(HTTPStatus.NOT_FOUND, "ResourceNotFound", f"The Resource '{resource_id}' was not found.")
