"""ARM JSON documents → facts. Pure, so `check-vm VM.json` and the ARM adapter
read a VM the same way (the adapter hands over the document the SDK received)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.events import vm_ref_from_resource_id
from responder.facts import Extension, HostPool, ImageDefinition, ImageReference, OsDisk, Unreadable, VmFacts
from responder.model import PowerState, parse_moment

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
