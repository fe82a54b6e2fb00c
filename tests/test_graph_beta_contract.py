"""The beta reads (`responder.adapters.graph_beta`) and the simulator's beta documents against Graph's beta metadata.

`contracts/graph/beta-configurationPolicies.csdl.xml`, `beta-assignmentFilters.csdl.xml` and
`beta-intents.csdl.xml` hold the slices of Microsoft's beta CSDL these reads touch (see contracts/README.md).
Every beta call must address what the slices declare, with `$select` and `$expand` they declare, and be
allowed by `DeviceManagementConfiguration.Read.All` in Microsoft's permission index; every policy, legacy
Endpoint security profile, assignment (and its target, with its assignment filter), setting, setting
instance and assignment filter the simulator serves must carry only properties its type (and its base
types) declares, enum values among the enum's members.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

from localdev.sim_http import Request, Response
from localdev.simulators import Simulators
from responder.adapters.graph_beta import (
    ASSIGNMENT_FILTER_FIELDS,
    CONFIGURATION_POLICY_FIELDS,
    INTENT_ASSIGNMENT_FIELDS,
    INTENT_FIELDS,
    INTENT_SETTING_FIELDS,
    SETTING_FIELDS,
)
from responder.ports import Services
from tests.test_graph_contract import CSDL, PERMISSIONS, complex_type_names, granted_roles

GRAPH_CONTRACTS = Path(__file__).parent / "contracts" / "graph"
BETA = [
    GRAPH_CONTRACTS / "beta-configurationPolicies.csdl.xml",
    GRAPH_CONTRACTS / "beta-assignmentFilters.csdl.xml",
    GRAPH_CONTRACTS / "beta-intents.csdl.xml",
]
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
PATHS = [
    (re.compile(r"^/beta/deviceManagement/configurationPolicies$"), "deviceManagementConfigurationPolicy"),
    (
        re.compile(r"^/beta/deviceManagement/configurationPolicies/[^/]+/settings$"),
        "deviceManagementConfigurationSetting",
    ),
    (re.compile(r"^/beta/deviceManagement/deviceConfigurations$"), "deviceConfiguration"),
    (re.compile(r"^/beta/deviceManagement/deviceCompliancePolicies$"), "deviceCompliancePolicy"),
    (re.compile(r"^/beta/deviceManagement/assignmentFilters$"), "deviceAndAppManagementAssignmentFilter"),
    (re.compile(r"^/beta/deviceManagement/intents$"), "deviceManagementIntent"),
    (re.compile(r"^/beta/deviceManagement/intents/[^/]+/assignments$"), "deviceManagementIntentAssignment"),
    (re.compile(r"^/beta/deviceManagement/intents/[^/]+/settings$"), "deviceManagementSettingInstance"),
]
# The beta list of profiles is read whole (`@odata.type` decides which are kept, of types with different
# properties); every other beta read names its fields.
UNSELECTED = {"deviceConfiguration"}
# The role every beta read needs, as Microsoft's permission index grants it to an application.
BETA_ROLE = "DeviceManagementConfiguration.Read.All"
FILTER_TYPE = "deviceAndAppManagementAssignmentFilterType"


@cache
def beta_types() -> dict[str, tuple[set[str], set[str], bool]]:
    """Type name → (properties, navigation properties, abstract), its base types' included; a type two slices
    hold (`deviceManagement`, each cut to its own navigation properties) has what either declares."""
    elements: dict[str, list[ET.Element]] = {}
    for path in BETA:
        root = ET.parse(path).getroot()  # noqa: S314 (Microsoft's file, vendored in this repository)
        for kind in ("EntityType", "ComplexType"):
            for element in root.iter(f"{EDM}{kind}"):
                elements.setdefault(element.get("Name") or "", []).append(element)
    found: dict[str, tuple[set[str], set[str], bool]] = {}
    for name, declared in elements.items():
        properties: set[str] = set()
        navigation: set[str] = set()
        current = declared
        while current:
            properties |= {p.get("Name") or "" for e in current for p in e.findall(f"{EDM}Property")}
            navigation |= {p.get("Name") or "" for e in current for p in e.findall(f"{EDM}NavigationProperty")}
            current = elements.get((current[0].get("BaseType") or "").removeprefix("graph."), [])
        found[name] = (properties, navigation, any(e.get("Abstract") == "true" for e in declared))
    return found


@cache
def beta_enums() -> dict[str, set[str]]:
    """Enum type name → its members."""
    return {
        element.get("Name") or "": {member.get("Name") or "" for member in element.findall(f"{EDM}Member")}
        for path in BETA
        for element in ET.parse(path).getroot().iter(f"{EDM}EnumType")  # noqa: S314
    }


@cache
def base_types(name: str) -> list[str]:
    """The type and its base types, nearest first."""
    elements = {
        element.get("Name") or "": element
        for path in BETA
        for element in ET.parse(path).getroot().iter(f"{EDM}ComplexType")  # noqa: S314
    }
    chain = []
    while name in elements:
        chain.append(name)
        name = (elements[name].get("BaseType") or "").removeprefix("graph.")
    return chain


def entity_of(request: Request) -> str:
    for pattern, entity in PATHS:
        if pattern.match(request.path):
            return entity
    raise AssertionError(f"{request.path} is not a beta path this test knows of the metadata")


# A legacy Endpoint security BitLocker profile (the sample tenant has none), so its reads are made too.
LEGACY_INTENT: dict[str, Any] = {
    "id": "1e7e0002-0000-4000-8000-000000000002",
    "displayName": "BitLocker (Windows 10 and later)",
    "templateId": "d1174162-1dd2-4976-affc-6667049ab0ae",
    "assignments": [{"id": "a0", "target": {"@odata.type": "#microsoft.graph.allDevicesAssignmentTarget"}}],
    "settings": [
        {
            "@odata.type": "#microsoft.graph.deviceManagementBooleanSettingInstance",
            "id": "s0",
            "definitionId": "deviceConfiguration--windows10EndpointProtectionConfiguration_bitLockerEncryptDevice",
            "valueJson": "true",
            "value": True,
        },
        {
            "@odata.type": "#microsoft.graph.deviceManagementComplexSettingInstance",
            "id": "s1",
            "definitionId": (
                "deviceConfiguration--windows10EndpointProtectionConfiguration_bitLockerRemovableDrivePolicy"
            ),
            "valueJson": '{"requireEncryptionForWriteAccess":false}',
        },
    ],
}


async def beta_calls(services: Services, simulators: Simulators) -> list[Request]:
    """Every beta call of one policy read (the sample names an assignment filter: they are read too)."""
    simulators.tenant.intents[LEGACY_INTENT["id"]] = LEGACY_INTENT
    await services.directory.intune_policies()
    return [request for request in simulators.graph.operations if request.path.startswith("/beta/")]


async def test_the_beta_reads_address_entities_the_beta_metadata_declares(
    services: Services, simulators: Simulators
) -> None:
    calls = await beta_calls(services, simulators)

    assert {entity_of(request) for request in calls} == {
        "deviceConfiguration",
        "deviceCompliancePolicy",
        "deviceManagementConfigurationPolicy",
        "deviceManagementConfigurationSetting",
        "deviceAndAppManagementAssignmentFilter",
        "deviceManagementIntent",
        "deviceManagementIntentAssignment",
        "deviceManagementSettingInstance",
    }
    assert {"assignments", "settings"} <= beta_types()["deviceManagementIntent"][1]
    assert {
        "configurationPolicies",
        "deviceConfigurations",
        "deviceCompliancePolicies",
        "assignmentFilters",
        "intents",
    } <= (beta_types()["deviceManagement"][1])
    assert "settings" in beta_types()["deviceManagementConfigurationPolicy"][1]


async def test_every_beta_select_and_expand_is_declared_on_the_entity(
    services: Services, simulators: Simulators
) -> None:
    calls = await beta_calls(services, simulators)

    for request in calls:
        properties, navigation, _ = beta_types()[entity_of(request)]
        selected = {name for name in request.query.get("$select", "").split(",") if name}
        expanded = {name for name in request.query.get("$expand", "").split(",") if name}
        assert selected or entity_of(request) in UNSELECTED, request.path  # every read names its fields
        assert selected <= properties | {"id"}, (request.path, selected - properties)
        assert expanded <= navigation, (request.path, expanded - navigation)
    assert set(CONFIGURATION_POLICY_FIELDS) <= beta_types()["deviceManagementConfigurationPolicy"][0] | {"id"}
    assert set(SETTING_FIELDS) <= beta_types()["deviceManagementConfigurationSetting"][0] | {"id"}
    assert set(ASSIGNMENT_FILTER_FIELDS) <= beta_types()["deviceAndAppManagementAssignmentFilter"][0] | {"id"}
    assert set(INTENT_FIELDS) <= beta_types()["deviceManagementIntent"][0] | {"id"}
    assert set(INTENT_ASSIGNMENT_FIELDS) <= beta_types()["deviceManagementIntentAssignment"][0] | {"id"}
    assert set(INTENT_SETTING_FIELDS) <= beta_types()["deviceManagementSettingInstance"][0] | {"id"}


async def test_every_beta_call_is_allowed_by_the_configuration_read_role_the_template_grants(
    services: Services, simulators: Simulators
) -> None:
    calls = await beta_calls(services, simulators)
    index = json.loads(PERMISSIONS.read_text())["permissions"]
    allowed = {
        (method, path)
        for path_set in index[BETA_ROLE]["pathSets"]
        if "Application" in path_set["schemeKeys"]
        for method in path_set["methods"]
        for path in path_set["paths"]
    }

    called = {(request.method, permission_path(request)) for request in calls}

    assert BETA_ROLE in granted_roles()
    assert ("GET", "/devicemanagement/assignmentfilters") in called
    assert called <= allowed, called - allowed


def permission_path(request: Request) -> str:
    """The path as the permission index spells it: lower case, a policy's id as {id}."""
    path = request.path.lower().removeprefix("/beta")
    return re.sub(r"/(configurationpolicies|intents)/[^/]+/", r"/\1/{id}/", path)


def test_the_simulated_configuration_policies_carry_only_properties_the_beta_metadata_declares(
    simulators: Simulators,
) -> None:
    policies = list(simulators.tenant.configuration_policies.values())
    assert policies
    policy_properties, _, _ = beta_types()["deviceManagementConfigurationPolicy"]
    assignment_properties, _, _ = beta_types()["deviceManagementConfigurationPolicyAssignment"]
    for policy in policies:
        served = {key for key in policy if not key.startswith("@odata.")} - {"assignments", "settings"}
        assert served <= policy_properties | {"id"}, served - policy_properties
        assert (
            set(policy["templateReference"]) <= beta_types()["deviceManagementConfigurationPolicyTemplateReference"][0]
        )
        for assignment in policy["assignments"]:
            assert set(assignment) <= assignment_properties | {"id"}
            assert assignment["target"]["@odata.type"].removeprefix("#microsoft.graph.") in complex_type_names()
        for setting in policy["settings"]:
            assert set(setting) <= beta_types()["deviceManagementConfigurationSetting"][0] | {"id"}
            assert_declared(setting["settingInstance"])


def assert_declared(value: dict[str, Any]) -> None:
    """A setting instance or value: a concrete type of the slice, only its properties, nested ones too."""
    name = str(value["@odata.type"]).removeprefix("#microsoft.graph.")
    properties, _, abstract = beta_types()[name]
    assert not abstract, name
    assert {key for key in value if not key.startswith("@odata.")} <= properties, (name, set(value) - properties)
    for key, inner in value.items():
        if isinstance(inner, dict) and "@odata.type" in inner:
            assert_declared(inner)
        elif isinstance(inner, list):
            for item in inner:
                if isinstance(item, dict) and "@odata.type" in item:
                    assert_declared(item)
        elif key.endswith("TemplateReference") and inner is not None:
            assert isinstance(inner, dict)


def test_the_adapter_reads_a_setting_instance_by_the_properties_the_metadata_names() -> None:
    """What `configuration_policy_from_json` walks: the instance's definition id and each kind of value."""
    types = beta_types()
    assert "settingDefinitionId" in types["deviceManagementConfigurationSettingInstance"][0]
    assert "choiceSettingValue" in types["deviceManagementConfigurationChoiceSettingInstance"][0]
    assert "simpleSettingValue" in types["deviceManagementConfigurationSimpleSettingInstance"][0]
    assert "groupSettingCollectionValue" in types["deviceManagementConfigurationGroupSettingCollectionInstance"][0]
    assert {"value", "children"} <= types["deviceManagementConfigurationChoiceSettingValue"][0]
    assert "children" in types["deviceManagementConfigurationGroupSettingValue"][0]
    assert "templateFamily" in types["deviceManagementConfigurationPolicyTemplateReference"][0]


def served(simulators: Simulators, path: str, **query: str) -> list[dict[str, Any]]:
    """What the simulator answers a beta list read (one page is all the sample holds)."""
    answer: Response = simulators.graph_router(Request("GET", path, query, {}, None))
    assert answer.status == 200, answer.body
    assert "@odata.nextLink" not in answer.body
    return list(answer.body["value"])


def test_the_simulated_assignment_filters_carry_only_what_the_beta_metadata_declares(simulators: Simulators) -> None:
    filters = served(simulators, "/beta/deviceManagement/assignmentFilters")
    selected = served(
        simulators, "/beta/deviceManagement/assignmentFilters", **{"$select": ",".join(ASSIGNMENT_FILTER_FIELDS)}
    )

    assert filters
    properties, _, _ = beta_types()["deviceAndAppManagementAssignmentFilter"]
    for found in filters:
        assert set(found) <= properties | {"id"}, set(found) - properties
        assert found["platform"] in beta_enums()["devicePlatformType"]
        assert found["rule"]
        assert found["displayName"]
    assert all(set(found) == set(ASSIGNMENT_FILTER_FIELDS) for found in selected)


def test_every_beta_assignment_target_carries_its_filter_as_the_beta_metadata_declares(simulators: Simulators) -> None:
    lists = {
        "/beta/deviceManagement/deviceConfigurations": "deviceConfigurationAssignment",
        "/beta/deviceManagement/deviceCompliancePolicies": "deviceCompliancePolicyAssignment",
        "/beta/deviceManagement/configurationPolicies": "deviceManagementConfigurationPolicyAssignment",
    }
    filter_ids = {found["id"] for found in served(simulators, "/beta/deviceManagement/assignmentFilters")}
    filtered = []
    for path, assignment_type in lists.items():
        for policy in served(simulators, path, **{"$expand": "assignments"}):
            for assignment in policy["assignments"]:
                assert set(assignment) <= beta_types()[assignment_type][0] | {"id"}, (path, assignment)
                target = assignment["target"]
                name = str(target["@odata.type"]).removeprefix("#microsoft.graph.")
                properties, _, abstract = beta_types()[name]
                assert not abstract, name
                assert "deviceAndAppManagementAssignmentTarget" in base_types(name), name
                assert {key for key in target if not key.startswith("@odata.")} <= properties, (name, target)
                assert target[FILTER_TYPE] in beta_enums()["deviceAndAppManagementAssignmentFilterType"]  # not nullable
                if target[FILTER_TYPE] != "none":
                    assert target["deviceAndAppManagementAssignmentFilterId"] in filter_ids
                    filtered.append(policy["id"])
    assert filtered  # the sample has a filtered assignment


def test_v1_assignment_targets_carry_no_filter_as_v1_declares_none(simulators: Simulators) -> None:
    root = ET.parse(CSDL).getroot()  # noqa: S314
    (v1_target,) = [
        e for e in root.iter(f"{EDM}ComplexType") if e.get("Name") == "deviceAndAppManagementAssignmentTarget"
    ]
    assert not v1_target.findall(f"{EDM}Property")
    for path in ("/v1.0/deviceManagement/deviceConfigurations", "/v1.0/deviceManagement/deviceCompliancePolicies"):
        answer = simulators.graph_router(Request("GET", path, {"$expand": "assignments"}, {}, None))
        for policy in answer.body["value"]:
            for assignment in policy["assignments"]:
                assert not {key for key in assignment["target"] if key.startswith("deviceAndAppManagementAssignment")}


def test_the_simulated_legacy_endpoint_security_profiles_carry_only_what_the_beta_metadata_declares(
    simulators: Simulators,
) -> None:
    simulators.tenant.intents[LEGACY_INTENT["id"]] = LEGACY_INTENT
    (listed,) = served(simulators, "/beta/deviceManagement/intents")
    assignments = served(simulators, f"/beta/deviceManagement/intents/{LEGACY_INTENT['id']}/assignments")
    settings = served(simulators, f"/beta/deviceManagement/intents/{LEGACY_INTENT['id']}/settings")

    properties, _, _ = beta_types()["deviceManagementIntent"]
    assert set(listed) <= properties | {"id"}, set(listed) - properties
    assert listed["isAssigned"] is True
    for assignment in assignments:
        assert set(assignment) <= beta_types()["deviceManagementIntentAssignment"][0] | {"id"}
        assert assignment["target"]["@odata.type"].removeprefix("#microsoft.graph.") in complex_type_names()
    for setting in settings:
        assert_declared({key: value for key, value in setting.items() if key != "id"})
