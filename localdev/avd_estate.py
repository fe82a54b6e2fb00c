"""A synthetic Azure Virtual Desktop estate for the ARM simulator: many host pools of many session hosts.

The host-pool lookup's tests and its bench row (`bench/host_pools.py`) need a subscription of, say,
50 pools of 200 hosts, in the shapes of the sample tenant's pools and session hosts; only the VMs a
test looks up need documents (`session_host_vm`), made from the sample's pooled host.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any, Literal

from localdev.arm_sim import ArmWorld
from localdev.simulators import load_seed

Json = dict[str, Any]
Naming = Literal["tag", "extension", "nothing"]
POOL_NAMES = "hp-estate-{pool:02d}"
HOST_NAMES = "avd-{pool:02d}-{host:03d}"
TAG = "cm-resource-parent"


def estate(pools: int, hosts: int) -> Json:
    """A seed of `pools` pooled host pools, each in a resource group of its own (`rg-avd-NN`) with its
    `hosts` session hosts (Entra-joined: each named as its VM's computer name, the VM in the same group)."""
    sample = load_seed("sample")
    subscription = sample["subscriptionId"]
    (template,) = [pool for pool in sample["hostPools"] if pool["name"] == "hp-pooled"]
    seeded = []
    for p in range(pools):
        pool = copy.deepcopy(template)
        group = f"/subscriptions/{subscription}/resourceGroups/rg-avd-{p:02d}"
        pool["name"] = POOL_NAMES.format(pool=p)
        pool["id"] = f"{group}/providers/Microsoft.DesktopVirtualization/hostPools/{pool['name']}"
        host_template = template["sessionHosts"][0]
        pool["sessionHosts"] = []
        for h in range(hosts):
            host = copy.deepcopy(host_template)
            host["name"] = HOST_NAMES.format(pool=p, host=h)
            host["id"] = f"{pool['id']}/sessionHosts/{host['name']}"
            host["properties"]["resourceId"] = f"{group}/providers/Microsoft.Compute/virtualMachines/{host['name']}"
            pool["sessionHosts"].append(host)
        seeded.append(pool)
    return {"subscriptionId": subscription, "hostPools": seeded}


def session_host_vm(world: ArmWorld, pool: int, host: int, naming: Naming) -> Json:
    """The VM of session host `host` of pool `pool`, as ARM shows it: named after the sample's pooled host,
    its pool named by the `cm-resource-parent` tag, by the registration extension's `hostPoolName`, or by
    nothing ARM shows (its DSC extension runs a configuration of the organisation's own)."""
    sample = load_seed("sample")
    (template,) = [vm for vm in sample["virtualMachines"] if vm["name"] == "avd-pooled-01"]
    name = HOST_NAMES.format(pool=pool, host=host)
    document: Json = json.loads(
        json.dumps(template).replace("rg-avd-pool", f"rg-avd-{pool:02d}").replace("avd-pooled-01", name)
    )
    document["properties"]["vmId"] = str(uuid.uuid4())
    pool_id = next(key for key in world.host_pools if key.endswith(f"/{POOL_NAMES.format(pool=pool)}"))
    pool_document = world.host_pools[pool_id]
    (registration,) = [item for item in document["resources"] if item["properties"]["type"] == "DSC"]
    settings = registration["properties"]["settings"]
    document["tags"] = {TAG: pool_document["id"]} if naming == "tag" else {}
    if naming == "nothing":
        settings.clear()
        settings.update({"configuration": {"function": "RegisterSessionHost"}, "configurationArguments": {}})
    elif naming == "extension":
        settings["properties"]["hostPoolName"] = pool_document["name"]
    else:
        settings["properties"].pop("hostPoolName", None)
    world.put_vm(document)
    return document
