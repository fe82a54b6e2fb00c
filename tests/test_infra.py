"""The Bicep templates, checked without the Bicep CLI (design §8, §10): parsed with pycep-parser
and compared with the code they deploy, so the two can't drift apart."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from pycep import BicepParser

from handlers import vm_created, vm_deleted, vm_power
from responder.events import OPERATION_NAMES, OPERATIONS
from responder.settings import NOT_DEPLOYED, SETTING_NAMES

INFRA = Path(__file__).parent.parent / "infra"
TEMPLATES = sorted(INFRA.rglob("*.bicep"))
# Read by the Functions host, not by the responder's settings object.
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
EVENT_GRID_HANDLERS = {"on_vm_created": vm_created, "on_vm_power_changed": vm_power, "on_vm_deleted": vm_deleted}


@cache
def parsed(name: str) -> dict[str, Any]:
    document: dict[str, Any] = cast(dict[str, Any], BicepParser().parse(file_path=INFRA / name))
    return document


def app_settings() -> dict[str, Any]:
    settings: dict[str, Any] = parsed("modules/app.bicep")["resources"]["appSettings"]["config"]["properties"]
    return settings


def routed_functions() -> dict[str, dict[str, Any]]:
    entries = parsed("modules/watched-subscription.bicep")["variables"]["functions"]["value"]
    return {entry["name"]: entry for entry in entries}


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(path.relative_to(INFRA)) for path in TEMPLATES])
def test_every_template_parses_and_declares_something(template: Path) -> None:
    document = parsed(str(template.relative_to(INFRA)))

    assert document["resources"] or document["modules"]


def test_main_deploys_the_app_its_monitoring_the_watched_subscriptions_and_the_optional_graph_roles() -> None:
    modules = parsed("main.bicep")["modules"]

    assert {name: module["detail"]["path"] for name, module in modules.items()} == {
        "app": "modules/app.bicep",
        "monitoring": "modules/monitoring.bicep",
        "watchedRoles": "modules/watched-subscription-roles.bicep",
        "watchedTopics": "modules/watched-subscription.bicep",
        "topicSender": "modules/topic-sender.bicep",
        "graphRoles": "modules/graph-roles.bicep",
    }


def test_every_event_grid_function_has_an_event_subscription() -> None:
    assert set(routed_functions()) == set(EVENT_GRID_HANDLERS)


@pytest.mark.parametrize("function", sorted(EVENT_GRID_HANDLERS))
def test_each_subscription_filters_exactly_the_operations_its_handler_accepts(function: str) -> None:
    accepts = EVENT_GRID_HANDLERS[function].ACCEPTS
    entry = routed_functions()[function]

    assert sorted(entry["operations"]) == sorted(name for kind in accepts for name in OPERATION_NAMES[kind])
    event_types = {event_type for (event_type, _), kind in OPERATIONS.items() if kind in accepts}
    assert {event_type.lower() for event_type in entry["eventTypes"]} == event_types


def test_the_creation_function_hears_a_vms_extensions_land_after_the_vm() -> None:
    """An extension's event names the extension (`.../virtualMachines/{vm}/extensions/{name}`): both
    filters of the creation function's subscription let it through."""
    created = routed_functions()["on_vm_created"]
    subject = parsed("modules/watched-subscription.bicep")["variables"]["vmSubject"]["value"]
    (sample,) = json.loads((Path(__file__).parent / "events" / "eventgrid-vm-extension-write.json").read_text())

    assert sample["data"]["operationName"] in created["operations"]
    assert sample["eventType"] in created["eventTypes"]
    assert subject in sample["subject"]


def test_the_event_subscriptions_filter_on_operation_name_and_vm_subject_with_dead_lettering() -> None:
    config = parsed("modules/watched-subscription.bicep")["resources"]["subscriptions"]["config"]["config"]
    properties = config["properties"]

    assert [item["key"] for item in properties["filter"]["advancedFilters"]] == ["data.operationName", "subject"]
    assert properties["destination"]["endpointType"] == "AzureFunction"
    assert properties["retryPolicy"]["eventTimeToLiveInMinutes"] == 1440
    assert properties["deadLetterWithResourceIdentity"]["deadLetterDestination"]["endpointType"] == "StorageBlob"


def test_the_system_topic_watches_the_subscription_it_is_deployed_for() -> None:
    topic = parsed("modules/watched-subscription.bicep")["resources"]["topic"]["config"]["config"]

    assert topic["properties"]["topicType"] == "Microsoft.Resources.Subscriptions"
    assert topic["properties"]["source"] == "/subscriptions/${subscriptionId}"


def test_a_subscription_that_has_a_system_topic_gets_the_event_subscriptions_on_it_not_a_second_topic() -> None:
    # Azure allows one Microsoft.Resources.Subscriptions system topic per subscription.
    module = parsed("modules/watched-subscription.bicep")
    resources, variables = module["resources"], module["variables"]

    assert resources["topic"]["config"]["condition"] == "createTopic"
    assert resources["existingTopic"]["existing"] is True
    assert resources["existingTopic"]["config"]["config"]["name"] == "topicName"
    assert variables["topicName"]["value"]["operator"]["operands"]["false_value"] == "existingSystemTopicName"
    assert resources["subscriptions"]["config"]["config"]["name"].startswith("${topicName}/")


def test_main_passes_each_watched_subscriptions_existing_topic_to_its_module() -> None:
    text = (INFRA / "main.bicep").read_text()

    assert "existingSystemTopicName: string?" in text
    assert "existingSystemTopicName: watched.?existingSystemTopicName ?? ''" in text


def test_the_cleanup_worker_has_its_queue_and_poison_queue() -> None:
    resources = parsed("modules/app.bicep")["resources"]
    variables = parsed("modules/app.bicep")["variables"]

    assert app_settings()["RESPONDER_CLEANUP_QUEUE"] == "cleanupQueueName"
    assert resources["cleanupQueue"]["config"]["name"] == "cleanupQueueName"
    assert resources["cleanupPoisonQueue"]["config"]["name"] == "${cleanupQueueName}-poison"
    assert variables["cleanupQueueName"]["value"] == "vm-cleanup"


def test_the_device_check_has_its_queue_and_poison_queue() -> None:
    resources = parsed("modules/app.bicep")["resources"]
    variables = parsed("modules/app.bicep")["variables"]

    assert app_settings()["RESPONDER_DEVICE_CHECK_QUEUE"] == "deviceCheckQueueName"
    assert resources["deviceCheckQueue"]["config"]["name"] == "deviceCheckQueueName"
    assert resources["deviceCheckPoisonQueue"]["config"]["name"] == "${deviceCheckQueueName}-poison"
    assert variables["deviceCheckQueueName"]["value"] == "vm-device-check"


def test_every_setting_the_app_reads_is_deployed_and_nothing_else() -> None:
    deployed = set(app_settings()) - HOST_SETTINGS

    assert deployed == set(SETTING_NAMES) - set(NOT_DEPLOYED)


def test_the_tables_the_settings_name_exist() -> None:
    resources = parsed("modules/app.bicep")["resources"]
    variables = parsed("modules/app.bicep")["variables"]

    assert app_settings()["RESPONDER_LEDGER_TABLE"] == "ledgerTableName"
    assert app_settings()["RESPONDER_AUDIT_TABLE"] == "auditTableName"
    assert resources["ledgerTable"]["config"]["name"] == "ledgerTableName"
    assert resources["auditTable"]["config"]["name"] == "auditTableName"
    assert (variables["ledgerTableName"]["value"], variables["auditTableName"]["value"]) == (
        "vmledger",
        "responderaudit",
    )


@pytest.mark.parametrize("template", TEMPLATES, ids=[str(path.relative_to(INFRA)) for path in TEMPLATES])
def test_no_template_reads_or_emits_a_key_or_secret(template: Path) -> None:
    text = template.read_text()

    assert not re.search(r"listKeys|listKey\(|primaryKey|AccountKey=|SharedAccessKey|@secure", text)
    for name in parsed(str(template.relative_to(INFRA))).get("outputs", {}):
        assert not re.search(r"key|secret|password|connectionstring", name, re.IGNORECASE)


def test_storage_refuses_shared_keys_and_the_host_uses_the_identity() -> None:
    storage = parsed("modules/app.bicep")["resources"]["storage"]["config"]["properties"]

    assert storage["allowSharedKeyAccess"] is False
    assert app_settings()["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "AzureWebJobsStorage" not in app_settings()


def test_the_app_runs_python_3_11_on_flex_consumption() -> None:
    resources = parsed("modules/app.bicep")["resources"]
    runtime = resources["functionApp"]["config"]["properties"]["functionAppConfig"]["runtime"]

    assert resources["plan"]["config"]["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert runtime == {"name": "python", "version": "3.13"}


def test_the_graph_roles_are_exactly_the_least_privileged_set() -> None:
    roles = parsed("modules/graph-roles.bicep")["variables"]["roleNames"]["value"]

    assert sorted(roles) == sorted(
        [
            "DeviceManagementManagedDevices.ReadWrite.All",
            "DeviceManagementManagedDevices.PrivilegedOperations.All",
            "Device.ReadWrite.All",
            "GroupMember.ReadWrite.All",
            "DeviceManagementConfiguration.Read.All",
        ]
    )


def test_the_readme_names_every_deployment_parameter() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") : readme.index("## ", readme.index("## Deploy") + 3)]

    assert [name for name in parsed("main.bicep")["parameters"] if f"`{name}`" not in deploy] == []


def test_the_app_is_told_the_cloud_it_is_deployed_to() -> None:
    accessor = app_settings()["RESPONDER_CLOUD"]["operator"]

    assert accessor["type"] == "property_accessor"
    assert accessor["operands"] == {"operand_1": {"function": {"type": "environment"}}, "operand_2": "name"}


def test_the_graph_roles_are_granted_by_the_first_provision_only() -> None:
    # The postdeploy hook provisions again with createEventSubscriptions=true; re-creating an
    # existing appRoleAssignedTo fails with the Graph Bicep extension.
    text = (INFRA / "main.bicep").read_text()

    assert "module graphRoles 'modules/graph-roles.bicep' = if (grantGraphRoles && !createEventSubscriptions)" in text


def test_no_declaration_carries_the_same_decorator_twice() -> None:
    """Bicep refuses it (BCP166), and the parser these tests use does not."""
    repeated = []
    for template in TEMPLATES:
        decorators: list[str] = []
        for line in template.read_text().splitlines():
            text = line.strip()
            if text.startswith("@"):
                name = text[1:].split("(", 1)[0]
                if name in decorators:
                    repeated.append(f"{template.name}: @{name} twice before one declaration")
                decorators.append(name)
            elif text and not text.startswith("//"):
                decorators = []
    assert repeated == []


def test_every_deployment_parameter_is_mapped_to_an_azd_variable() -> None:
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]

    assert sorted(parsed("main.bicep")["parameters"]) == sorted(mapped)


def test_resource_names_come_from_the_abbreviations_or_an_override_not_from_literals() -> None:
    app = (INFRA / "modules" / "app.bicep").read_text()
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())

    for prefix in abbreviations.values():
        assert f"name: '{prefix}" not in app
    assert "loadJsonContent('abbreviations.json')" in (INFRA / "main.bicep").read_text()


def test_the_dead_letter_container_is_named_once_and_passed_on() -> None:
    watched = (INFRA / "modules" / "watched-subscription.bicep").read_text()

    assert "'deadletter'" not in watched
    assert "deadLetterContainerName: app.outputs.deadLetterContainerName" in (INFRA / "main.bicep").read_text()
