"""The local Graph's index for large estates (the storm bench) answers exactly as its scan does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localdev.graph_sim import GraphSimulator, GraphTenant
from localdev.sim_http import Request

SEED = json.loads((Path(__file__).parent.parent / "localdev" / "tenants" / "sample.json").read_text())
ANCHOR = (
    "[AzureResourceId]:/subscriptions/6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d/resourceGroups/rg-avd-prod"
    "/providers/Microsoft.Compute/virtualMachines/vm-win11-01"
)
LOOKUPS = [
    ("/v1.0/deviceManagement/managedDevices", "deviceName eq 'VM-DUP-04'"),
    ("/v1.0/deviceManagement/managedDevices", "deviceName eq 'nobody'"),
    ("/v1.0/deviceManagement/managedDevices", "operatingSystem eq 'Windows' and model eq 'Virtual Machine'"),
    ("/v1.0/devices", "deviceId eq 'c3a10001-0d0e-4f00-9a00-000000000001'"),
    ("/v1.0/devices", f"physicalIds/any(p:p eq '{ANCHOR}')"),
    ("/v1.0/devices", "displayName eq 'vm-hybrid-06'"),
]


def answer(indexed: bool, path: str, expression: str) -> list[str]:
    tenant = GraphTenant.from_seed(SEED)
    tenant.indexed_lookups = indexed
    query = {"$filter": expression, "$count": "true", "$top": "999"}
    response = GraphSimulator(tenant)(Request("GET", path, query, {"consistencylevel": "eventual"}, None))
    assert response.status == 200, response.body
    return sorted(item["id"] for item in response.body["value"])


@pytest.mark.parametrize(("path", "expression"), LOOKUPS)
def test_an_indexed_lookup_finds_what_a_scan_finds(path: str, expression: str) -> None:
    assert answer(True, path, expression) == answer(False, path, expression)


def test_a_record_added_after_the_index_was_built_is_found() -> None:
    tenant = GraphTenant.from_seed(SEED)
    tenant.indexed_lookups = True
    graph = GraphSimulator(tenant)
    lookup = Request("GET", "/v1.0/devices", {"$filter": "deviceId eq 'dev-new'"}, {}, None)
    assert graph(lookup).body["value"] == []

    tenant.devices["obj-new"] = {"id": "obj-new", "deviceId": "dev-new", "displayName": "new", "physicalIds": []}

    assert [item["id"] for item in graph(lookup).body["value"]] == ["obj-new"]
