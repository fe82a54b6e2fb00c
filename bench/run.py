"""Benchmarks, run on request (never in the test suite): one table, targets beside measurements.

1. cold start per function, process start → first event handled, beside a minimal reference handler
   making the same HTTP calls, on Python 3.11 and 3.13 (`bench/coldstart.py`);
2. Graph and ARM calls per event kind, counted at the simulators;
3. a burst of VM deletions through the cleanup worker against a Graph that allows N requests per
   20 s, three times on a fresh tenant: each run's wall time against the throttle's lower bound,
   refused requests, lost cleanups;
4. peak memory of the worker during the burst;
5. the deployment package (`bench/package.py`): the first-party files `.funcignore` lets through, the
   installed requirements, and the import cost of `function_app` from the shipped files alone;
6. AVD host-pool lookups in 50 pools of 200 session hosts (`bench/host_pools.py`): ARM calls per VM;
7. the evening scale-in storm of 20,000 session hosts and their morning start (`bench/storm.py`).

    .venv/bin/python -m bench.run [--cold-runs 5] [--pythons 3.11,3.13] [--burst 1000] [--burst-runs 3]
        [--storm 20000] [--skip-package] [--skip-requirements] [--skip-host-pools]

The whole run takes over an hour on two cores (the storm alone two arrival windows and more).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.host_pools import rows as host_pool_rows  # noqa: E402
from bench.package import rows as package_rows  # noqa: E402
from bench.report import Row, table  # noqa: E402
from bench.storm import storm  # noqa: E402
from handlers import (  # noqa: E402
    cleanup_worker,
    vm_created,
    vm_deleted,
    vm_power,
)
from handlers._eventgrid import trigger_input  # noqa: E402
from localdev.azurite import running_azurite  # noqa: E402
from localdev.queue_host import run_queue_trigger  # noqa: E402
from localdev.simulators import Simulators, load_seed, running_simulators  # noqa: E402

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
EVENTS = REPO / "tests" / "events"


def cold_start(simulators: Simulators, azurite: Any, settings: dict[str, str], args: argparse.Namespace) -> list[Row]:
    from bench.coldstart import cold_start_bench, interpreters, measure, rows

    with cold_start_bench(simulators, azurite, load_seed("sample"), settings) as bench:
        return rows(measure(bench, interpreters(args.pythons.split(",")), args.cold_runs))


def event(sample: str, vm: str, event_id: str) -> dict[str, Any]:
    raw: dict[str, Any] = copy.deepcopy(__import__("json").loads((EVENTS / sample).read_text())[0])
    resource_id = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/{vm}"
    raw["subject"] = raw["data"]["resourceUri"] = resource_id
    raw["id"] = event_id
    return raw


@contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    before = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def counted(simulators: Simulators) -> tuple[int, int, int]:
    """Graph round trips (HTTP calls: a `$batch` is one), Graph operations (what Graph throttles: a batch's
    requests one by one) and ARM calls."""
    return len(simulators.graph.requests), len(simulators.graph.operations), len(simulators.arm.requests)


async def calls_per_event(simulators: Simulators) -> list[Row]:
    from responder.composition import close_services

    rows = []
    deallocate = vm_power.on_vm_power_changed.build().get_user_function()
    create = vm_created.on_vm_created.build().get_user_function()
    delete = vm_deleted.on_vm_deleted.build().get_user_function()
    worker = cleanup_worker.on_cleanup_message.build().get_user_function()
    win11 = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01"

    async def measure(
        label: str, call: Any, target_graph: int | None, target_arm: int | None, target_operations: int | None = None
    ) -> None:
        simulators.graph.reset_calls()
        simulators.arm.reset_calls()
        await call()
        graph, operations, arm = counted(simulators)
        targets = []
        verdict = "ok"
        for name, value, target in (
            ("Graph round trips", graph, target_graph),
            ("Graph operations", operations, target_operations),
            ("ARM", arm, target_arm),
        ):
            if target is not None:
                targets.append(f"{name} <= {target}")
                verdict = verdict if value <= target else "MISSED"
        shown = f"Graph {graph} round trip(s), {operations} operation(s); ARM {arm}"
        rows.append(Row(f"calls per event: {label}", shown, ", ".join(targets), verdict))

    # Warm-up: the ledger learns the VM and its device (the targets assume it knows them).
    await create_then(create, "vm-win11-01", "warm-write")
    simulators.world.set_power_state(win11, "deallocated")
    await deallocate(trigger_input(event("eventgrid-vm-deallocate.json", "vm-win11-01", "warm-deallocate")))
    simulators.world.set_power_state(win11, "running")
    await deallocate(trigger_input(event("eventgrid-vm-start.json", "vm-win11-01", "warm-start")))

    # The join extension written again without the Intune mdmId: what the rules read changed (another
    # extension's write would leave the check's fingerprint as it is).
    (join,) = simulators.world.vms[win11.lower()]["resources"]
    join["properties"]["settings"].pop("mdmId")
    await measure(
        "created (image/extensions changed)",
        lambda: create(trigger_input(event("eventgrid-vm-write.json", "vm-win11-01", "w2"))),
        None,
        3,
    )
    simulators.world.set_power_state(win11, "deallocated")
    await measure(
        "deallocated",
        lambda: deallocate(
            trigger_input(_at(event("eventgrid-vm-deallocate.json", "vm-win11-01", "d2"), "2026-11-22T19:00:00Z"))
        ),
        2,
        None,
        4,
    )
    simulators.world.set_power_state(win11, "running")
    await measure(
        "started",
        lambda: deallocate(
            trigger_input(_at(event("eventgrid-vm-start.json", "vm-win11-01", "s2"), "2026-11-23T07:00:00Z"))
        ),
        2,
        None,
        5,  # the deallocation's 4, and the sync a start asks for (issue 29's 4 counted the mark's writes alone)
    )
    simulators.world.delete_vm(win11)
    await delete(trigger_input(_at(event("eventgrid-vm-delete.json", "vm-win11-01", "x2"), "2026-11-23T18:00:00Z")))
    from responder.composition import get_services

    services = await get_services()
    await measure(
        "cleanup (worker, one deletion)",
        lambda: run_queue_trigger(os.environ["AzureWebJobsStorage"], services.settings.cleanup.queue, worker),
        3,
        None,
    )
    await close_services()
    return rows


async def create_then(create: Any, vm: str, event_id: str) -> None:
    await create(trigger_input(event("eventgrid-vm-write.json", vm, event_id)))


def _at(raw: dict[str, Any], moment: str) -> dict[str, Any]:
    raw["eventTime"] = moment
    return raw


@dataclass
class Burst:
    wall: float
    lower_bound: int
    operations: int
    calls: int
    refused: int
    lost: int
    peak_bytes: int

    @property
    def ratio(self) -> float:
        return self.wall / self.lower_bound if self.lower_bound else float("nan")


async def burst(simulators: Simulators, count: int, per_window: int, instances: int) -> Burst:
    """`count` session hosts the responder saw created (each anchored to its device), deleted at once."""
    from bench.storm import storm_seed
    from localdev.arm_sim import ArmWorld
    from localdev.graph_sim import GraphTenant
    from responder.composition import close_services

    seed = storm_seed(count)
    simulators.graph_router.tenant = simulators.tenant = GraphTenant.from_seed(seed)
    simulators.arm_router.world = simulators.world = ArmWorld.from_seed(seed)
    simulators.graph.throttle.per_window = 10**9  # the setup isn't what is measured
    create = vm_created.on_vm_created.build().get_user_function()
    delete = vm_deleted.on_vm_deleted.build().get_user_function()
    for vm in seed["virtualMachines"]:
        await create(trigger_input(event("eventgrid-vm-write.json", vm["name"], f"create-{vm['name']}")))
    for vm in seed["virtualMachines"]:
        simulators.world.delete_vm(vm["id"])
        raw = _at(event("eventgrid-vm-delete.json", vm["name"], f"delete-{vm['name']}"), "2026-11-24T18:00:00Z")
        await delete(trigger_input(raw))
    await close_services()
    simulators.graph.reset_calls()
    simulators.graph.throttle.per_window = per_window
    simulators.graph.throttle.window_seconds = 20
    simulators.graph.throttle.refused = 0

    started = time.monotonic()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.worker", cwd=REPO, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(instances)
    ]
    outputs = await asyncio.gather(*(worker.communicate() for worker in workers))
    reports = [json.loads((out or b"{}").decode().strip().splitlines()[-1]) for out, _ in outputs]
    served = len(simulators.graph.operations) - simulators.graph.throttle.refused  # what the limit counts
    return Burst(
        wall=time.monotonic() - started - 3,  # each worker stops after three idle one-second polls
        lower_bound=((served - 1) // per_window) * 20,
        operations=served,
        calls=len(simulators.graph.requests),  # HTTP calls ($batch counts once)
        refused=simulators.graph.throttle.refused,
        lost=len(simulators.tenant.managed_devices) + len(simulators.tenant.devices),
        peak_bytes=max(report.get("peak_bytes", 0) for report in reports),
    )


def burst_rows(runs: list[Burst], count: int, per_window: int, instances: int) -> list[Row]:
    """The burst is held to its target run by run: each run's ratio, and the verdict over all of them."""
    ratios = sorted(run.ratio for run in runs)
    walls = ", ".join(f"{run.wall:.1f} s" for run in runs)
    bounded = all(run.lower_bound for run in runs)  # a burst within one throttle window has no bound to meet
    verdict = "ok" if bounded and max(ratios) <= 1.2 else "MISSED" if bounded else "n/a (within one window)"
    lost = sum(run.lost for run in runs)
    return [
        Row(f"burst: {count} deletions, Graph limit {per_window}/20 s, {len(runs)} runs", f"{walls} wall", ""),
        Row(
            "burst: throttle's lower bound",
            "; ".join(f"{run.lower_bound} s ({run.operations} operations in {run.calls} calls)" for run in runs),
            "",
        ),
        Row(
            "burst: wall / lower bound, every run",
            f"median {statistics.median(ratios):.2f}x ({', '.join(f'{ratio:.2f}x' for ratio in ratios)})",
            "<= 1.2x in each run",
            verdict,
        ),
        Row("burst: requests refused by the throttle", " / ".join(str(run.refused) for run in runs), ""),
        Row("burst: lost cleanups", str(lost), "0", "ok" if lost == 0 else "MISSED"),
        Row(
            f"burst: peak memory (RSS) of a worker ({instances} processes)",
            f"{max(run.peak_bytes for run in runs) / 2**20:.1f} MiB",
            "",
        ),
    ]


async def with_emulators(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with running_azurite() as azurite, running_simulators(load_seed("sample")) as simulators:
        settings = {
            **simulators.settings,
            "AzureWebJobsStorage": azurite.connection_string,
            "RESPONDER_LEDGER_TABLE": f"bench{uuid.uuid4().hex[:10]}",
            "RESPONDER_AUDIT_TABLE": f"benchaudit{uuid.uuid4().hex[:8]}",
            "RESPONDER_CLEANUP_QUEUE": f"bench-{uuid.uuid4().hex[:10]}",
            "RESPONDER_CLEANUP_DELAY_SECONDS": "0",
            "RESPONDER_MODE": "enforce",
            "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
            "RESPONDER_MAX_DELETIONS_PER_HOUR": str(10 * args.burst + 10),
        }
        if not args.skip_cold_start:
            rows += cold_start(simulators, azurite, settings, args)
        with environment(settings):
            rows += await calls_per_event(simulators)
        runs = []
        for _ in range(args.burst_runs):
            # Each run on a fresh tenant, ledger, audit table and queue, in a fresh Azurite: one that
            # holds the earlier runs' rows in memory grows slower run by run (97 s for a third run
            # whose first two took 72 and 73 s), which Azure's storage doesn't.
            with running_azurite() as fresh:
                settings["AzureWebJobsStorage"] = fresh.connection_string
                settings["RESPONDER_LEDGER_TABLE"] = f"burst{uuid.uuid4().hex[:10]}"
                settings["RESPONDER_AUDIT_TABLE"] = f"burstaudit{uuid.uuid4().hex[:8]}"
                settings["RESPONDER_CLEANUP_QUEUE"] = f"burst-{uuid.uuid4().hex[:10]}"
                with environment(settings):
                    runs.append(await burst(simulators, args.burst, args.per_window, args.workers))
        rows += burst_rows(runs, args.burst, args.per_window, args.workers)
    if args.storm:
        with running_azurite() as azurite:
            rows += storm(args.storm, args.storm_minutes, args.hosts, args.per_window, storm_settings(azurite))
    return rows


def storm_settings(azurite: Any) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESPONDER_LEDGER_TABLE": f"storm{uuid.uuid4().hex[:10]}",
        "RESPONDER_AUDIT_TABLE": f"stormaudit{uuid.uuid4().hex[:8]}",
        "RESPONDER_CLEANUP_QUEUE": f"storm-{uuid.uuid4().hex[:10]}",
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000, help="VM deletions in the burst")
    parser.add_argument("--burst-runs", type=int, default=3, help="times the burst is run (each held to its target)")
    parser.add_argument("--per-window", type=int, default=2000, help="Graph requests allowed per 20 s")
    parser.add_argument("--cold-runs", type=int, default=7, help="fresh processes per function and Python")
    parser.add_argument("--pythons", default="3.11,3.13", help="interpreters for the cold start")
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--workers", type=int, default=2, help="cleanup worker processes (host instances)")
    parser.add_argument("--storm", type=int, default=20000, help="session hosts in the scale-in storm (0: skip)")
    parser.add_argument("--storm-minutes", type=float, default=10, help="window the storm's events arrive in")
    parser.add_argument("--hosts", type=int, default=4, help="Functions host processes in the storm")
    parser.add_argument("--skip-package", action="store_true", help="don't size the deployment package")
    parser.add_argument("--skip-requirements", action="store_true", help="size it without installing requirements.txt")
    parser.add_argument("--skip-host-pools", action="store_true", help="don't time host-pool lookups")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    rows = asyncio.run(with_emulators(args))
    if not args.skip_host_pools:
        rows += host_pool_rows()
    if not args.skip_package:
        rows += package_rows(max(args.cold_runs, 5), requirements=not args.skip_requirements)
    print(table(rows))
    shutil.rmtree(REPO / "bench" / "__pycache__", ignore_errors=True)


if __name__ == "__main__":
    main()
