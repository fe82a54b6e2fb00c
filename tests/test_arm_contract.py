"""The ARM simulator and the document reader against Microsoft's REST examples for
`Microsoft.Compute/virtualMachines` (api-version 2026-03-01), gallery image definitions (a
gallery's, and those shared directly or to the community: 2025-03-03) and Azure Virtual Desktop host
pools and session hosts (`Microsoft.DesktopVirtualization` 2025-10-10), vendored in tests/contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.mgmt.compute.models import CommunityGalleryImage, Disk, SharedGalleryImage, VirtualMachine

from localdev.arm_sim import ArmWorld
from localdev.simulators import load_seed
from responder.decisions import arm_documents
from responder.decisions.model import PowerState

EXAMPLES = Path(__file__).parent / "contracts" / "arm" / "Microsoft.Compute" / "2026-03-01"
GALLERY_EXAMPLES = EXAMPLES.parent / "2025-03-03"
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
# Free-form by definition: an extension's public settings and a resource's tags.
FREE_FORM = ("resources[].properties.settings.", "tags.")
# What every ARM resource carries (common-types `Resource`), though not every example shows it.
ARM_RESOURCE = {"id", "name", "type", "location"}
# The example of each kind of image definition, by the first segment of its id (uniqueId).
IMAGE_EXAMPLES = {
    "galleries": "GalleryImage_Get",
    "sharedgalleries": "SharedGalleryImage_Get",
    "communitygalleries": "CommunityGalleryImage_Get",
}


def example(name: str, folder: Path = EXAMPLES) -> Any:
    text = (folder / f"{name}.json").read_text().replace("{subscription-id}", SUB)
    return json.loads(text)["responses"]["200"]["body"]


def key_paths(value: Any, prefix: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            found |= {path, *key_paths(item, path)}
    elif isinstance(value, list):
        for item in value:
            found |= key_paths(item, f"{prefix}[]")
    return found


def test_the_simulated_vms_have_only_the_shapes_microsofts_examples_show() -> None:
    documented = key_paths(example("VirtualMachine_Get")) | {"properties.instanceView"}
    documented |= key_paths(example("VirtualMachine_Get_InstanceView"), "properties.instanceView")
    for item in example("VirtualMachine_ListAll_MaximumSet_Gen")["value"]:
        documented |= key_paths(item)

    for document in ArmWorld.from_seed(load_seed("sample")).vms.values():
        served = {path for path in key_paths(document) if not path.startswith(FREE_FORM)}
        assert served <= documented, (document["name"], sorted(served - documented))


def test_microsofts_vm_example_reads_through_the_sdk_model_as_the_simulators_do() -> None:
    body = example("VirtualMachine_Get")

    facts = arm_documents.vm_facts(VirtualMachine(body).as_dict())

    assert (facts.vm_id, facts.computer_name) == (body["properties"]["vmId"], "myVM")
    assert facts.arm_id == body["id"]
    assert facts.time_created is not None
    assert facts.power_state is PowerState.UNKNOWN  # no instance view asked for


def test_microsofts_instance_view_example_gives_the_power_state() -> None:
    body = example("VirtualMachine_Get")
    body["properties"]["instanceView"] = example("VirtualMachine_Get_InstanceView")

    facts = arm_documents.vm_facts(VirtualMachine(body).as_dict())

    codes = [status["code"] for status in body["properties"]["instanceView"]["statuses"]]
    power = next(code for code in codes if code.startswith("PowerState/")).removeprefix("PowerState/")
    assert facts.power_state.value == power


def test_the_simulated_image_definitions_have_only_the_shapes_microsofts_examples_show() -> None:
    world = ArmWorld.from_seed(load_seed("sample"))
    examples = {kind: example(name, GALLERY_EXAMPLES) for kind, name in IMAGE_EXAMPLES.items()}
    served = [("galleries", document) for document in world.gallery_images.values()]
    for document in world.located_images.values():
        served.append((document["identifier"]["uniqueId"].split("/")[1].lower(), document))

    assert {kind for kind, _ in served} == set(IMAGE_EXAMPLES)
    for kind, document in served:
        assert key_paths(document) <= key_paths(examples[kind]) | ARM_RESOURCE, (kind, document["name"])


def test_microsofts_shared_and_community_image_examples_read_through_the_sdk_model_with_their_os_state() -> None:
    for model, name in (
        (SharedGalleryImage, "SharedGalleryImage_Get"),
        (CommunityGalleryImage, "CommunityGalleryImage_Get"),
    ):
        body = example(name, GALLERY_EXAMPLES)

        definition = arm_documents.image_definition(model(body).as_dict())

        assert (definition.id, definition.os_type, definition.os_state) == (
            body["identifier"]["uniqueId"],
            "Windows",
            body["properties"]["osState"],
        )


def test_the_simulator_serves_a_shared_gallery_image_where_microsofts_example_is_asked_for() -> None:
    world = ArmWorld.from_seed(load_seed("sample"))
    body = example("SharedGalleryImage_Get", GALLERY_EXAMPLES)
    world.add_located_image(body)

    path = (
        f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/myLocation/sharedGalleries/galleryUniqueName"
        "/images/myGalleryImageName"
    )
    assert world.image_definition(path) == body


DISK_EXAMPLES = EXAMPLES.parent / "2025-01-02"


def test_the_simulated_os_disks_have_only_the_shapes_microsofts_example_shows() -> None:
    documented = key_paths(example("Disk_Get", DISK_EXAMPLES)) | {"properties.diskState"}  # an enum of Disk

    world = ArmWorld.from_seed(load_seed("sample"))
    assert world.disks
    for document in world.disks.values():
        served = {path for path in key_paths(document) if not path.startswith(FREE_FORM)}
        assert served <= documented, (document["name"], sorted(served - documented))


def test_microsofts_disk_example_reads_through_the_sdk_model_with_the_vm_it_is_attached_to() -> None:
    body = example("Disk_Get", DISK_EXAMPLES)

    disk = arm_documents.os_disk(Disk(body).as_dict())

    assert disk.id == body["id"].lower()
    assert disk.managed_by == body["managedBy"].lower()


def test_a_seeded_vm_boots_its_own_os_disk_and_a_deleted_one_leaves_it_kept_and_unattached() -> None:
    world = ArmWorld.from_seed(load_seed("sample"))
    vm_id = next(key for key in world.vms if key.endswith("/vm-win11-01"))
    disk_id = world.vms[vm_id]["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"].lower()
    assert world.disks[disk_id]["managedBy"].lower() == vm_id

    world.delete_vm(vm_id)

    assert "managedBy" not in world.disks[disk_id]
    assert world.disks[disk_id]["properties"]["diskState"] == "Unattached"


AVD_EXAMPLES = EXAMPLES.parent.parent / "Microsoft.DesktopVirtualization" / "2025-10-10"


def test_the_simulated_host_pools_and_session_hosts_have_only_the_shapes_microsofts_examples_show() -> None:
    world = ArmWorld.from_seed(load_seed("sample"))
    pool_shapes = key_paths(example("HostPool_Get", AVD_EXAMPLES))
    host_shapes = key_paths(example("SessionHost_Get", AVD_EXAMPLES))
    for item in example("SessionHost_List", AVD_EXAMPLES)["value"]:
        host_shapes |= key_paths(item)

    assert world.host_pools
    assert world.session_hosts
    for pool in world.host_pools.values():
        assert key_paths(pool) <= pool_shapes, (pool["name"], sorted(key_paths(pool) - pool_shapes))
    for host in world.session_hosts.values():
        assert key_paths(host) <= host_shapes, (host["name"], sorted(key_paths(host) - host_shapes))


def test_microsofts_session_host_example_names_its_vm_and_its_own_name() -> None:
    body = example("SessionHost_Get", AVD_EXAMPLES)

    assert arm_documents.registration_of(body) == (
        body["properties"]["resourceId"].lower(),
        "sessionHost1.microsoft.com",
    )


def test_microsofts_host_pool_example_reads_as_a_host_pool() -> None:
    body = example("HostPool_Get", AVD_EXAMPLES)

    pool = arm_documents.host_pool(body)

    assert (pool.id, pool.name, pool.host_pool_type, pool.load_balancer_type) == (
        body["id"],
        "hostPool1",
        "Pooled",
        "BreadthFirst",
    )
