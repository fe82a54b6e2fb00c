"""The world the stateful model test drives: VMs in ARM, their records in Intune and Entra,
and the truth of whose each record is, which the product never sees.

The world changes as Azure would (deallocate, start, delete with or without the OS
disk, re-create from an image or by attaching the kept OS disk, enrol, check in) and
each change emits the ARM event Event Grid would deliver. A device belongs to a
Windows installation, which lives on its OS disk: a VM re-created from the kept disk
boots the same device (`Truth.disk`). The oracle (`Oracle`) reads the Graph
simulator's log of writes and says which were wrong.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from localdev.arm_sim import ArmWorld
from localdev.graph_sim import GraphTenant
from localdev.sim_http import Request
from responder.decisions.model import VmRef

SUB_A = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"  # watched and allowed
SUB_B = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"  # another subscription: outside the allow-list
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
SUB_IMAGES = "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a"  # shared services: a central gallery the app may not read
CENTRAL_IMAGE = (
    f"/subscriptions/{SUB_IMAGES}/resourceGroups/rg-gallery/providers/Microsoft.Compute/galleries/central"
    "/images/win11-avd/versions/1.0.0"
)
ATTRIBUTE = 7
OPT_OUT = {"intune-responder": "ignore"}
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)

OPERATIONS = {
    "write": ("Microsoft.Resources.ResourceWriteSuccess", "Microsoft.Compute/virtualMachines/write"),
    "extension-write": (
        "Microsoft.Resources.ResourceWriteSuccess",
        "Microsoft.Compute/virtualMachines/extensions/write",
    ),
    "deallocate": ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.Compute/virtualMachines/deallocate/action"),
    "start": ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.Compute/virtualMachines/start/action"),
    "restart": ("Microsoft.Resources.ResourceActionSuccess", "Microsoft.Compute/virtualMachines/restart/action"),
    "delete": ("Microsoft.Resources.ResourceDeleteSuccess", "Microsoft.Compute/virtualMachines/delete"),
}


@dataclass
class Vm:
    """One VM resource id over its lives; `vm_id` names the current (or last) incarnation."""

    subscription: str
    resource_group: str
    name: str
    computer_name: str
    anchored: bool  # a hybrid VM's Entra object may lack the physicalIds anchor; an Entra-joined VM's always has it
    hybrid: bool  # AD-joined (hybrid), else Entra-joined
    opted_out: bool
    vm_id: str = ""
    created_at: datetime = T0
    exists: bool = True
    power: str = "running"
    disk: str = ""  # the installation the current (or last) incarnation boots: its OS disk's first id, lower case
    arm_disk: str = ""  # that disk's resource id now (a move changes it)
    kept_disk: bool = False  # the last incarnation's OS disk was kept when it was deleted
    disks: set[str] = field(default_factory=set)  # every installation this VM resource ever booted
    moved: bool = False
    former_ids: set[str] = field(default_factory=set)  # its resource ids before a move
    deleted_at: datetime | None = None  # when its last incarnation was deleted
    in_pieces: bool = False  # deployed as a template or the portal does: the VM first, its extensions later
    central_image: bool = False  # created from an image in a gallery of a subscription the app can't read
    extensions_to_land: list[dict[str, Any]] = field(default_factory=list)
    incarnations: int = 0

    @property
    def ref(self) -> VmRef:
        return VmRef(self.subscription, self.resource_group.lower(), self.name.lower())

    @property
    def arm_id(self) -> str:
        """As ARM spells it (and Entra's physicalIds store it): casing kept."""
        return VmRef(self.subscription, self.resource_group, self.name).arm_cased_id

    @property
    def in_scope(self) -> bool:
        return self.subscription == SUB_A and not self.opted_out


@dataclass(frozen=True)
class Truth:
    """Whose a record is: a Windows installation on a VM's OS disk (first booted by the incarnation
    resource id + vmId), or a physical PC."""

    kind: str  # "managed" | "entra"
    resource_id: str | None  # lower case; None: a physical PC
    vm_id: str | None
    hybrid: bool = False
    disk: str | None = None  # the OS disk the installation lives on, lower case


@dataclass
class PendingEvent:
    raw: dict[str, Any]
    vm: Vm
    kind: str
    vm_id: str  # the incarnation the event is about


class World:
    """ARM, Intune and Entra as they really are, plus the events on their way."""

    def __init__(self, arm: ArmWorld, tenant: GraphTenant, template: dict[str, Any], hybrid: dict[str, Any]) -> None:
        self.arm = arm
        self.tenant = tenant
        self.template = template  # an Entra-joined VM's ARM document
        self.hybrid_template = hybrid  # an AD-joined VM's
        self.now = T0
        self.vms: list[Vm] = []
        self.truth: dict[str, Truth] = {}  # record id → owner, for every record ever created
        self.pending: list[PendingEvent] = []
        self.delivered_deletions: set[str] = set()  # the vmIds whose delete event the product handled
        self.enrolled_disks: set[str] = set()  # installations with their device records
        self.arm.unreadable_scopes.add(f"/subscriptions/{SUB_IMAGES}")
        self.known_opted_out: set[str] = set()  # resource ids whose opt-out tag the product's ledger recorded
        self.deleted_while_booted: set[str] = set()  # installations whose VM was deleted while booting them
        self.last_booted_by: dict[str, str] = {}  # OS disk → the vmId of the last VM that booted it
        self._ids = itertools.count(1)

    # --- time -------------------------------------------------------------------

    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    # --- ARM ----------------------------------------------------------------------

    def add_vm(self, vm: Vm) -> None:
        """One AD domain: a hybrid VM can't take a computer name another hybrid VM holds."""
        if vm.hybrid and not self.hybrid_name_free(vm.computer_name, vm):
            vm.hybrid = False
        vm.anchored = vm.anchored or not vm.hybrid
        self.vms.append(vm)
        self.tick(7)  # VMs are created one after another
        self._incarnate(vm)

    def hybrid_name_free(self, name: str, vm: Vm) -> bool:
        return not any(
            other is not vm and other.hybrid and other.computer_name.lower() == name.lower() for other in self.vms
        )

    def _incarnate(self, vm: Vm, attach: str | None = None) -> None:
        """A new VM under the resource id: from the image (a new OS disk), or by attaching a kept one."""
        vm.incarnations += 1
        vm.vm_id = f"{vm.name.lower()}-{vm.subscription[:4]}-life{vm.incarnations}-{next(self._ids)}"
        vm.created_at = self.now
        vm.exists, vm.power = True, "running"
        disk = (
            attach
            or f"{vm.arm_id.split('/providers/')[0]}/providers/Microsoft.Compute/disks/{vm.name}_OsDisk_{vm.vm_id}"
        )
        if not attach:
            vm.disk = disk.lower()
        vm.arm_disk, vm.kept_disk = disk, False
        vm.disks.add(vm.disk)
        self.last_booted_by[vm.disk] = vm.vm_id
        document = _clone(self.hybrid_template if vm.hybrid else self.template)
        document["id"], document["name"] = vm.arm_id, vm.name
        for extension in document.get("resources", []):
            extension["id"] = f"{vm.arm_id}/extensions/{extension['name']}"
        document["tags"] = dict(OPT_OUT) if vm.opted_out else {}
        properties = document["properties"]
        properties["vmId"] = vm.vm_id
        properties["timeCreated"] = vm.created_at.isoformat()
        os_disk = properties["storageProfile"]["osDisk"]
        os_disk["name"] = disk.rsplit("/", 1)[-1]
        os_disk["managedDisk"] = {"storageAccountType": "Premium_LRS", "id": disk}
        os_disk["createOption"] = "Attach" if attach else "FromImage"
        if attach:
            # An attached disk brings its own installation: ARM has no osProfile for such a VM, and the
            # computer name it reports is the one the guest already had.
            properties.pop("osProfile", None)
            properties["storageProfile"].pop("imageReference", None)
        else:
            properties["osProfile"]["computerName"] = vm.computer_name
        properties["instanceView"]["computerName"] = vm.computer_name
        if vm.central_image and not attach:
            properties["storageProfile"]["imageReference"] = {"id": CENTRAL_IMAGE}
        if vm.in_pieces and not attach:
            vm.extensions_to_land, document["resources"] = document.get("resources", []), []
        self.arm.put_vm(document)
        self.arm.set_power_state(vm.ref.resource_id, "running")
        self.emit(vm, "write")

    def set_power(self, vm: Vm, action: str) -> bool:
        if not vm.exists:
            return False
        state = "deallocated" if action == "deallocate" else "running"
        if vm.power == state and action != "restart":
            return False
        vm.power = state
        self.arm.set_power_state(vm.ref.resource_id, state)
        self.emit(vm, action)
        return True

    def delete(self, vm: Vm, keep_disk: bool = False) -> bool:
        """The VM goes; its OS disk goes with it, or stays unattached (`osDisk.deleteOption`)."""
        if not vm.exists:
            return False
        vm.exists, vm.power, vm.deleted_at = False, "deleted", self.now
        self.deleted_while_booted.add(vm.disk)
        document = self.arm.vms[vm.ref.resource_id]
        document["properties"]["storageProfile"]["osDisk"]["deleteOption"] = "Detach" if keep_disk else "Delete"
        self.arm.delete_vm(vm.ref.resource_id)
        vm.kept_disk = keep_disk
        self.emit(vm, "delete")
        return True

    def recreate(self, vm: Vm, computer_name: str) -> bool:
        if vm.exists:
            return False
        if not vm.hybrid or self.hybrid_name_free(computer_name, vm):
            vm.computer_name = computer_name
        self._incarnate(vm)
        return True

    def reattach(self, vm: Vm) -> bool:
        """Created again by attaching the kept OS disk (to change zone or size family): the same
        Windows installation, so the same computer name and the same device, under a new vmId."""
        if vm.exists or not vm.kept_disk:
            return False
        self._incarnate(vm, attach=vm.arm_disk)
        return True

    def swap_disk(self, vm: Vm) -> bool:
        """Its OS disk swapped for a new one (another installation, which enrols anew): a VM write."""
        if not vm.exists:
            return False
        group = vm.arm_disk.split("/providers/", maxsplit=1)[0]
        disk = f"{group}/providers/Microsoft.Compute/disks/{vm.name}_Swapped_{next(self._ids)}"
        self.arm.swap_os_disk(vm.ref.resource_id, disk, self.now.isoformat())
        vm.disk, vm.arm_disk = disk.lower(), disk
        vm.disks.add(vm.disk)
        self.last_booted_by[vm.disk] = vm.vm_id
        self.emit(vm, "write")
        return True

    def move(self, vm: Vm) -> bool:
        """Moved to another resource group: a new resource id, the same vmId, OS disk and device (whose
        Entra object keeps the anchor to the old id). ARM's one event is an action on the source
        resource group, which no event subscription of the app admits: the app hears nothing."""
        if not vm.exists or vm.moved:
            return False
        old = vm.ref.resource_id
        vm.former_ids.add(old)
        vm.resource_group, vm.moved = f"{vm.resource_group}-moved", True
        document = self.arm.move_vm(old, vm.resource_group)
        vm.arm_disk = document["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
        return True

    def join_dynamic_group(self, vm: Vm, group_id: str) -> bool:
        """The Entra object of the installation the VM boots becomes a member of a dynamic group."""
        objects = [
            record_id
            for record_id, truth in self.truth.items()
            if truth.kind == "entra" and truth.disk == vm.disk and record_id in self.tenant.devices
        ]
        members = self.tenant.groups[group_id]["members"]
        added = [object_id for object_id in objects if object_id not in members]
        members.extend(added)
        return bool(added)

    def extensions_land(self, vm: Vm) -> bool:
        """The join and AVD extensions of a deployment in pieces, each its own write, minutes after the VM's."""
        if not vm.exists or not vm.extensions_to_land:
            return False
        landing, vm.extensions_to_land = vm.extensions_to_land, []
        self.arm.vms[vm.ref.resource_id]["resources"] = landing
        for extension in landing:
            self.emit(vm, "extension-write", child=f"/extensions/{extension['name']}")
        return True

    def twin_delete(self, vm: Vm) -> bool:
        """Event Grid reports the last deletion once more, under another event id, moments later."""
        if vm.exists or vm.deleted_at is None:
            return False
        self.emit(vm, "delete", at=vm.deleted_at + timedelta(seconds=20))
        return True

    def spurious_delete(self, vm: Vm) -> bool:
        """A delete event for a VM ARM still has (a delete that did not go through)."""
        if not vm.exists:
            return False
        self.emit(vm, "delete")
        return True

    # --- Intune and Entra -------------------------------------------------------

    def enrol(self, vm: Vm) -> bool:
        """The running VM joins Entra and enrols in Intune: one record each, owned by its installation."""
        if not vm.exists or vm.power != "running" or vm.disk in self.enrolled_disks or self.now <= vm.created_at:
            return False
        self.enrolled_disks.add(vm.disk)
        owner = {"resourceId": vm.ref.resource_id, "vmId": vm.vm_id}
        self._records(
            vm.computer_name,
            "Virtual Machine",
            owner,
            anchor=vm.arm_id if vm.anchored else None,
            hybrid=vm.hybrid,
            truth=(vm.ref.resource_id, vm.vm_id),
            disk=vm.disk,
        )
        return True

    def add_physical_pc(self, name: str) -> None:
        self._records(name, "Surface Laptop 5", "physical", anchor=None, hybrid=False, truth=(None, None))

    def _records(
        self,
        name: str,
        model: str,
        owner: Any,
        *,
        anchor: str | None,
        hybrid: bool,
        truth: tuple[str | None, str | None],
        disk: str | None = None,
    ) -> None:
        number = next(self._ids)
        managed_id, object_id, device_id = f"md-{number:04d}", f"obj-{number:04d}", f"dev-{number:04d}"
        moment = self.now.isoformat()
        self.tenant.managed_devices[managed_id] = {
            "id": managed_id,
            "deviceName": name,
            "model": model,
            "operatingSystem": "Windows",
            "azureADDeviceId": device_id,
            "enrolledDateTime": moment,
            "lastSyncDateTime": moment,
            "_owner": owner,
        }
        self.tenant.devices[object_id] = {
            "id": object_id,
            "deviceId": device_id,
            "displayName": name,
            "trustType": "ServerAd" if hybrid else "AzureAd",
            "onPremisesSyncEnabled": True if hybrid else None,
            "physicalIds": [f"[AzureResourceId]:{anchor}"] if anchor else [],
            "registrationDateTime": moment,
            "approximateLastSignInDateTime": moment,
            "extensionAttributes": {f"extensionAttribute{n}": None for n in range(1, 16)},
            "_owner": owner,
        }
        resource_id, vm_id = truth
        self.truth[managed_id] = Truth("managed", resource_id, vm_id, hybrid, disk)
        self.truth[object_id] = Truth("entra", resource_id, vm_id, hybrid, disk)

    def check_in(self) -> None:
        """Every running VM (and every physical PC) reports in."""
        moment = self.now.isoformat()
        for record_id, truth in self.truth.items():
            if truth.resource_id is not None and not self._running(truth):
                continue
            if truth.kind == "managed" and record_id in self.tenant.managed_devices:
                self.tenant.managed_devices[record_id]["lastSyncDateTime"] = moment
            if truth.kind == "entra" and record_id in self.tenant.devices:
                self.tenant.devices[record_id]["approximateLastSignInDateTime"] = moment

    def _running(self, truth: Truth) -> bool:
        vm = self.owner(truth)
        return self.machine_runs(truth) and vm is not None and vm.power == "running"

    def owner(self, truth: Truth) -> Vm | None:
        """The VM resource the record belongs to (its incarnation may be gone, the VM moved)."""
        if truth.disk is None:
            return None
        return next((vm for vm in self.vms if truth.disk in vm.disks), None)

    def machine_runs(self, truth: Truth) -> bool:
        """A VM boots the installation the record belongs to (its first VM, or one re-created on its disk)."""
        vm = self.owner(truth)
        return vm is not None and vm.exists and vm.disk == truth.disk

    def vm_exists(self, vm_id: str | None) -> bool:
        return any(vm.exists and vm.vm_id == vm_id for vm in self.vms)

    def last_vm_id(self, truth: Truth) -> str | None:
        """The vmId of the last VM that booted the record's installation."""
        return self.last_booted_by.get(truth.disk or "", truth.vm_id)

    # --- events -----------------------------------------------------------------

    def emit(self, vm: Vm, action: str, at: datetime | None = None, child: str = "") -> None:
        """`child`: a child resource of the VM's the operation was on (an extension)."""
        event_type, operation = OPERATIONS[action]
        subject = vm.arm_id + child
        event_id = f"evt-{next(self._ids):05d}"
        data = {
            "operationName": operation,
            "resourceUri": subject,
            "resourceProvider": "Microsoft.Compute",
            "status": "Succeeded",
            "subscriptionId": vm.subscription,
            "correlationId": f"corr-{event_id}",
        }
        moment = (at or self.now).isoformat().replace("+00:00", "Z")
        if len(self.pending) % 3 == 2:  # some deliveries in the CloudEvents schema
            raw = {
                "specversion": "1.0",
                "id": event_id,
                "source": f"/subscriptions/{vm.subscription}",
                "subject": subject,
                "type": event_type,
                "time": moment,
                "data": data,
            }
        else:
            raw = {
                "id": event_id,
                "topic": f"/subscriptions/{vm.subscription}",
                "subject": subject,
                "eventType": event_type,
                "eventTime": moment,
                "data": data,
                "dataVersion": "2",
            }
        self.pending.append(PendingEvent(raw, vm, action, vm.vm_id))


def _clone(document: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(document)


@dataclass
class Oracle:
    """Says which of the Graph writes a step made were wrong, by the ground truth."""

    world: World
    violations: list[str] = field(default_factory=list)

    def check(self, writes: list[Request], acting_for: Vm | None) -> None:
        for request in writes:
            problem = self._judge(request, acting_for)
            if problem:
                self.violations.append(f"{request.method} {request.path}: {problem}")

    def _judge(self, request: Request, acting_for: Vm | None) -> str | None:
        parts = request.path.strip("/").split("/")[1:]  # without "v1.0"
        kind, target = self._target(request, parts)
        if target is None:
            return None
        truth = self.world.truth.get(target)
        if truth is None:
            return f"{target} is no record the world holds"
        if truth.resource_id is None:
            return f"{kind} on a physical PC's record"
        vm = self.world.owner(truth)
        if vm is None or vm.subscription != SUB_A:
            return f"{kind} on a record of a VM outside the allow-lists"
        if vm.opted_out and (kind != "delete" or truth.resource_id in self.world.known_opted_out):
            # A deletion of a VM the product never recorded under the resource id its record is anchored
            # to (an estate older than it, events lost, moved since): its opt-out tag can't be known
            # there, and its cleanup says so.
            return f"{kind} on a record of a VM tagged to be left alone"
        if kind == "delete":
            if self.world.machine_runs(truth):
                return f"deleted a record of {truth.resource_id} ({truth.vm_id}), whose OS disk a VM boots"
            return None
        if acting_for is not None and (acting_for is not vm or vm.disk != truth.disk):
            return f"{kind} for {acting_for.ref.resource_id} landed on a record of {truth.resource_id} ({truth.vm_id})"
        if not self.world.machine_runs(truth):
            return f"{kind} on a record of a VM that no longer exists"
        if kind == "mark" and vm.power != "deallocated":
            return f"marked a record of a {vm.power} VM"
        if kind == "unmark" and vm.power == "deallocated":
            return "lifted the mark of a deallocated VM"
        return None

    @staticmethod
    def _target(request: Request, parts: list[str]) -> tuple[str, str | None]:
        if request.method == "DELETE" and len(parts) == 3 and parts[0] == "deviceManagement":
            return "delete", parts[2]
        if request.method == "DELETE" and len(parts) == 2 and parts[0] == "devices":
            return "delete", parts[1]
        if request.method == "POST" and parts[-1] == "$ref" and parts[0] == "groups":
            return "mark", str((request.body or {}).get("@odata.id", "")).rsplit("/", 1)[-1]
        if request.method == "DELETE" and parts[0] == "groups":
            return "unmark", parts[3]
        if request.method == "PATCH" and parts[0] == "devices":
            values = ((request.body or {}).get("extensionAttributes") or {}).values()
            return ("unmark" if all(value is None for value in values) else "mark"), parts[1]
        if request.method == "POST" and parts[-1] == "syncDevice":
            return "sync", parts[2]
        return "", None
