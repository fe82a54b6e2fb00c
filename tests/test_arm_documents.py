"""Reading ARM documents into facts: pure, shared by the adapter and `check-vm`."""

from __future__ import annotations

import pytest

from responder.decisions.arm_documents import (
    DocumentError,
    gallery_image_definition_id,
    image_definition_path,
    power_state,
    unreadable,
    vm_facts,
)
from responder.decisions.model import PowerState


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("PowerState/running", PowerState.RUNNING),
        ("PowerState/starting", PowerState.RUNNING),
        ("PowerState/deallocated", PowerState.DEALLOCATED),
        ("PowerState/deallocating", PowerState.DEALLOCATED),
        ("PowerState/stopped", PowerState.STOPPED),
        ("PowerState/unknown", PowerState.UNKNOWN),
    ],
)
def test_the_instance_view_power_status_becomes_a_power_state(code: str, state: PowerState) -> None:
    view = {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": code}]}

    assert power_state(view) is state


def test_an_instance_view_without_a_power_status_is_unknown() -> None:
    assert power_state({}) is PowerState.UNKNOWN


def test_a_gallery_image_version_names_its_definition() -> None:
    version = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i/versions/1.0.0"

    assert gallery_image_definition_id(version) == version.removesuffix("/versions/1.0.0")


def test_a_managed_image_is_not_a_gallery_image() -> None:
    assert (
        gallery_image_definition_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/i") is None
    )


VM_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
GALLERY_IMAGE = "/subscriptions/g/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/gal/images/w"


def vm_from(image: dict[str, str], location: str | None = "westeurope") -> dict[str, object]:
    document: dict[str, object] = {"id": VM_ID, "properties": {"storageProfile": {"imageReference": image}}}
    return {**document, "location": location} if location else document


@pytest.mark.parametrize(
    ("image", "path"),
    [
        ({"id": f"{GALLERY_IMAGE}/versions/1.0.0"}, GALLERY_IMAGE),
        (
            {"sharedGalleryImageId": "/SharedGalleries/tenant-GAL/Images/w/Versions/latest"},
            "/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/sharedGalleries/tenant-GAL/images/w",
        ),
        (
            {"communityGalleryImageId": "/CommunityGalleries/public-1/Images/w/Versions/1.0.0"},
            "/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/communityGalleries/public-1/images/w",
        ),
        ({"publisher": "MicrosoftWindowsDesktop", "offer": "windows-11", "sku": "win11-23h2-ent"}, None),
        ({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/images/managed"}, None),
    ],
    ids=["gallery version", "shared gallery", "community gallery", "marketplace", "managed image"],
)
def test_a_gallery_images_definition_is_read_where_arm_serves_it(image: dict[str, str], path: str | None) -> None:
    assert image_definition_path(vm_facts(vm_from(image))) == path


def test_a_shared_gallery_image_can_be_read_only_in_the_vms_region() -> None:
    facts = vm_facts(vm_from({"sharedGalleryImageId": "/SharedGalleries/g/Images/w"}, location=None))

    assert image_definition_path(facts) is None


def test_a_refused_read_names_the_action_it_needs_and_the_scope_a_role_goes_on() -> None:
    gallery = unreadable(GALLERY_IMAGE, "403")
    shared = unreadable(
        "/subscriptions/s/providers/Microsoft.Compute/locations/westeurope/sharedGalleries/x/images/w", ""
    )

    assert (gallery.action, gallery.scope) == (
        "Microsoft.Compute/galleries/images/read",
        "/subscriptions/g/resourceGroups/rg-images",
    )
    assert (shared.action, shared.scope) == (
        "Microsoft.Compute/locations/sharedGalleries/images/read",
        "/subscriptions/s",
    )


def test_a_document_that_is_not_a_vm_is_refused() -> None:
    with pytest.raises(DocumentError, match="not a virtual machine"):
        vm_facts({"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/x"})


def test_tag_names_are_read_case_insensitively() -> None:
    facts = vm_facts(
        {
            "id": "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1",
            "tags": {"Intune-Responder": "ignore"},
        }
    )

    assert facts.tags == {"intune-responder": "ignore"}
    assert facts.ref.name == "vm1"
