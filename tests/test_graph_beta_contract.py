"""The beta reads (`responder.adapters.graph_beta`) and the simulator's settings catalog against Graph's beta metadata.

`contracts/graph/beta-configurationPolicies.csdl.xml` holds the slice of Microsoft's beta CSDL these
reads touch (see contracts/README.md). Every `configurationPolicies` call must address what the slice
declares, with `$select` and `$expand` it declares; every policy, assignment, setting and setting
instance the simulator serves must carry only properties its type (and its base types) declares.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

from localdev.sim_http import Request
from localdev.simulators import Simulators
from responder.adapters.graph_beta import CONFIGURATION_POLICY_FIELDS, SETTING_FIELDS
from responder.composition import Services
from tests.test_graph_contract import complex_type_names

BETA = Path(__file__).parent / "contracts" / "graph" / "beta-configurationPolicies.csdl.xml"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
PATHS = [
    (re.compile(r"^/beta/deviceManagement/configurationPolicies$"), "deviceManagementConfigurationPolicy"),
    (
        re.compile(r"^/beta/deviceManagement/configurationPolicies/[^/]+/settings$"),
        "deviceManagementConfigurationSetting",
    ),
]


@cache
def beta_types() -> dict[str, tuple[set[str], set[str], bool]]:
    """Type name → (properties, navigation properties, abstract), its base types' included."""
    root = ET.parse(BETA).getroot()  # noqa: S314 (Microsoft's file, vendored in this repository)
    elements = {
        element.get("Name") or "": element
        for kind in ("EntityType", "ComplexType")
        for element in root.iter(f"{EDM}{kind}")
    }
    found: dict[str, tuple[set[str], set[str], bool]] = {}
    for name, element in elements.items():
        properties: set[str] = set()
        navigation: set[str] = set()
        current: ET.Element | None = element
        while current is not None:
            properties |= {p.get("Name") or "" for p in current.findall(f"{EDM}Property")}
            navigation |= {p.get("Name") or "" for p in current.findall(f"{EDM}NavigationProperty")}
            current = elements.get((current.get("BaseType") or "").removeprefix("graph."))
        found[name] = (properties, navigation, element.get("Abstract") == "true")
    return found


def entity_of(request: Request) -> str:
    for pattern, entity in PATHS:
        if pattern.match(request.path):
            return entity
    raise AssertionError(f"{request.path} is not a beta path this test knows of the metadata")


async def configuration_policy_calls(services: Services, simulators: Simulators) -> list[Request]:
    await services.directory.intune_policies()
    return [
        request
        for request in simulators.graph.operations
        if request.path.startswith("/beta/deviceManagement/configurationPolicies")
    ]


async def test_the_configuration_policy_reads_address_entities_the_beta_metadata_declares(
    services: Services, simulators: Simulators
) -> None:
    calls = await configuration_policy_calls(services, simulators)

    assert {entity_of(request) for request in calls} == {
        "deviceManagementConfigurationPolicy",
        "deviceManagementConfigurationSetting",
    }
    assert "configurationPolicies" in beta_types()["deviceManagement"][1]
    assert "settings" in beta_types()["deviceManagementConfigurationPolicy"][1]


async def test_every_beta_select_and_expand_is_declared_on_the_entity(
    services: Services, simulators: Simulators
) -> None:
    calls = await configuration_policy_calls(services, simulators)

    for request in calls:
        properties, navigation, _ = beta_types()[entity_of(request)]
        selected = {name for name in request.query.get("$select", "").split(",") if name}
        expanded = {name for name in request.query.get("$expand", "").split(",") if name}
        assert selected, request.path  # every read names its fields
        assert selected <= properties | {"id"}, (request.path, selected - properties)
        assert expanded <= navigation, (request.path, expanded - navigation)
    assert set(CONFIGURATION_POLICY_FIELDS) <= beta_types()["deviceManagementConfigurationPolicy"][0] | {"id"}
    assert set(SETTING_FIELDS) <= beta_types()["deviceManagementConfigurationSetting"][0] | {"id"}


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
