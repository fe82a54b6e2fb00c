"""Gather the records that could be a VM's, and let `responder.ownership` judge them (design §2).

The lookups, strongest first: the ids the ledger saved (for whichever vmId; the
decision knows whether they still count), the Entra devices whose `physicalIds`
name the VM's resource id, and the Intune records whose name is *exactly* the
VM's computer name, with every Entra object their `azureADDeviceId` names (all of
them: two objects with one deviceId are a finding, not a pick). Only ARM's
computer name is searched for, never the resource name.
"""

from __future__ import annotations

from datetime import datetime

from responder.facts import EntraDevice, ManagedDevice, OsDisk, VmFacts
from responder.model import VmRecord
from responder.ownership import Incarnation, KnownDevice, Ownership, decide_ownership, device_id_of
from responder.ports import Compute, DeviceDirectory


def incarnation_of(record: VmRecord) -> Incarnation:
    """A VM that boots an earlier VM's OS disk runs that VM's Windows installation: its device is as
    old as the installation, so 'enrolled before this VM was created' counts from the disk's first boot."""
    return Incarnation(
        record.ref,
        record.vm_id,
        record.computer_name,
        record.machine_since or record.created_at,
        record.join_kind,
        record.arm_id,
    )


async def installation_since(record: VmRecord, facts: VmFacts, compute: Compute) -> datetime | None:
    """When the VM's OS disk was created (ARM), read only while the row doesn't date this disk: a record
    enrolled before it belongs to another installation (an OS disk swapped in), and one enrolled after an
    older attached disk was created may be this one's (re-created from a kept disk)."""
    if not facts.os_disk_id or (record.os_disk_id == facts.os_disk_id and record.machine_since is not None):
        return None
    disk = await compute.get_disk(facts.os_disk_id)
    return disk.time_created if isinstance(disk, OsDisk) else None


def known_device_of(record: VmRecord) -> KnownDevice:
    return KnownDevice(record.device_vm_id, record.managed_device_id, record.entra_object_id, record.entra_device_id)


async def find_own_device(
    incarnation: Incarnation,
    known: KnownDevice | None,
    directory: DeviceDirectory,
    *,
    quiet_since: datetime | None = None,
) -> Ownership:
    managed, entra = await gather_candidates(incarnation, known, directory)
    return decide_ownership(incarnation, managed, entra, known=known, quiet_since=quiet_since)


async def gather_candidates(
    incarnation: Incarnation, known: KnownDevice | None, directory: DeviceDirectory
) -> tuple[list[ManagedDevice], list[EntraDevice]]:
    managed: dict[str, ManagedDevice] = {}
    entra: dict[str, EntraDevice] = {}

    def keep(*objects: EntraDevice) -> None:
        entra.update((obj.object_id, obj) for obj in objects)

    if known is not None:
        if known.managed_device_id and (record := await directory.get_managed_device(known.managed_device_id)):
            managed[record.id] = record
        if known.entra_object_id and (obj := await directory.get_entra_device(known.entra_object_id)):
            keep(obj)
    anchored = [
        obj
        for spelling in incarnation.anchor_spellings
        for obj in await directory.find_entra_devices_by_resource_id(spelling)
    ]
    keep(*anchored)
    # The computer name ARM reported; and, for an anchored object, the name Entra gives it.
    names = {incarnation.computer_name.lower()} if incarnation.computer_name else set()
    names.update(obj.display_name.lower() for obj in anchored if obj.display_name)
    for name in sorted(names):
        for record in await directory.find_managed_devices_by_name(name):
            managed[record.id] = record
    # Every Entra object each VM record links to, so a shared deviceId shows.
    linked_ids = {
        linked for record in managed.values() if record.is_virtual_machine and (linked := device_id_of(record))
    }
    if known is not None and known.entra_device_id:
        linked_ids.add(known.entra_device_id.lower())
    for linked in sorted(linked_ids):
        keep(*await directory.find_entra_devices(linked))
    return list(managed.values()), list(entra.values())
