"""ARM JSON documents → facts. Pure, so `check-vm VM.json` and the ARM adapter
read a VM the same way (the adapter hands over the document the SDK received)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from responder.decisions.events import vm_ref_from_resource_id
from responder.decisions.facts import Extension, HostPool, ImageDefinition, ImageReference, OsDisk, Unreadable, VmFacts
from responder.decisions.model import PowerState, parse_moment

_POWER_STATES = {
    "running": PowerState.RUNNING,
    "starting": PowerState.RUNNING,
    "stopped": PowerState.STOPPED,
    "stopping": PowerState.STOPPED,
    "deallocated": PowerState.DEALLOCATED,
    "deallocating": PowerState.DEALLOCATED,
}


class DocumentError(ValueError):
    """The document is not an ARM virtual machine (or image, or host pool)."""


def vm_facts(document: Mapping[str, Any]) -> VmFacts:
    """Facts from `GET .../virtualMachines/{name}?$expand=instanceView` (or a list item)."""
    ref = vm_ref_from_resource_id(str(document.get("id", "")))
    if ref is None:
        raise DocumentError(f"not a virtual machine resource id: {document.get('id')!r}")
    properties = _object(document.get("properties"))
    storage = _object(properties.get("storageProfile"))
    os_disk = _object(storage.get("osDisk"))
    os_profile = _object(properties.get("osProfile"))
    instance_view = _object(properties.get("instanceView"))
    image = _object(storage.get("imageReference"))
    return VmFacts(
        ref=ref,
        arm_id=document.get("id") if isinstance(document.get("id"), str) else None,
        vm_id=properties.get("vmId"),
        computer_name=os_profile.get("computerName") or instance_view.get("computerName"),
        os_type=os_disk.get("osType"),
        power_state=power_state(instance_view),
        image=_image_reference(image) if image else None,
        os_disk_create_option=os_disk.get("createOption"),
        os_disk_id=_lower_id(_object(os_disk.get("managedDisk")).get("id")),
        extensions=tuple(_extension(item) for item in document.get("resources") or [] if _is_extension(item)),
        tags={str(name).lower(): str(value) for name, value in (document.get("tags") or {}).items()},
        os_name=instance_view.get("osName"),
        os_version=instance_view.get("osVersion"),
        time_created=parse_moment(properties.get("timeCreated")),
        location=document.get("location") if isinstance(document.get("location"), str) else None,
    )


def power_state(instance_view: Mapping[str, Any]) -> PowerState:
    """The `PowerState/...` status of an instance view; UNKNOWN when there is none."""
    for status in instance_view.get("statuses") or []:
        code = str(_object(status).get("code", ""))
        if code.lower().startswith("powerstate/"):
            return _POWER_STATES.get(code.split("/", 1)[1].lower(), PowerState.UNKNOWN)
    return PowerState.UNKNOWN


def os_disk(document: Mapping[str, Any]) -> OsDisk:
    """Facts from `GET .../disks/{name}`: `managedBy` (top level) names the VM it is attached to."""
    disk_id = _lower_id(document.get("id"))
    if disk_id is None:
        raise DocumentError(f"not a managed disk: {document.get('id')!r}")
    properties = _object(document.get("properties"))
    return OsDisk(
        id=disk_id,
        managed_by=_lower_id(document.get("managedBy")),
        time_created=parse_moment(properties.get("timeCreated")),
    )


def image_definition(document: Mapping[str, Any]) -> ImageDefinition:
    """A gallery image definition; a shared or community one has no `id`, only `identifier.uniqueId`."""
    properties = _object(document.get("properties"))
    return ImageDefinition(
        id=str(document.get("id") or _object(document.get("identifier")).get("uniqueId") or ""),
        os_type=properties.get("osType"),
        os_state=properties.get("osState"),
    )


def host_pool(document: Mapping[str, Any], agent_version: str | None = None) -> HostPool:
    properties = _object(document.get("properties"))
    return HostPool(
        id=str(document.get("id", "")),
        name=str(document.get("name", "")),
        host_pool_type=properties.get("hostPoolType"),
        load_balancer_type=properties.get("loadBalancerType"),
        agent_version=agent_version,
    )


# Microsoft Cost Management's parent tag: Microsoft's AVD tagging guidance puts the host pool's resource id
# there ("Use the cm-resource-parent tag to automatically group costs by host pool"). Tags are read lower case.
HOST_POOL_TAG = "cm-resource-parent"
_GROUP = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<group>[^/]+)"
_HOST_POOL_ID = re.compile(_GROUP + r"/providers/Microsoft\.DesktopVirtualization/hostPools/(?P<name>[^/]+)", re.I)
_REGISTRATION = "dsc"  # the AVD registration's extension type (Microsoft's AddSessionHost DSC configuration)
_DOMAIN_JOIN = "jsonaddomainextension"


def named_host_pools(vm: VmFacts) -> tuple[str, ...]:
    """The AVD host pools the VM itself names, as resource ids: where to look first, never a proof.

    The `cm-resource-parent` tag gives a pool's full id. The registration's DSC extension names the
    pool it registers the VM in by name alone (`hostPoolName`: Microsoft's AVD templates pass it in the
    public settings' `properties`, the DSC extension's older format; the current one has
    `configurationArguments`), read in the VM's own resource group: a pool elsewhere is missed there
    and found by the walk."""
    found: list[str] = []
    tagged = _HOST_POOL_ID.fullmatch(vm.tags.get(HOST_POOL_TAG, "").strip().rstrip("/"))
    if tagged:
        found.append(_host_pool_id(tagged["sub"], tagged["group"], tagged["name"]))
    own = re.match(_GROUP, vm.arm_id or "", re.IGNORECASE)  # ARM's spelling of the VM's resource group
    subscription, group = (own["sub"], own["group"]) if own else (vm.ref.subscription_id, vm.ref.resource_group)
    found += [_host_pool_id(subscription, group, name) for name in _registered_pool_names(vm)]
    unique: dict[str, str] = {}
    for pool in found:
        unique.setdefault(pool.lower(), pool)
    return tuple(unique.values())


def session_host_name(vm: VmFacts) -> str | None:
    """The name AVD's registration gives the VM's session host, as Microsoft's DSC configuration computes
    it (`GetAvdSessionHostName`, Azure/RDS-Templates): the DNS host name, then `.` and the domain when the
    machine is in one (not WORKGROUP). The domain is known here only from a JsonADDomainExtension's `name`;
    a machine joined otherwise, or with a DNS suffix of its own, registers under a name this misses."""
    if not vm.computer_name:
        return None
    domains = [
        value
        for extension in vm.extensions
        if extension.type.lower() == _DOMAIN_JOIN
        for key, value in extension.settings.items()
        if key.lower() == "name" and isinstance(value, str) and value.strip()
    ]
    return f"{vm.computer_name}.{domains[0].strip()}" if domains else vm.computer_name


def registration_of(document: Mapping[str, Any]) -> tuple[str, str] | None:
    """A session host document's VM (`properties.resourceId`, lower case) and its own name (the last segment
    of its id: list items of older api-versions are named `pool/host`)."""
    vm_id = _lower_id(_object(document.get("properties")).get("resourceId"))
    name = str(document.get("id") or document.get("name") or "").rstrip("/").rsplit("/", 1)[-1]
    return (vm_id, name) if vm_id and name else None


def _registered_pool_names(vm: VmFacts) -> Iterator[str]:
    for extension in vm.extensions:
        if extension.type.lower() != _REGISTRATION:
            continue
        for key, arguments in extension.settings.items():
            if key.lower() in {"properties", "configurationarguments"}:
                yield from _argument(arguments, "hostpoolname")


def _argument(arguments: Any, wanted: str) -> Iterator[str]:
    """A DSC configuration argument: `{"hostPoolName": ...}`, or the older `[{"Name": ..., "Value": ...}]`."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(arguments, Mapping):
        pairs = list(arguments.items())
    elif isinstance(arguments, list):
        items = [item for item in arguments if isinstance(item, Mapping)]
        pairs = [(item.get("Name", item.get("name")), item.get("Value", item.get("value"))) for item in items]
    for key, value in pairs:
        if str(key).lower() == wanted and isinstance(value, str) and value.strip() and "/" not in value:
            yield value.strip()


def _host_pool_id(subscription: str, group: str, name: str) -> str:
    group_id = f"/subscriptions/{subscription}/resourceGroups/{group}"
    return f"{group_id}/providers/Microsoft.DesktopVirtualization/hostPools/{name}"


def gallery_image_definition_id(image_id: str) -> str | None:
    """`.../galleries/g/images/i[/versions/v]` → `.../galleries/g/images/i`; None for other images."""
    parts = image_id.strip("/").split("/")
    lowered = [part.lower() for part in parts]
    if "galleries" not in lowered or "images" not in lowered:
        return None
    end = lowered.index("images") + 2
    return "/" + "/".join(parts[:end]) if end <= len(parts) else None


def image_definition_path(vm: VmFacts) -> str | None:
    """Where ARM serves the definition of the VM's gallery image (its `osState`), or None for other images.

    A gallery the VM's image id names is read at its own resource id; an image shared directly
    (`sharedGalleryImageId`) or to the community (`communityGalleryImageId`) is read in the VM's
    subscription and region: `.../locations/{location}/sharedGalleries/{name}/images/{image}`.
    """
    image = vm.image
    if image is None:
        return None
    if image.id and (definition_id := gallery_image_definition_id(image.id)) is not None:
        return definition_id
    for unique_id, collection in (
        (image.shared_gallery_image_id, "sharedGalleries"),
        (image.community_gallery_image_id, "communityGalleries"),
    ):
        parts = (unique_id or "").strip("/").split("/")
        if vm.location and len(parts) >= 4 and parts[2].lower() == "images":
            return (
                f"/subscriptions/{vm.ref.subscription_id}/providers/Microsoft.Compute/locations/{vm.location}"
                f"/{collection}/{parts[1]}/images/{parts[3]}"
            )
    return None


def unreadable(resource_id: str, refusal: str) -> Unreadable:
    """What ARM's 403 for `resource_id` means to an admin: the read action it needs, and where a
    role that holds it (Reader) goes: the resource's resource group, else its subscription."""
    head, _, tail = resource_id.partition("/providers/")
    parts = tail.split("/")
    types = [parts[0], *parts[1::2]] if parts[0] else ["*"]
    return Unreadable(resource_id=resource_id, action="/".join([*types, "read"]), scope=head, refusal=refusal)


def _image_reference(image: Mapping[str, Any]) -> ImageReference:
    return ImageReference(
        publisher=image.get("publisher"),
        offer=image.get("offer"),
        sku=image.get("sku"),
        id=image.get("id"),
        shared_gallery_image_id=image.get("sharedGalleryImageId"),
        community_gallery_image_id=image.get("communityGalleryImageId"),
    )


def _is_extension(item: Any) -> bool:
    kind = str(item.get("type", "")) if isinstance(item, Mapping) else ""
    return kind.lower().endswith("virtualmachines/extensions")


def _extension(item: Mapping[str, Any]) -> Extension:
    properties = _object(item.get("properties"))
    return Extension(
        name=str(item.get("name", "")),
        publisher=str(properties.get("publisher", "")),
        type=str(properties.get("type", "")),
        settings=_object(properties.get("settings")),
    )


def _lower_id(value: Any) -> str | None:
    """A resource id as compared and stored here: lower case, no trailing slash (ARM ids are case-insensitive)."""
    if not isinstance(value, str):
        return None
    return value.strip().rstrip("/").lower() or None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
