"""The adapter and the Graph simulator against Microsoft Graph's own v1.0 metadata (CSDL).

Every Graph call the adapter makes is recorded by the simulator; each path must name an
entity set of the metadata, and each `$select` field, `$filter` property, PATCH property and
bound action must exist on that entity type (with its base types). The simulator's tenant
records must carry only properties the metadata declares. What the metadata leaves out but
Microsoft's v1.0 reference documents on an open type is listed here, with its source.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest

from localdev.sim_http import Request
from localdev.simulators import Simulators
from responder.composition import Services

CSDL = Path(__file__).parent / "contracts" / "graph" / "v1.0.csdl.xml"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
WIN11_MANAGED = "7d1e0001-aaaa-4bbb-8ccc-000000000001"
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"
WIN11_DEVICE_ID = "c3a10001-0d0e-4f00-9a00-000000000001"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"

# `device` is an open type; the v1.0 reference ("device resource type", and
# "onPremisesExtensionAttributes resource type": "the extensionAttributes property of the
# device entity is managed only in Microsoft Entra ID") documents this property on it.
DOCUMENTED_DYNAMIC = {"device": {"extensionAttributes"}}
# Which entity type each path the adapter calls addresses.
PATHS = [
    (re.compile(r"^/v1\.0/deviceManagement/managedDevices(/[^/]+)?$"), "managedDevice"),
    (re.compile(r"^/v1\.0/deviceManagement/managedDevices/[^/]+/(?P<action>\w+)$"), "managedDevice"),
    (re.compile(r"^/v1\.0/devices(/[^/]+)?$"), "device"),
    (re.compile(r"^/v1\.0/groups/[^/]+/members(/[^/]+)?/\$ref$"), "group"),
    (re.compile(r"^/v1\.0/\$batch$"), None),
]
FILTER_PROPERTY = re.compile(r"(\w+)(?:/any\(\w+:\w+|\s+eq\s)")


@cache
def metadata() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Entity type → its properties (own and inherited, navigation included) and bound actions."""
    root = ET.parse(CSDL).getroot()  # noqa: S314 (Microsoft's file, vendored in this repository)
    types = {element.get("Name"): element for element in root.iter(f"{EDM}EntityType")}
    properties: dict[str, set[str]] = {}
    for name in types:
        found: set[str] = set()
        current = types.get(name)
        while current is not None:
            found |= {p.get("Name") or "" for p in current.findall(f"{EDM}Property")}
            found |= {p.get("Name") or "" for p in current.findall(f"{EDM}NavigationProperty")}
            base = (current.get("BaseType") or "").removeprefix("graph.")
            current = types.get(base)
        properties[str(name)] = found
    actions: dict[str, set[str]] = {}
    for action in root.iter(f"{EDM}Action"):
        binding = action.find(f"{EDM}Parameter")
        if action.get("IsBound") == "true" and binding is not None:
            actions.setdefault((binding.get("Type") or "").removeprefix("graph."), set()).add(action.get("Name") or "")
    return properties, actions


def declared(entity: str) -> set[str]:
    return metadata()[0][entity] | DOCUMENTED_DYNAMIC.get(entity, set())


def entity_of(request: Request) -> tuple[str | None, str | None]:
    for pattern, entity in PATHS:
        if match := pattern.match(request.path):
            return entity, match.groupdict().get("action")
    raise AssertionError(f"{request.method} {request.path} is not a path this test knows of the metadata")


@pytest.fixture
async def every_call(services: Services, simulators: Simulators) -> list[Request]:
    """The adapter doing everything it does, as the simulator recorded it."""
    directory = services.directory
    await directory.find_managed_devices_by_name("vm-win11-01")
    await directory.get_managed_device(WIN11_MANAGED)
    _ = [device async for device in directory.windows_virtual_machines()]
    await directory.find_entra_devices(WIN11_DEVICE_ID)
    await directory.find_entra_devices_by_resource_id(
        f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01"
    )
    await directory.get_entra_device(WIN11_ENTRA)
    await directory.read_records(WIN11_MANAGED, WIN11_DEVICE_ID)
    await directory.set_extension_attribute(WIN11_ENTRA, 7, "deallocated")
    await directory.add_group_member(GROUP, WIN11_ENTRA)
    await directory.remove_group_member(GROUP, WIN11_ENTRA)
    await directory.sync_device(WIN11_MANAGED)
    await directory.records_exist(WIN11_MANAGED, WIN11_ENTRA)
    await directory.delete_records(WIN11_MANAGED, WIN11_ENTRA)
    return [request for request in simulators.graph.operations if request.path != "/v1.0/$batch"]


async def test_every_path_the_adapter_calls_is_an_entity_of_the_metadata(every_call: list[Request]) -> None:
    assert {entity_of(request)[0] for request in every_call} == {"managedDevice", "device", "group"}


async def test_every_select_field_exists_on_the_entity(every_call: list[Request]) -> None:
    for request in every_call:
        entity, _ = entity_of(request)
        selected = {field for field in request.query.get("$select", "").split(",") if field}
        assert entity is not None
        assert selected <= declared(entity), (request.path, selected - declared(entity))


async def test_every_filter_property_exists_on_the_entity(every_call: list[Request]) -> None:
    filtered = [request for request in every_call if "$filter" in request.query]
    assert filtered
    for request in filtered:
        entity, _ = entity_of(request)
        used = set(FILTER_PROPERTY.findall(request.query["$filter"]))
        assert entity is not None
        assert used
        assert used <= declared(entity), (request.query["$filter"], used - declared(entity))


async def test_every_patched_property_exists_on_the_entity(every_call: list[Request]) -> None:
    patches = [request for request in every_call if request.method == "PATCH"]
    assert patches
    for request in patches:
        entity, _ = entity_of(request)
        assert entity is not None
        properties = {key for key in request.body or {} if not key.startswith("@odata.")}  # annotations
        assert properties <= declared(entity), (request.path, properties - declared(entity))


async def test_every_action_is_bound_to_the_entity(every_call: list[Request]) -> None:
    called = {(entity, action) for entity, action in map(entity_of, every_call) if action}
    assert called == {("managedDevice", "syncDevice")}
    assert "syncDevice" in metadata()[1]["managedDevice"]


def test_the_simulated_tenant_carries_only_properties_graph_declares(simulators: Simulators) -> None:
    for entity, records in (
        ("managedDevice", simulators.tenant.managed_devices),
        ("device", simulators.tenant.devices),
    ):
        for record in records.values():
            served = {key for key in record if not key.startswith("_")}  # `_owner`: ground truth, never served
            assert served <= declared(entity) | {"id"}, (entity, served - declared(entity))


PERMISSIONS = Path(__file__).parent / "contracts" / "graph" / "permissions" / "permissions.json"
# Calls Microsoft's permission index leaves out, with the permission the v1.0 reference names.
DOCUMENTED_PERMISSIONS = {
    ("POST", "/groups/{id}/members"): "GroupMember.ReadWrite.All",  # "Add members", Graph v1.0 reference
}


def granted_roles() -> set[str]:
    text = (Path(__file__).resolve().parent.parent / "infra" / "modules" / "graph-roles.bicep").read_text()
    return set(re.findall(r"^\s*'([A-Za-z.]+)'", text, re.MULTILINE))


def permission_path(request: Request) -> str:
    """The path as the permission index spells it: lower case, ids as {id}, no /$ref."""
    parts = request.path.removeprefix("/v1.0").removesuffix("/$ref").strip("/").split("/")
    named = {"devicemanagement", "manageddevices", "devices", "groups", "members", "syncdevice"}
    return "/" + "/".join(part.lower() if part.lower() in named else "{id}" for part in parts)


async def test_every_call_is_allowed_by_an_app_role_the_template_grants(every_call: list[Request]) -> None:
    roles = granted_roles()
    index = json.loads(PERMISSIONS.read_text())["permissions"]
    allowed: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for path_set in index[role]["pathSets"]:
            if "Application" in path_set["schemeKeys"]:
                for method in path_set["methods"]:
                    for path in path_set["paths"]:
                        allowed.setdefault((method, path), set()).add(role)
    for call, role in DOCUMENTED_PERMISSIONS.items():
        allowed.setdefault(call, set()).add(role)

    for request in every_call:
        call = (request.method, permission_path(request))
        assert allowed.get(call, set()) & roles, f"{call} is not allowed by any granted role ({sorted(roles)})"
