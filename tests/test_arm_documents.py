"""Reading ARM documents into facts: pure, shared by the adapter and `check-vm`."""

from __future__ import annotations

import pytest

from responder.arm_documents import DocumentError, gallery_image_definition_id, power_state, vm_facts
from responder.model import PowerState


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
