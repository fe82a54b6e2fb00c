"""Gather the records that could be a VM's, and let `responder.decisions.ownership` judge them (design §2).

The lookups, strongest first: the ids the ledger saved (for whichever vmId; the
decision knows whether they still count), the Entra devices whose `physicalIds`
name the VM's resource id, and the Intune records whose name is *exactly* the
VM's computer name, with every Entra object their `azureADDeviceId` names (all of
them: two objects with one deviceId are a finding, not a pick). Only ARM's
computer name is searched for, never the resource name.
"""

from __future__ import annotations

from datetime import datetime

from responder.decisions.facts import DeviceReads, EntraDevice, ManagedDevice, OsDisk, VmFacts
from responder.decisions.model import DeviceMapping, VmRecord
from responder.decisions.ownership import Ownership, Subject, decide_ownership, device_id_of
from responder.ports import Compute, DeviceDirectory


def subject_of(record: VmRecord) -> Subject:
    """The VM the row describes, as the ownership proof needs it."""
    return Subject(record.ref, record.incarnation)


async def installation_since(record: VmRecord, facts: VmFacts, compute: Compute) -> datetime | None:
    """When the VM's OS disk was created (ARM), read only while the row doesn't date this disk: a record
    enrolled before it belongs to another installation (an OS disk swapped in), and one enrolled after an
    older attached disk was created may be this one's (re-created from a kept disk)."""
    known = record.incarnation
    if not facts.os_disk_id or (known.os_disk_id == facts.os_disk_id and known.machine_since is not None):
        return None
    disk = await compute.get_disk(facts.os_disk_id)
    return disk.time_created if isinstance(disk, OsDisk) else None


async def find_own_device(
    subject: Subject,
    known: DeviceMapping | None,
    directory: DeviceDirectory,
    *,
    quiet_since: datetime | None = None,
) -> Ownership:
    managed, entra = await gather_candidates(subject, known, directory)
    return decide_ownership(subject, managed, entra, known=known, quiet_since=quiet_since)


async def gather_candidates(
    subject: Subject, known: DeviceMapping | None, directory: DeviceDirectory
) -> tuple[list[ManagedDevice], list[EntraDevice]]:
    """Every lookup that can be made at once goes in one round (one Graph `$batch`); a round follows only
    for what the last one named: an anchored object's other name, an Intune record's Entra `deviceId`,
    or a learnt record the searches didn't return (renamed, or its `deviceId` never saved). For a VM
    whose device the ledger learnt that is one round, of three lookups."""
    managed: dict[str, ManagedDevice] = {}
    entra: dict[str, EntraDevice] = {}
    anchored: dict[str, EntraDevice] = {}
    names_searched: set[str] = set()
    ids_searched: set[str] = set()
    learnt_read = False
    reads = DeviceReads(
        anchors=subject.anchor_spellings,
        names=(name.lower(),) if (name := subject.incarnation.computer_name) else (),
        device_ids=(known.entra_device_id.lower(),) if known is not None and known.entra_device_id else (),
    )
    while not reads.empty:
        found = await directory.read_devices(reads)
        names_searched.update(reads.names)
        ids_searched.update(reads.device_ids)
        managed.update((record.id, record) for record in found.managed)
        for records in found.by_name.values():
            managed.update((record.id, record) for record in records)
        for objects in (found.entra, *found.by_anchor.values(), *found.by_device_id.values()):
            entra.update((obj.object_id, obj) for obj in objects)
        for objects in found.by_anchor.values():
            anchored.update((obj.object_id, obj) for obj in objects)
        # The name Entra gives an anchored object, when it isn't ARM's computer name.
        names = {obj.display_name.lower() for obj in anchored.values() if obj.display_name} - names_searched
        # Every Entra object each VM record links to, so a shared deviceId shows.
        linked = {
            linked for record in managed.values() if record.is_virtual_machine and (linked := device_id_of(record))
        } - ids_searched
        managed_ids: tuple[str, ...] = ()
        object_ids: tuple[str, ...] = ()
        if known is not None and not learnt_read:  # the ledger's ids, when the searches didn't return them
            learnt_read = True
            managed_ids = tuple(found for found in (known.managed_device_id,) if found and found not in managed)
            object_ids = tuple(found for found in (known.entra_object_id,) if found and found not in entra)
        reads = DeviceReads(managed_ids, object_ids, (), tuple(sorted(names)), tuple(sorted(linked)))
    return list(managed.values()), list(entra.values())
