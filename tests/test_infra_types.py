"""Every resource body in `infra/` type-checks against Microsoft's Bicep types of its exact
apiVersion (vendored in tests/contracts/bicep-types): no unknown property, no read-only one
set, no literal outside a closed set, no unknown discriminator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from pycep import BicepParser

from tests.bicep_types import BicepTypes, Resource, identifiers_of, resources_of

INFRA = Path(__file__).resolve().parent.parent / "infra"
TYPES = BicepTypes(Path(__file__).parent / "contracts" / "bicep-types")
TEMPLATES = sorted(path.relative_to(INFRA).as_posix() for path in INFRA.rglob("*.bicep"))


def parsed(name: str) -> tuple[list[Resource], set[str]]:
    path = INFRA / name
    document = cast(dict[str, Any], unquoted_keys(BicepParser().parse(file_path=path)))
    return resources_of(document), identifiers_of(document, path.read_text())


def unquoted_keys(value: Any) -> Any:
    """pycep keeps a quoted property name's quotes (`'odata.type': ...` → key "'odata.type'"); the
    resource body's property is the name inside them."""
    if isinstance(value, dict):
        return {unquoted(key): unquoted_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unquoted_keys(item) for item in value]
    return value


def unquoted(key: Any) -> Any:
    return key[1:-1] if isinstance(key, str) and len(key) > 1 and key[0] == key[-1] == "'" else key


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_resource_body_matches_its_api_versions_types(template: str) -> None:
    resources, identifiers = parsed(template)

    for resource in resources:
        assert TYPES.knows(resource.type_and_version), f"no vendored types for {resource.type_and_version}"
        assert TYPES.problems(resource, identifiers) == [], resource.type_and_version


def test_the_checker_finds_an_unknown_property_a_read_only_one_and_an_unknown_discriminator() -> None:
    body = {
        "name": "evgt",
        "location": "global",
        "properties": {"source": "/subscriptions/x", "topicType": "x", "provisioningState": "Succeeded", "sauce": 1},
    }
    config = {"name": "appsetings", "properties": {}}  # a typo in the discriminator

    problems = TYPES.problems(Resource("Microsoft.EventGrid/systemTopics@2025-02-15", body), set())
    discriminated = TYPES.problems(Resource("Microsoft.Web/sites/config@2024-04-01", config), set())

    assert any("sauce: no such property" in problem for problem in problems)
    assert any("provisioningState: read-only" in problem for problem in problems)
    assert any("name: 'appsetings' is not one of" in problem for problem in discriminated)


def test_a_quoted_property_name_is_checked_as_the_property_it_names() -> None:
    """The metric alerts' criteria are chosen by `'odata.type'`, a quoted name: read without its
    quotes, an unknown criteria type is found."""
    document = unquoted_keys(
        {"properties": {"criteria": {"'odata.type'": "Microsoft.Azure.Monitor.SingleResourceMultipleMetrics"}}}
    )
    body = {"location": "global", **document}

    problems = TYPES.problems(Resource("Microsoft.Insights/metricAlerts@2026-01-01", body), set())

    assert any(
        "odata.type: 'Microsoft.Azure.Monitor.SingleResourceMultipleMetrics' is not one of" in problem
        for problem in problems
    )


def test_the_event_grid_metric_alerts_criteria_are_checked_against_their_type() -> None:
    resources, identifiers = parsed("modules/watched-subscription.bicep")
    (alert,) = [
        resource for resource in resources if resource.type_and_version == "Microsoft.Insights/metricAlerts@2026-01-01"
    ]
    criteria = alert.body["properties"]["criteria"]
    wrong = Resource(
        alert.type_and_version,
        {**alert.body, "properties": {**alert.body["properties"], "criteria": {**criteria, "allof": []}}},
    )

    assert criteria["odata.type"] == "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    assert any("allof: no such property" in problem for problem in TYPES.problems(wrong, identifiers))
