"""Finding a VM's AVD host pool without walking the estate (issue 29, item 2): the ARM adapter, its
real pipeline over HTTPS, against the local ARM serving the sample tenant plus 50 pools of 200 hosts.

What the VM names (the `cm-resource-parent` tag, the registration extension's `hostPoolName`) is proved
with two GETs; a VM that names nothing is found in one walk per instance and period, which later
lookups share. The proof is what it was: the session host's `resourceId` is the VM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from localdev.avd_estate import estate, session_host_vm
from localdev.inprocess import LocalTokens
from localdev.simulators import Simulators, load_seed
from responder.adapters.arm import ArmCompute
from responder.decisions import arm_documents
from responder.decisions.errors import AccessDenied
from responder.decisions.facts import VmFacts
from responder.decisions.model import VmRef

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
POOLS, HOSTS = 50, 200
AVD = "/microsoft.desktopvirtualization/"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def seed() -> dict[str, Any]:
    sample = load_seed("sample")
    sample["hostPools"] += estate(POOLS, HOSTS)["hostPools"]
    return sample


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def arm(simulators: Simulators, clock: Clock) -> AsyncIterator[ArmCompute]:
    compute = ArmCompute(LocalTokens(simulators.identity.tokens), simulators.arm.url, str(simulators.ca_file))
    compute.host_pools.clock = clock
    yield compute
    await compute.close()


def facts(document: dict[str, Any]) -> VmFacts:
    return arm_documents.vm_facts(document)


def sample_vm(simulators: Simulators, name: str, group: str = "rg-avd-prod") -> VmFacts:
    return facts(simulators.world.vms[VmRef(SUB, group, name).resource_id])


def avd_calls(simulators: Simulators) -> list[str]:
    return [request.path for request in simulators.arm.calls("GET", AVD)]


async def test_a_host_whose_tag_names_its_pool_is_found_with_two_arm_calls_among_50_pools_of_200_hosts(
    arm: ArmCompute, simulators: Simulators
) -> None:
    vm = facts(session_host_vm(simulators.world, pool=37, host=123, naming="tag"))

    pool = await arm.find_host_pool(vm)

    assert pool is not None
    assert pool.name == "hp-estate-37"
    assert len(avd_calls(simulators)) == 2  # the session host by name, then its pool
    assert arm.host_pools.walks == 0


async def test_a_host_whose_registration_extension_names_its_pool_is_found_with_two_arm_calls(
    arm: ArmCompute, simulators: Simulators
) -> None:
    vm = facts(session_host_vm(simulators.world, pool=4, host=199, naming="extension"))

    pool = await arm.find_host_pool(vm)

    assert pool is not None
    assert (pool.name, pool.agent_version) == ("hp-estate-04", "1.0.9742.1000")
    assert [path.rsplit("/", 2)[-2:] for path in avd_calls(simulators)] == [
        ["sessionHosts", "avd-04-199"],
        ["hostPools", "hp-estate-04"],
    ]


async def test_the_sample_hosts_that_name_their_pool_are_found_without_a_walk(
    arm: ArmCompute, simulators: Simulators
) -> None:
    personal = await arm.find_host_pool(sample_vm(simulators, "avd-personal-03"))  # tag and extension
    pooled = await arm.find_host_pool(sample_vm(simulators, "avd-pooled-01", "rg-avd-pool"))

    assert (personal and personal.name, pooled and pooled.name) == ("hp-personal", "hp-pooled")
    assert (len(avd_calls(simulators)), arm.host_pools.walks) == (4, 0)


async def test_a_same_named_session_host_of_another_vm_is_not_this_vm(arm: ArmCompute, simulators: Simulators) -> None:
    # avd-pooled-02 was rebuilt; hp-pooled still lists "avd-pooled-02", the VM it replaced.
    rebuilt = sample_vm(simulators, "avd-pooled-02", "rg-avd-pool")

    assert await arm.find_host_pool(rebuilt) is None
    named = avd_calls(simulators)[0]
    assert named.lower().endswith("/hostpools/hp-pooled/sessionhosts/avd-pooled-02")  # someone else's
    assert arm.host_pools.walks == 1  # the named pool doesn't hold it: the walk doesn't either


async def test_a_host_that_names_no_pool_is_found_by_a_walk_of_the_subscription(
    arm: ArmCompute, simulators: Simulators
) -> None:
    pool = await arm.find_host_pool(sample_vm(simulators, "avd-personal-11"))

    assert pool is not None
    assert pool.name == "hp-personal"
    assert arm.host_pools.walks == 1
    page = simulators.arm_router.page_size  # 50
    pools_pages, estate_pages, sample_pages = -(-(POOLS + 2) // page), POOLS * -(-HOSTS // page), 2
    assert len(avd_calls(simulators)) == pools_pages + estate_pages + sample_pages  # found there: no proof to add


async def test_the_walk_spares_the_next_unnamed_host_a_walk_of_its_own(
    arm: ArmCompute, simulators: Simulators, clock: Clock
) -> None:
    first = facts(session_host_vm(simulators.world, pool=2, host=5, naming="nothing"))
    second = facts(session_host_vm(simulators.world, pool=49, host=0, naming="nothing"))
    await arm.find_host_pool(first)
    clock.now += 14 * 60  # within the period
    simulators.arm.reset_calls()

    pool = await arm.find_host_pool(second)

    assert pool is not None
    assert pool.name == "hp-estate-49"
    assert (len(avd_calls(simulators)), arm.host_pools.walks) == (2, 1)  # proved again: host, pool


async def test_a_host_whose_named_pool_lives_in_another_resource_group_is_found_by_the_walk(
    arm: ArmCompute, simulators: Simulators
) -> None:
    document = session_host_vm(simulators.world, pool=8, host=8, naming="extension")
    moved = document["id"].replace("/rg-avd-08/", "/rg-avd-hosts/")  # the hosts apart from their pool
    document["id"] = moved
    simulators.world.put_vm(document)
    host = next(host for key, host in simulators.world.session_hosts.items() if key.endswith("/avd-08-008"))
    host["properties"]["resourceId"] = moved

    pool = await arm.find_host_pool(facts(document))

    assert pool is not None
    assert pool.name == "hp-estate-08"
    assert arm.host_pools.walks == 1


async def test_a_host_registered_after_the_walk_is_not_found_until_the_walk_is_stale(
    arm: ArmCompute, simulators: Simulators, clock: Clock
) -> None:
    late = facts(session_host_vm(simulators.world, pool=3, host=7, naming="nothing"))
    key = next(key for key in simulators.world.session_hosts if key.endswith("/avd-03-007"))
    host = simulators.world.session_hosts.pop(key)  # not registered yet
    assert await arm.find_host_pool(late) is None  # the walk
    simulators.world.session_hosts[key] = host  # it registers now

    clock.now += 10 * 60
    missed = await arm.find_host_pool(late)  # the walk is fresh: the cost of staleness
    clock.now += 5 * 60
    found = await arm.find_host_pool(late)  # stale: this miss walks once more

    assert missed is None
    assert found is not None
    assert found.name == "hp-estate-03"
    assert arm.host_pools.walks == 2


async def test_concurrent_misses_share_one_walk(arm: ArmCompute, simulators: Simulators) -> None:
    hosts = [facts(session_host_vm(simulators.world, pool=p, host=1, naming="nothing")) for p in range(0, 50, 5)]

    pools = await asyncio.gather(*(arm.find_host_pool(vm) for vm in hosts))

    assert [pool and pool.name for pool in pools] == [f"hp-estate-{p:02d}" for p in range(0, 50, 5)]
    assert arm.host_pools.walks == 1


async def test_a_vm_in_no_pool_has_none(arm: ArmCompute, simulators: Simulators) -> None:
    assert await arm.find_host_pool(sample_vm(simulators, "vm-win11-01")) is None


async def test_a_named_pool_whose_session_hosts_arm_refuses_is_raised_naming_them(
    arm: ArmCompute, simulators: Simulators
) -> None:
    pool = next(pool for key, pool in simulators.world.host_pools.items() if key.endswith("/hp-pooled"))
    simulators.world.unreadable_scopes.add(pool["id"].lower())

    with pytest.raises(AccessDenied) as refused:
        await arm.find_host_pool(sample_vm(simulators, "avd-pooled-01", "rg-avd-pool"))

    assert refused.value.resource == f"{pool['id']}/sessionHosts"


async def test_a_refused_list_of_the_subscriptions_pools_is_raised_for_a_host_that_names_none(
    arm: ArmCompute, simulators: Simulators
) -> None:
    simulators.world.unreadable_scopes.add(f"/subscriptions/{SUB}")
    simulators.world.granted_scopes.add(f"/subscriptions/{SUB}/resourcegroups/rg-avd-prod")

    with pytest.raises(AccessDenied) as refused:
        await arm.find_host_pool(sample_vm(simulators, "avd-personal-11"))

    assert refused.value.resource is None  # the subscription's pools: vm_checks names the scope
