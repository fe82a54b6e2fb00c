"""ARM JSON documents → facts. Pure, so `check-vm VM.json` and the ARM adapter
read a VM the same way (the adapter hands over the document the SDK received)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.events import vm_ref_from_resource_id
from responder.facts import Extension, HostPool, ImageDefinition, ImageReference, VmFacts
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
        extensions=tuple(_extension(item) for item in document.get("resources") or [] if _is_extension(item)),
        tags={str(name).lower(): str(value) for name, value in (document.get("tags") or {}).items()},
        os_name=instance_view.get("osName"),
        os_version=instance_view.get("osVersion"),
        time_created=parse_moment(properties.get("timeCreated")),
    )


def power_state(instance_view: Mapping[str, Any]) -> PowerState:
    """The `PowerState/...` status of an instance view; UNKNOWN when there is none."""
    for status in instance_view.get("statuses") or []:
        code = str(_object(status).get("code", ""))
        if code.lower().startswith("powerstate/"):
            return _POWER_STATES.get(code.split("/", 1)[1].lower(), PowerState.UNKNOWN)
    return PowerState.UNKNOWN


def image_definition(document: Mapping[str, Any]) -> ImageDefinition:
    properties = _object(document.get("properties"))
    return ImageDefinition(
        id=str(document.get("id", "")),
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


def _image_reference(image: Mapping[str, Any]) -> ImageReference:
    return ImageReference(
        publisher=image.get("publisher"),
        offer=image.get("offer"),
        sku=image.get("sku"),
        id=image.get("id"),
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


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
