"""The ARM adapter (azure-mgmt-core's ARM pipeline) against the local ARM."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from localdev.simulators import Simulators
from responder.adapters.arm import GALLERIES_API, VIRTUAL_MACHINES_API
from responder.decisions.errors import AccessDenied, TransientError
from responder.decisions.facts import Gone, VmFacts
from responder.decisions.model import PowerState, VmRef
from responder.ports import Services

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GALLERY = f"/subscriptions/{SUB}/resourceGroups/rg-images/providers/Microsoft.Compute/galleries/gal_corp/images"
LOCATED = f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope"
SHARED = f"{LOCATED}/sharedGalleries/8f2c5e1a-0b3d-4e6f-9a7c-1d2e3f4a5b6c-FABRIKAMSHARED/images"
COMMUNITY = f"{LOCATED}/communityGalleries/northwind-5d1e2f3a-4b5c-4d6e-8f7a-9b0c1d2e3f4a/images"


def vm(name: str, resource_group: str = "rg-avd-prod") -> VmRef:
    return VmRef(SUB, resource_group, name)


async def read(services: Services, ref: VmRef) -> VmFacts:
    facts = await services.compute.get_vm(ref)
    assert isinstance(facts, VmFacts)
    return facts


async def test_a_vm_reads_with_its_image_extensions_and_power_state(services: Services) -> None:
    facts = await read(services, vm("vm-win11-01"))

    assert facts.computer_name == "vm-win11-01"
    assert facts.power_state is PowerState.RUNNING
    assert facts.image is not None
    assert (facts.image.publisher, facts.image.offer, facts.image.sku) == (
        "MicrosoftWindowsDesktop",
        "windows-11",
        "win11-23h2-ent",
    )
    assert [extension.type for extension in facts.extensions] == ["AADLoginForWindows"]


async def test_a_vm_is_read_with_its_instance_view(services: Services, simulators: Simulators) -> None:
    await read(services, vm("vm-win11-01"))

    (request,) = simulators.arm.calls("GET", "virtualMachines/vm-win11-01")
    assert request.query["$expand"] == "instanceView"


async def test_the_power_state_is_read_fresh_from_arm(services: Services, simulators: Simulators) -> None:
    simulators.world.set_power_state(vm("vm-win11-01").resource_id, "deallocated")

    assert (await read(services, vm("vm-win11-01"))).power_state is PowerState.DEALLOCATED


async def test_a_deleted_vm_reads_as_gone(services: Services, simulators: Simulators) -> None:
    simulators.world.delete_vm(vm("vm-win11-01").resource_id)

    assert await services.compute.get_vm(vm("vm-win11-01")) == Gone(vm("vm-win11-01").resource_id)


async def test_a_vm_in_a_missing_resource_group_reads_as_gone(services: Services) -> None:
    assert isinstance(await services.compute.get_vm(vm("vm-win11-01", "rg-nowhere")), Gone)


async def test_a_specialized_gallery_image_reads_as_specialized(services: Services) -> None:
    definition = await services.compute.get_image_definition(f"{GALLERY}/win11-golden-specialized/versions/1.0.0")

    assert not isinstance(definition, Gone)
    assert definition.os_state == "Specialized"


async def test_a_generalized_gallery_image_reads_as_generalized(services: Services) -> None:
    definition = await services.compute.get_image_definition(f"{GALLERY}/win11-golden")

    assert not isinstance(definition, Gone)
    assert definition.os_state == "Generalized"


async def test_a_missing_gallery_image_reads_as_gone(services: Services) -> None:
    assert isinstance(await services.compute.get_image_definition(f"{GALLERY}/retired-image"), Gone)


async def test_a_shared_gallery_image_definition_is_read_in_the_vms_subscription_and_region(
    services: Services, simulators: Simulators
) -> None:
    definition = await services.compute.get_image_definition(f"{SHARED}/win11-shared-specialized")

    assert not isinstance(definition, Gone)
    assert (definition.id, definition.os_state) == (
        "/SharedGalleries/8f2c5e1a-0b3d-4e6f-9a7c-1d2e3f4a5b6c-FABRIKAMSHARED/Images/win11-shared-specialized",
        "Specialized",
    )
    (request,) = simulators.arm.calls("GET", f"{SHARED}/win11-shared-specialized")
    assert request.query["api-version"] == GALLERIES_API


async def test_a_community_gallery_image_definition_is_read_in_the_vms_subscription_and_region(
    services: Services,
) -> None:
    definition = await services.compute.get_image_definition(f"{COMMUNITY}/win11-community-specialized")

    assert not isinstance(definition, Gone)
    assert definition.os_state == "Specialized"


async def test_a_missing_shared_gallery_image_reads_as_gone(services: Services) -> None:
    assert isinstance(await services.compute.get_image_definition(f"{SHARED}/retired-image"), Gone)


async def test_a_gallery_in_a_subscription_the_app_has_no_role_in_is_refused_once_not_retried(
    services: Services, simulators: Simulators
) -> None:
    simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}/resourcegroups/rg-images")

    with pytest.raises(AccessDenied) as refused:
        await services.compute.get_image_definition(f"{GALLERY}/win11-golden")

    assert refused.value.status == HTTPStatus.FORBIDDEN
    assert "(AuthorizationFailed) The client" in refused.value.message
    assert len(simulators.arm.calls("GET", "/galleries/")) == 1


async def test_a_host_pool_whose_session_hosts_are_refused_is_passed_over(
    services: Services, simulators: Simulators
) -> None:
    pools = f"/subscriptions/{SUB}/resourcegroups/rg-avd-prod/providers/microsoft.desktopvirtualization/hostpools"
    simulators.world.unreadable_scopes.add(f"{pools}/hp-personal")  # its session hosts can't be listed

    pool = await services.compute.find_host_pool(await read(services, vm("avd-pooled-01", "rg-avd-pool")))

    assert pool is not None
    assert pool.name == "hp-pooled"
    with pytest.raises(AccessDenied) as refused:
        await services.compute.find_host_pool(await read(services, vm("avd-personal-03")))
    assert refused.value.resource == simulators.world.host_pools[f"{pools}/hp-personal"]["id"] + "/sessionHosts"


async def test_a_personal_session_host_finds_its_personal_host_pool(services: Services) -> None:
    pool = await services.compute.find_host_pool(await read(services, vm("avd-personal-03")))

    assert pool is not None
    assert (pool.name, pool.host_pool_type, pool.load_balancer_type) == (
        "hp-personal",
        "Personal",
        "Persistent",
    )
    assert pool.agent_version == "1.0.9742.1000"


async def test_a_pooled_session_host_finds_its_pooled_host_pool(services: Services) -> None:
    pool = await services.compute.find_host_pool(await read(services, vm("avd-pooled-01", "rg-avd-pool")))

    assert pool is not None
    assert pool.host_pool_type == "Pooled"


async def test_a_vm_that_is_no_session_host_has_no_host_pool(services: Services) -> None:
    assert await services.compute.find_host_pool(await read(services, vm("vm-win11-01"))) is None


async def test_listing_vms_follows_next_links_and_carries_power_states(
    services: Services, simulators: Simulators
) -> None:
    simulators.arm_router.page_size = 4

    states = {facts.ref.name: facts.power_state async for facts in services.compute.list_vms(SUB)}

    assert len(states) == len(simulators.world.vms)
    assert states["vm-dup-04"] is PowerState.DEALLOCATED
    pages = simulators.arm.calls("GET", "virtualMachines")
    assert [page.query.get("$skiptoken") for page in pages] == [None, "4", "8"]
    assert {(page.query["api-version"], page.query["statusOnly"]) for page in pages} == {(VIRTUAL_MACHINES_API, "true")}


async def test_a_throttled_arm_still_serves_every_read(services: Services, simulators: Simulators) -> None:
    simulators.arm.throttle.every = 2
    simulators.arm.throttle.retry_after_seconds = 0.05

    facts = await read(services, vm("vm-win11-01"))
    pool = await services.compute.find_host_pool(await read(services, vm("avd-personal-03")))
    listed = [item async for item in services.compute.list_vms(SUB)]

    assert (facts.computer_name, pool is not None, len(listed)) == (
        "vm-win11-01",
        True,
        len(simulators.world.vms),
    )
    assert simulators.arm.throttle.refused >= 2


async def test_an_arm_that_keeps_throttling_surfaces_as_a_transient_error(
    services: Services, simulators: Simulators
) -> None:
    simulators.arm.throttle.every = 1
    simulators.arm.throttle.retry_after_seconds = 0.01

    with pytest.raises(TransientError, match=str(int(HTTPStatus.TOO_MANY_REQUESTS))):
        await services.compute.get_vm(vm("vm-win11-01"))
