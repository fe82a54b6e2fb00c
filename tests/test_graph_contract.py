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

from localdev.graph_sim import BETA_ONLY_TYPES, V1_ENROLLMENT_TYPES
from localdev.sim_http import Request
from localdev.simulators import Simulators
from responder.decisions.facts import DeviceReads
from responder.decisions.intune_policies import BETA_ONLY_PROFILE_TYPES, BITLOCKER_SETTINGS, TPM_COMPLIANCE_SETTINGS
from responder.decisions.suppression import AddToGroup, RemoveFromGroup, SetAttribute, SyncDevice
from responder.ports import Services

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
    (re.compile(r"^/v1\.0/deviceManagement/deviceConfigurations$"), "deviceConfiguration"),
    (re.compile(r"^/v1\.0/deviceManagement/deviceCompliancePolicies$"), "deviceCompliancePolicy"),
    (re.compile(r"^/v1\.0/devices/[^/]+/transitiveMemberOf$"), "directoryObject"),
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
    await directory.read_devices(
        DeviceReads(
            managed_ids=(WIN11_MANAGED,),
            entra_object_ids=(WIN11_ENTRA,),
            anchors=(
                f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01",
            ),
            names=("vm-win11-01",),
            device_ids=(WIN11_DEVICE_ID,),
        )
    )
    await directory.get_managed_device(WIN11_MANAGED)
    _ = [device async for device in directory.windows_virtual_machines()]
    await directory.find_entra_devices(WIN11_DEVICE_ID)
    await directory.apply(
        [
            SetAttribute(WIN11_ENTRA, 7, "deallocated"),
            AddToGroup(GROUP, WIN11_ENTRA),
            RemoveFromGroup(GROUP, WIN11_ENTRA),
            SyncDevice(WIN11_MANAGED),
        ]
    )
    await directory.records_exist(WIN11_MANAGED, WIN11_ENTRA)
    await directory.device_group_ids(WIN11_ENTRA)
    await directory.intune_policies()
    await directory.delete_records(WIN11_MANAGED, WIN11_ENTRA)
    return [request for request in simulators.graph.operations if request.path != "/v1.0/$batch"]


@pytest.fixture
def every_v1_call(every_call: list[Request]) -> list[Request]:
    """What the v1.0 metadata can judge: every call but the one named beta call."""
    return [request for request in every_call if request.path.startswith("/v1.0/")]


async def test_every_path_the_adapter_calls_is_an_entity_of_the_metadata(every_v1_call: list[Request]) -> None:
    assert {entity_of(request)[0] for request in every_v1_call} == {
        "managedDevice",
        "device",
        "group",
        "deviceConfiguration",
        "deviceCompliancePolicy",
        "directoryObject",
    }


async def test_every_select_field_exists_on_the_entity(every_v1_call: list[Request]) -> None:
    for request in every_v1_call:
        entity, _ = entity_of(request)
        selected = {field for field in request.query.get("$select", "").split(",") if field}
        assert entity is not None
        assert selected <= declared(entity), (request.path, selected - declared(entity))


async def test_every_filter_property_exists_on_the_entity(every_v1_call: list[Request]) -> None:
    filtered = [request for request in every_v1_call if "$filter" in request.query]
    assert filtered
    for request in filtered:
        entity, _ = entity_of(request)
        used = set(FILTER_PROPERTY.findall(request.query["$filter"]))
        assert entity is not None
        assert used
        assert used <= declared(entity), (request.query["$filter"], used - declared(entity))


async def test_every_patched_property_exists_on_the_entity(every_v1_call: list[Request]) -> None:
    patches = [request for request in every_v1_call if request.method == "PATCH"]
    assert patches
    for request in patches:
        entity, _ = entity_of(request)
        assert entity is not None
        properties = {key for key in request.body or {} if not key.startswith("@odata.")}  # annotations
        assert properties <= declared(entity), (request.path, properties - declared(entity))


async def test_every_action_is_bound_to_the_entity(every_v1_call: list[Request]) -> None:
    called = {(entity, action) for entity, action in map(entity_of, every_v1_call) if action}
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


async def test_every_expanded_property_is_a_navigation_property_of_the_entity(every_v1_call: list[Request]) -> None:
    expanded = [request for request in every_v1_call if "$expand" in request.query]
    assert {entity_of(request)[0] for request in expanded} == {"deviceConfiguration", "deviceCompliancePolicy"}
    for request in expanded:
        entity, _ = entity_of(request)
        assert entity is not None
        assert set(request.query["$expand"].split(",")) <= navigation(entity), request.query["$expand"]


async def test_transitive_member_of_is_a_navigation_property_of_a_device(every_v1_call: list[Request]) -> None:
    assert any(request.path.endswith("/transitiveMemberOf") for request in every_v1_call)
    assert "transitiveMemberOf" in navigation("device")


async def test_the_beta_calls_are_the_profiles_configuration_policies_intents_assignment_targets_and_filters(
    every_call: list[Request],
) -> None:
    """Beta is read only where v1.0 has nothing (`responder.adapters.graph_beta`; the beta metadata judges
    those calls in tests/test_graph_beta_contract.py)."""
    beta = [
        (request.method, request.path, request.query) for request in every_call if request.path.startswith("/beta/")
    ]
    assert beta[0] == ("GET", "/beta/deviceManagement/deviceConfigurations", {"$expand": "assignments"})
    assert beta[1] == (
        "GET",
        "/beta/deviceManagement/configurationPolicies",
        {"$select": "id,name,platforms,technologies,templateReference", "$expand": "assignments"},
    )
    assert {
        (method, re.sub(r"Policies/[^/]+/", "Policies/{id}/", path), str(query)) for method, path, query in beta[2:]
    } == {
        ("GET", "/beta/deviceManagement/configurationPolicies/{id}/settings", str({"$select": "id,settingInstance"})),
        # legacy Endpoint security profiles (the sample has none: only the list)
        ("GET", "/beta/deviceManagement/intents", str({"$select": "id,displayName,isAssigned"})),
        # every assignment's target with its filter (v1.0's declares none), and the tenant's filters
        ("GET", "/beta/deviceManagement/deviceCompliancePolicies", str({"$select": "id", "$expand": "assignments"})),
        ("GET", "/beta/deviceManagement/assignmentFilters", str({"$select": "id,displayName,platform,rule"})),
    }
    v1_types = {name.lower() for name in metadata()[0]}
    assert BETA_ONLY_PROFILE_TYPES == BETA_ONLY_TYPES  # the product keeps what the simulator serves from beta only
    for odata_type in BETA_ONLY_PROFILE_TYPES:  # ...types the v1.0 metadata indeed doesn't have
        assert odata_type.removeprefix("#microsoft.graph.") not in v1_types
    assert "deviceManagementConfigurationPolicy" not in metadata()[0]  # and configurationPolicies is beta only


def test_the_simulated_policies_carry_only_properties_graph_declares(simulators: Simulators) -> None:
    complex_types = complex_type_names()
    policies = [
        *simulators.tenant.configurations.values(),
        *simulators.tenant.compliance_policies.values(),
    ]
    v1_policies = [p for p in policies if str(p["@odata.type"]).lower() not in BETA_ONLY_TYPES]
    assert {str(p["@odata.type"]) for p in v1_policies} >= {
        "#microsoft.graph.windows10EndpointProtectionConfiguration",
        "#microsoft.graph.windows10CompliancePolicy",
        "#microsoft.graph.windows10CustomConfiguration",
    }
    for policy in v1_policies:
        entity = str(policy["@odata.type"]).removeprefix("#microsoft.graph.")
        served = {key for key in policy if not key.startswith("@odata.")}
        assert served <= declared(entity) | {"id"}, (entity, served - declared(entity))
        for assignment in policy["assignments"]:
            assert assignment["target"]["@odata.type"].removeprefix("#microsoft.graph.") in complex_types
        for setting in policy.get("omaSettings", []):
            assert setting["@odata.type"].removeprefix("#microsoft.graph.") in complex_types


def test_the_adapter_reads_the_settings_it_classifies_by_their_v1_names() -> None:
    properties = metadata()[0]
    assert set(TPM_COMPLIANCE_SETTINGS) <= properties["windows10CompliancePolicy"]
    assert set(BITLOCKER_SETTINGS) <= properties["windows10EndpointProtectionConfiguration"]
    assert "enrollmentProfileName" in properties["managedDevice"]


def test_the_simulator_serves_only_the_enrolment_types_v1_declares() -> None:
    root = ET.parse(CSDL).getroot()  # noqa: S314
    (enum,) = [e for e in root.iter(f"{EDM}EnumType") if e.get("Name") == "deviceEnrollmentType"]

    assert {member.get("Name") for member in enum.findall(f"{EDM}Member")} == V1_ENROLLMENT_TYPES


@cache
def complex_type_names() -> set[str]:
    root = ET.parse(CSDL).getroot()  # noqa: S314
    return {element.get("Name") or "" for element in root.iter(f"{EDM}ComplexType")}


@cache
def navigation(entity: str) -> set[str]:
    """The navigation properties of an entity type, its base types' included."""
    root = ET.parse(CSDL).getroot()  # noqa: S314
    types = {element.get("Name"): element for element in root.iter(f"{EDM}EntityType")}
    found: set[str] = set()
    current = types.get(entity)
    while current is not None:
        found |= {p.get("Name") or "" for p in current.findall(f"{EDM}NavigationProperty")}
        current = types.get((current.get("BaseType") or "").removeprefix("graph."))
    return found


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
    parts = request.path.removeprefix("/v1.0").removeprefix("/beta").removesuffix("/$ref").strip("/").split("/")
    named = {
        "devicemanagement",
        "manageddevices",
        "devices",
        "groups",
        "members",
        "syncdevice",
        "deviceconfigurations",
        "devicecompliancepolicies",
        "transitivememberof",
        "configurationpolicies",
        "settings",
        "assignmentfilters",
        "intents",
        "assignments",
    }
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
