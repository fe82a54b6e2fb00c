"""What the responder learns from ARM and Microsoft Graph, as plain values.

The adapters translate SDK models into these; the decision code reads only
these, so it never depends on an SDK and tests can build facts by hand. Only
the fields a decision needs are carried: no user names, no e-mail addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from responder.decisions.model import PowerState, VmRef


@dataclass(frozen=True, slots=True)
class Gone:
    """The resource does not exist (ARM or Graph answered 404)."""

    resource_id: str


@dataclass(frozen=True, slots=True)
class ImageReference:
    publisher: str | None = None
    offer: str | None = None
    sku: str | None = None
    id: str | None = None  # a gallery image (version) or managed image
    # Azure Compute Gallery images shared directly or to the community: /SharedGalleries/{gallery}/Images/{image}
    # [/Versions/{version}] and /CommunityGalleries/..., read where the VM is (`VmFacts.location`).
    shared_gallery_image_id: str | None = None
    community_gallery_image_id: str | None = None


@dataclass(frozen=True, slots=True)
class Extension:
    name: str
    publisher: str
    type: str
    settings: Mapping[str, Any] = field(default_factory=dict)  # public settings only


@dataclass(frozen=True, slots=True)
class VmFacts:
    """A VM's model and instance view, as `GET ...?$expand=instanceView` returns them."""

    ref: VmRef
    vm_id: str | None
    computer_name: str | None
    os_type: str | None  # "Windows" | "Linux"
    power_state: PowerState
    arm_id: str | None = None  # the resource id as ARM spells it (casing kept: Entra anchors keep it too)
    image: ImageReference | None = None
    os_disk_create_option: str | None = None  # FromImage | Attach | Copy ...
    os_disk_id: str | None = None  # the managed OS disk, lower case: the Windows installation, whichever VM boots it
    extensions: tuple[Extension, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    os_name: str | None = None
    os_version: str | None = None
    time_created: datetime | None = None
    location: str | None = None  # the VM's region: shared and community gallery images are read there


@dataclass(frozen=True, slots=True)
class OsDisk:
    """A managed disk as ARM reports it now: `managed_by` is the VM it is attached to (None: unattached).

    A VM deleted with its OS disk kept and re-created by attaching that disk boots the same
    Windows installation, so the same Entra and Intune device (design §5).
    """

    id: str
    managed_by: str | None  # the VM's resource id, lower case
    time_created: datetime | None = None  # when the disk, so the installation on it (or its copy), came to be


@dataclass(frozen=True, slots=True)
class ImageDefinition:
    id: str
    os_type: str | None
    os_state: str | None  # "Generalized" | "Specialized"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A resource ARM refused to show the app's identity (403): a rule that needed it could not check.

    `action` is the Azure RBAC action the read needs and `scope` where a role holding it (Reader
    does) would be assigned; `refusal` is ARM's answer, which names the exact scope it checked.
    """

    resource_id: str
    action: str
    scope: str
    refusal: str


@dataclass(frozen=True, slots=True)
class HostPool:
    id: str
    name: str
    host_pool_type: str | None  # "Personal" | "Pooled" | "BYODesktop"
    load_balancer_type: str | None
    agent_version: str | None = None  # of the session host that was looked up


@dataclass(frozen=True, slots=True)
class ManagedDevice:
    """An Intune managed device, reduced to what matching and guards need."""

    id: str
    device_name: str | None
    azure_ad_device_id: str | None
    model: str | None
    enrolled_at: datetime | None = None
    last_sync_at: datetime | None = None
    enrollment_type: str | None = None
    enrollment_profile_name: str | None = None  # the Autopilot profile it enrolled through, if any
    # What Intune's assignment filters test besides the name, model and enrolment profile.
    manufacturer: str | None = None
    os_version: str | None = None
    owner_type: str | None = None  # managedDeviceOwnerType: company | personal | unknown
    category: str | None = None  # deviceCategoryDisplayName

    @property
    def is_virtual_machine(self) -> bool:
        return (self.model or "").strip().lower() == "virtual machine"


@dataclass(frozen=True, slots=True)
class EntraDevice:
    """An Entra ID device object."""

    object_id: str
    device_id: str | None
    display_name: str | None
    trust_type: str | None  # "AzureAd" (joined) | "ServerAd" (hybrid) | "Workplace" (registered)
    physical_ids: tuple[str, ...] = ()
    on_premises_sync_enabled: bool = False
    last_sign_in_at: datetime | None = None
    registered_at: datetime | None = None

    @property
    def is_hybrid(self) -> bool:
        """Synced from on-premises AD: the on-premises object is the source of truth."""
        return self.on_premises_sync_enabled or (self.trust_type or "").lower() == "serverad"


@dataclass(frozen=True, slots=True)
class DeviceReads:
    """One round of lookups for the records that could be a VM's, sent together (one Graph `$batch`):
    by id (the ledger's), by `physicalIds` anchor (each spelling of the VM's resource id), by exact
    name, and by Entra `deviceId`."""

    managed_ids: tuple[str, ...] = ()
    entra_object_ids: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.managed_ids or self.entra_object_ids or self.anchors or self.names or self.device_ids)


@dataclass(frozen=True, slots=True)
class DeviceFinds:
    """What each lookup of a `DeviceReads` found (a record read by id and not found is absent)."""

    managed: tuple[ManagedDevice, ...] = ()
    entra: tuple[EntraDevice, ...] = ()
    by_anchor: Mapping[str, tuple[EntraDevice, ...]] = field(default_factory=dict)
    by_name: Mapping[str, tuple[ManagedDevice, ...]] = field(default_factory=dict)
    by_device_id: Mapping[str, tuple[EntraDevice, ...]] = field(default_factory=dict)
