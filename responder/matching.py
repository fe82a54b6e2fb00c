"""Which Intune/Entra device is this VM's? Strongest key first (SPEC §2).

1. the mapping the ledger captured earlier; 2. an Entra device whose
`physicalIds` names the VM's resource id; 3. an Intune device whose name is
*exactly* the VM's computer name, model `Virtual Machine`, confirmed through
its `azureADDeviceId`. Two or more candidates at any step: ambiguous, never a
guess. The lookups are here; what to do with the answer is decided elsewhere.
"""

from __future__ import annotations

from responder.model import VmRecord, VmRef
from responder.ports import DeviceDirectory
from responder.suppression import DeviceIds, DeviceMatch, NoDevice


async def resolve_device(
    vm: VmRef, computer_name: str | None, record: VmRecord, directory: DeviceDirectory
) -> DeviceMatch:
    if record.managed_device_id or record.entra_object_id:
        return DeviceIds(record.managed_device_id, record.entra_object_id, record.entra_device_id)

    by_resource = await directory.find_entra_devices_by_resource_id(vm.resource_id)
    if len(by_resource) > 1:
        names = ", ".join(device.object_id for device in by_resource)
        return NoDevice(f"{len(by_resource)} Entra devices name this VM in physicalIds ({names})", True)
    anchored = by_resource[0] if by_resource else None

    name = computer_name or (anchored.display_name if anchored else None)
    if not name:
        return NoDevice("the VM's computer name is unknown")
    candidates = [device for device in await directory.find_managed_devices_by_name(name) if device.is_virtual_machine]
    if anchored is not None:
        candidates = [device for device in candidates if device.azure_ad_device_id == anchored.device_id]
        managed = candidates[0].id if len(candidates) == 1 else None
        return DeviceIds(managed, anchored.object_id, anchored.device_id, anchored.is_hybrid)
    if not candidates:
        return NoDevice(f"no Intune device named {name!r} with model 'Virtual Machine'")
    if len(candidates) > 1:
        ids = ", ".join(device.id for device in candidates)
        return NoDevice(f"{len(candidates)} Intune devices are named {name!r} ({ids})", True)
    (managed_device,) = candidates
    if not managed_device.azure_ad_device_id:
        return DeviceIds(managed_device.id, None)
    entra = await directory.find_entra_devices(managed_device.azure_ad_device_id)
    if len(entra) > 1:
        return NoDevice(f"{len(entra)} Entra devices share deviceId {managed_device.azure_ad_device_id}", True)
    if not entra:
        return DeviceIds(managed_device.id, None, managed_device.azure_ad_device_id)
    (entra_device,) = entra
    return DeviceIds(managed_device.id, entra_device.object_id, entra_device.device_id, entra_device.is_hybrid)
