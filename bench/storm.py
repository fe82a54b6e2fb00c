"""The evening scale-in storm: an AVD scaling plan deallocates most session hosts at once, and
starts them again in the morning.

`count` session hosts (Entra-joined, enrolled, each anchored to its VM) are deallocated by events
arriving evenly within `minutes`; then, on fresh host processes (the morning), the same number of
start events arrive within `minutes` again. Each event goes to one of `hosts` processes
(`bench/storm_host.py`), which run the real power handler against the Graph and ARM simulators
and Azurite. Graph allows `per_window` requests per 20 s, as Intune's documented per-app limit,
answering the rest with 429 and Retry-After.

Reported against the ground truth: every deallocated VM's device marked once, every started one
unmarked and asked to sync, nothing lost or marked twice; wall time against the lower bound
(the arrival window, or the throttle's, whichever is longer); Graph calls per marked device;
deliveries Event Grid would have had to retry; peak memory of a host process.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WINDOW_SECONDS = 20
EVENTS = REPO / "tests" / "events"
TARGET_RATIO = 1.3


def storm_seed(count: int) -> dict[str, Any]:
    """`count` AVD session hosts, each with its Intune record and Entra device (anchored)."""
    sample = json.loads((REPO / "localdev" / "tenants" / "sample.json").read_text())
    template = next(vm for vm in sample["virtualMachines"] if vm["name"] == "vm-win11-01")
    managed_template = next(d for d in sample["managedDevices"] if d["deviceName"] == "vm-win11-01")
    device_template = next(d for d in sample["devices"] if d["displayName"] == "vm-win11-01")
    vms, managed, devices = [], [], []
    for index in range(count):
        name = f"avd-sh-{index:05d}"
        resource_id = (
            f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/{name}"
        )
        vm = copy.deepcopy(template)
        vm["id"], vm["name"] = resource_id, name
        vm["properties"]["vmId"] = str(uuid.UUID(int=index + 1))
        vm["properties"]["storageProfile"]["osDisk"]["name"] = f"{name}-osdisk"
        vm["properties"]["osProfile"]["computerName"] = name
        vm["properties"]["instanceView"]["computerName"] = name
        vm["resources"] = []
        vms.append(vm)
        entra_id = str(uuid.UUID(int=10**9 + index))
        managed.append(
            {
                **managed_template,
                "id": str(uuid.UUID(int=2 * 10**9 + index)),
                "deviceName": name,
                "azureADDeviceId": entra_id,
                "serialNumber": f"storm-{index}",
            }
        )
        devices.append(
            {
                **device_template,
                "id": str(uuid.UUID(int=3 * 10**9 + index)),
                "deviceId": entra_id,
                "displayName": name,
                "physicalIds": [f"[AzureResourceId]:{resource_id}"],
            }
        )
    return {
        **sample,
        "virtualMachines": vms,
        "managedDevices": managed,
        "devices": devices,
        "hostPools": [],
        "galleryImages": [],
    }


def events(sample: str, seed: dict[str, Any], minutes: float, moment: datetime) -> list[dict[str, Any]]:
    template = json.loads((EVENTS / sample).read_text())[0]
    vms = seed["virtualMachines"]
    spacing = minutes * 60 / len(vms)
    timed = []
    for index, vm in enumerate(vms):
        raw = copy.deepcopy(template)
        raw["id"] = str(uuid.uuid4())
        raw["subject"] = raw["data"]["resourceUri"] = vm["id"]
        raw["eventTime"] = (moment + timedelta(seconds=index * spacing)).isoformat().replace("+00:00", "Z")
        timed.append({"due": index * spacing, "event": raw})
    return timed


@dataclass
class Phase:
    label: str
    wall: float
    lower_bound: float
    graph_calls: int
    graph_operations: int
    refused: int
    redelivered: int
    dead_lettered: int
    peak_bytes: int


def run_phase(
    label: str,
    *,
    timed: list[dict[str, Any]],
    hosts: int,
    env: dict[str, str],
    minutes: float,
    simulators: Any,
    per_window: int,
) -> Phase:
    simulators.graph.reset_calls()
    simulators.arm.reset_calls()
    simulators.graph.throttle.refused = 0
    shares: list[list[str]] = [[] for _ in range(hosts)]
    for index, item in enumerate(timed):  # Event Grid spreads deliveries over the instances
        shares[index % hosts].append(json.dumps(item))
    with tempfile.TemporaryDirectory(prefix="storm-") as folder:
        inputs = []
        for number, share in enumerate(shares):
            path = Path(folder, f"host-{number}.jsonl")
            path.write_text("\n".join(share))
            inputs.append(path.open())
        start = time.time() + 3  # the hosts have started and indexed the app by then
        processes = [
            subprocess.Popen(
                [sys.executable, "bench/storm_host.py", str(start)],
                cwd=REPO,
                env=env,
                stdin=events_in,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for events_in in inputs
        ]
        outputs = [process.communicate() for process in processes]
        for events_in in inputs:
            events_in.close()
    reports = []
    for process, (out, errors) in zip(processes, outputs, strict=True):
        if process.returncode:
            raise RuntimeError(f"a storm host failed: {errors[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    served = len(simulators.graph.operations) - simulators.graph.throttle.refused
    throttle_bound = (max(served, 1) - 1) // per_window * WINDOW_SECONDS
    return Phase(
        label,
        wall=max(report["last_done"] for report in reports) - start,
        lower_bound=max(minutes * 60, throttle_bound),
        graph_calls=len(simulators.graph.requests),
        graph_operations=served,
        refused=simulators.graph.throttle.refused,
        redelivered=int(sum(report["redelivered"] for report in reports)),
        dead_lettered=int(sum(report["dead_lettered"] for report in reports)),
        peak_bytes=max(report["peak_bytes"] for report in reports),
    )


def storm(count: int, minutes: float, hosts: int, per_window: int, settings: dict[str, str]) -> list[Any]:
    """Both phases; returns the benchmark's rows."""
    import os

    from bench.report import Row
    from localdev.simulators import running_simulators

    seed = storm_seed(count)
    rows: list[Any] = []
    with running_simulators(seed) as simulators:
        simulators.graph.throttle.per_window = per_window
        simulators.graph.throttle.window_seconds = WINDOW_SECONDS
        env = {**os.environ, **settings, **simulators.settings}
        tenant, world = simulators.graph_router.tenant, simulators.arm_router.world
        tenant.indexed_lookups = True  # tens of thousands of records: the simulator must not be the bound
        managed_by_name = {device["deviceName"]: device["id"] for device in tenant.managed_devices.values()}
        object_by_name = {device["displayName"]: device["id"] for device in tenant.devices.values()}

        for vm in seed["virtualMachines"]:
            world.set_power_state(vm["id"], "deallocated")
        now = datetime.now(UTC)  # event times must be in the past (an event from the future is malformed)
        common: dict[str, Any] = {
            "hosts": hosts,
            "env": env,
            "minutes": minutes,
            "simulators": simulators,
            "per_window": per_window,
        }
        evening_events = events("eventgrid-vm-deallocate.json", seed, minutes, now - timedelta(hours=1))
        evening = run_phase("evening (deallocate)", timed=evening_events, **common)
        added = Counter(
            str(request.body["@odata.id"]).rsplit("/", 1)[-1]
            for request in simulators.graph.served()
            if request.method == "POST" and request.path.endswith("/members/$ref")
        )
        members = set(tenant.members_of(GROUP))
        lost_marks = sum(object_by_name[vm["name"]] not in members for vm in seed["virtualMachines"])
        twice = sum(attempts > 1 for attempts in added.values())

        for vm in seed["virtualMachines"]:
            world.set_power_state(vm["id"], "running")
        morning_events = events("eventgrid-vm-start.json", seed, minutes, now - timedelta(minutes=30))
        morning = run_phase("morning (start)", timed=morning_events, **common)
        still_marked = len(set(tenant.members_of(GROUP)))
        synced = Counter(tenant.synced)
        unsynced = sum(synced[managed_by_name[vm["name"]]] == 0 for vm in seed["virtualMachines"])

    for phase in (evening, morning):
        ratio = phase.wall / phase.lower_bound
        rows += [
            Row(
                f"storm {phase.label}: {count} events in {minutes:g} min, {hosts} hosts",
                f"{phase.wall:.0f} s wall; lower bound {phase.lower_bound:.0f} s: {ratio:.2f}x",
                f"<= {TARGET_RATIO}x",
                "ok" if ratio <= TARGET_RATIO else "MISSED",
            ),
            Row(
                f"storm {phase.label}: Graph calls per device",
                f"{phase.graph_calls / count:.2f} ({phase.graph_operations} served, {phase.refused} throttled)",
                "",
            ),
            Row(
                f"storm {phase.label}: deliveries Event Grid retries / dead-lettered",
                f"{phase.redelivered} / {phase.dead_lettered}",
                "- / 0",
                "ok" if phase.dead_lettered == 0 else "MISSED",
            ),
            Row(f"storm {phase.label}: peak memory of a host process", f"{phase.peak_bytes / 2**20:.0f} MiB RSS", ""),
        ]
    lost = lost_marks + still_marked + unsynced
    rows.append(
        Row(
            "storm: marks lost (evening) / left (morning) / starts not synced / marked twice",
            f"{lost_marks} / {still_marked} / {unsynced} / {twice}",
            "0 / 0 / 0 / 0",
            "ok" if lost == 0 and twice == 0 else "MISSED",
        )
    )
    return rows
