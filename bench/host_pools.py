"""Host-pool lookups at estate scale (issue 29, item 2): ARM calls per VM and time per lookup.

The ARM adapter (its real pipeline over HTTPS) against the local ARM serving 50 host pools of 200
session hosts (`localdev/avd_estate.py`, pages of 50 as the simulator serves them). Session hosts whose
VM names its pool (the `cm-resource-parent` tag, the registration extension's `hostPoolName`) are
proved with two GETs; hosts that name nothing are found in the instance's walk of the subscription,
made once, then proved with two GETs each. The walk is what every lookup cost before.

    .venv/bin/python -m bench.host_pools [--pools 50] [--hosts 200] [--lookups 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.report import Row, table
from localdev.avd_estate import Naming, estate, session_host_vm
from localdev.inprocess import LocalTokens
from localdev.simulators import Simulators, load_seed, running_simulators
from responder.adapters.arm import ArmCompute
from responder.decisions import arm_documents

TARGET = 2  # ARM calls per VM
AVD = "/microsoft.desktopvirtualization/"
LABELS: dict[Naming, str] = {
    "tag": "its tag names the pool",
    "extension": "its extension names the pool",
    "nothing": "names nothing, after the walk",
}


async def lookups(simulators: Simulators, arm: ArmCompute, naming: Naming, hosts: list[tuple[int, int]]) -> Row:
    """One lookup per host: the most ARM calls one cost, and the median time; every host must be found."""
    facts = [arm_documents.vm_facts(session_host_vm(simulators.world, p, h, naming)) for p, h in hosts]
    calls, times, missed = [], [], 0
    for vm in facts:
        simulators.arm.reset_calls()
        started = time.perf_counter()
        pool = await arm.find_host_pool(vm)
        times.append(time.perf_counter() - started)
        calls.append(len(simulators.arm.calls("GET", AVD)))
        missed += pool is None
    worst = max(calls)
    found = f", {missed} not found" if missed else ""
    return Row(
        f"host pool lookup: {LABELS[naming]}",
        f"{worst} ARM calls per VM (max of {len(facts)}), {statistics.median(times) * 1000:.1f} ms median{found}",
        f"<= {TARGET} ARM calls",
        "ok" if worst <= TARGET and not missed else "MISSED",
    )


async def measure(pools: int, hosts: int, count: int) -> list[Row]:
    seed = load_seed("sample")
    seed["hostPools"] = estate(pools, hosts)["hostPools"]
    sample = [(i * 7 % pools, i * 37 % hosts) for i in range(count)]  # spread over the estate
    with running_simulators(seed) as simulators:
        arm = ArmCompute(LocalTokens(simulators.identity.tokens), simulators.arm.url, str(simulators.ca_file))
        try:
            rows = [
                Row(f"host pool lookup: estate of {pools} pools x {hosts} session hosts", f"{pools * hosts} hosts", "")
            ]
            rows.append(await lookups(simulators, arm, "tag", sample))
            rows.append(await lookups(simulators, arm, "extension", sample))
            # The first host that names nothing walks the subscription: what every lookup cost before.
            first = arm_documents.vm_facts(session_host_vm(simulators.world, 0, 0, "nothing"))
            simulators.arm.reset_calls()
            started = time.perf_counter()
            await arm.find_host_pool(first)
            walked, walk_calls = time.perf_counter() - started, len(simulators.arm.calls("GET", AVD))
            rows.append(await lookups(simulators, arm, "nothing", sample))
            rows.append(
                Row(
                    "host pool lookup: the walk (once per subscription, instance and 15 min)",
                    f"{walk_calls} ARM calls, {walked:.2f} s (before: every lookup)",
                    f"<= 1 per period (walks: {arm.host_pools.walks})",
                    "ok" if arm.host_pools.walks == 1 else "MISSED",
                )
            )
        finally:
            await arm.close()
    return rows


def rows(pools: int = 50, hosts: int = 200, count: int = 100) -> list[Row]:
    return asyncio.run(measure(pools, hosts, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--hosts", type=int, default=200, help="session hosts per pool")
    parser.add_argument("--lookups", type=int, default=100, help="lookups per kind of host")
    args = parser.parse_args()
    print(table(rows(args.pools, args.hosts, args.lookups)))


if __name__ == "__main__":
    main()
