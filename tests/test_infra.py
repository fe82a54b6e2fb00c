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
from responder.decisions.events import OPERATION_NAMES, OPERATIONS
from responder.decisions.settings import NOT_DEPLOYED, SETTING_NAMES

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


def test_the_script_for_other_clouds_grants_the_same_graph_roles_as_the_template() -> None:
    """Where the Graph Bicep extension doesn't run, `scripts/grant-graph-roles` grants them: the same set."""
    script = (Path(__file__).parent.parent / "scripts" / "grant-graph-roles").read_text()
    listed = re.search(r"^ROLES=\(\n(.*?)^\)", script, re.M | re.S)

    assert listed is not None
    assert sorted(listed.group(1).split()) == sorted(
        parsed("modules/graph-roles.bicep")["variables"]["roleNames"]["value"]
    )


def _readme_section(title: str) -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index(f"## {title}")
    return readme[start : readme.index("\n## ", start + 3)]


def test_the_readme_names_every_deployment_parameter_once() -> None:
    """One table a parameter: the app settings' under Configure, the others' under Deploy."""
    tables = _readme_section("Configure") + _readme_section("Deploy")
    named = [line.split("|")[1:3] for line in tables.splitlines() if line.startswith("| `")]  # first two cells

    assert [
        name for name in parsed("main.bicep")["parameters"] if sum(f"`{name}`" in " ".join(row) for row in named) != 1
    ] == []


def test_the_readme_configure_table_names_every_setting_the_app_reads() -> None:
    from responder.decisions.settings import DECLARED

    rows = [line for line in _readme_section("Configure").splitlines() if line.startswith("| `")]

    assert [setting.name for setting in DECLARED if not any(f"`{setting.name}`" in row for row in rows)] == []


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


# The responder's alerts (infra/monitoring/alerts.json, deployed by modules/monitoring.bicep) and
# Event Grid's own (modules/watched-subscription.bicep), and where the admin finds the workbook.
MONITORING = INFRA / "monitoring"
DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")


def alert_definitions() -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = json.loads((MONITORING / "alerts.json").read_text())["alerts"]
    return alerts


def log_alert_rule() -> dict[str, Any]:
    """The body of the scheduled query rule deployed once per alert of alerts.json."""
    rule: dict[str, Any] = parsed("modules/monitoring.bicep")["resources"]["rules"]["config"]
    return rule


def unquoted(name: str) -> str:
    return name[1:-1] if len(name) > 1 and name[0] == name[-1] == "'" else name


def accessed(expression: Any) -> tuple[Any, Any]:
    """`a.b` (or `a.?b`) parsed: ("a", "b")."""
    operands = expression["operator"]["operands"]
    assert expression["operator"]["type"] == "property_accessor"
    return operands["operand_1"], operands["operand_2"]


def alert_defaults() -> dict[str, Any]:
    """What the template assumes for a field an alert of alerts.json leaves out."""
    defaults: dict[str, Any] = parsed("modules/monitoring.bicep")["variables"]["alertDefaults"]["value"]
    return defaults


def seconds(duration: str) -> int:
    match = DURATION.fullmatch(duration)
    assert match, duration
    days, hours, minutes = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60


def projected_columns(query: str) -> set[str]:
    """The columns of the query's last `project` (a bare column or `name = expression`), read loosely:
    the clause runs to the next pipe, its items split on the commas outside parentheses."""
    clause = query[query.rindex("| project ") + len("| project ") :].split("|", 1)[0]
    items, depth, current = [], 0, ""
    for character in clause:
        depth += {"(": 1, ")": -1}.get(character, 0)
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    items.append(current)
    return {item.split("=", 1)[0].strip() for item in items if item.strip()}


def test_the_log_alert_rules_are_the_alerts_of_alerts_json_with_the_fields_they_leave_out() -> None:
    rules = parsed("modules/monitoring.bicep")["resources"]["rules"]
    alerts = parsed("modules/monitoring.bicep")["variables"]["alerts"]["value"]

    assert rules["config"]["loop_type"]["detail"] == {"item_name": "alert", "array_name": "alerts"}
    assert alerts["config"] == {
        "function": {"type": "union", "parameters": {"arg_1": "alertDefaults", "arg_2": "alert"}}
    }
    assert accessed(alerts["loop_type"]["detail"]["array_name"]) == (
        {
            "function": {
                "type": "load_json_content",
                "parameters": {"file_path": "../monitoring/alerts.json", "json_path": None, "encoding": None},
            }
        },
        "alerts",
    )
    assert rules["config"]["config"]["kind"] == "LogAlert"


def test_every_alert_of_alerts_json_has_its_query_file_and_the_template_loads_it() -> None:
    loaded = {unquoted(name) for name in parsed("modules/monitoring.bicep")["variables"]["queries"]["value"]}
    named = {alert["query"] for alert in alert_definitions()}

    assert named <= {path.name for path in (MONITORING / "alerts").glob("*.kql")}
    assert named == loaded


def test_every_dimension_an_alert_splits_on_is_a_column_its_query_projects() -> None:
    missing = []
    for alert in alert_definitions():
        columns = (
            projected_columns((MONITORING / "alerts" / alert["query"]).read_text()) if alert["dimensions"] else set()
        )
        missing += [f"{alert['name']}: {name}" for name in alert["dimensions"] if name not in columns]
    assert missing == []


def test_the_column_reader_finds_named_and_bare_columns_of_the_last_project() -> None:
    query = (
        "T | join (U | project OperationId) on OperationId\n"
        "| project TimeGenerated, function = OperationName,\n    code = tostring(pack('a', 1, 'b', 2)), queue"
    )

    assert projected_columns(query) == {"TimeGenerated", "function", "code", "queue"}


def test_no_alert_is_both_stateful_and_muted() -> None:
    # alerts.json never sets both; Microsoft documents them as two separate options (autoMitigate,
    # default true: resolve and notify once per condition; muteActionsDuration: quiet after firing).
    assert [alert["name"] for alert in alert_definitions() if alert["stateful"] and "mute" in alert] == []


def test_every_stateful_alert_runs_at_most_every_12_hours() -> None:
    # Microsoft: "Stateful alert rules with a frequency of more than 12 hours are not supported."
    too_slow = [
        alert["name"] for alert in alert_definitions() if alert["stateful"] and seconds(alert["frequency"]) > 12 * 3600
    ]

    assert too_slow == []


def test_each_alert_splits_on_its_dimensions_with_every_value() -> None:
    criterion = log_alert_rule()["config"]["properties"]["criteria"]["allOf"][0]
    split = criterion["dimensions"]

    assert split["loop_type"]["detail"]["item_name"] == "dimension"
    assert accessed(split["loop_type"]["detail"]["array_name"]) == ("alert", "dimensions")
    assert split["config"] == {"name": "dimension", "operator": "Include", "values": ["*"]}


def test_each_alert_runs_at_its_frequency_over_its_window_and_look_back() -> None:
    properties = log_alert_rule()["config"]["properties"]

    assert accessed(properties["evaluationFrequency"]) == ("alert", "frequency")
    assert accessed(properties["windowSize"]) == ("alert", "window")
    assert accessed(properties["overrideQueryTimeRange"]) == ("alert", "lookBack")
    assert alert_defaults()["lookBack"] is None  # none: the window


def test_a_stateful_alert_resolves_itself_and_a_muted_one_stays_quiet_for_its_mute() -> None:
    properties = log_alert_rule()["config"]["properties"]

    assert accessed(properties["autoMitigate"]) == ("alert", "stateful")
    assert accessed(properties["muteActionsDuration"]) == ("alert", "mute")
    assert alert_defaults()["mute"] is None


def test_an_alert_needs_its_failing_periods_in_a_row_one_by_default() -> None:
    periods = log_alert_rule()["config"]["properties"]["criteria"]["allOf"][0]["failingPeriods"]

    assert accessed(periods["numberOfEvaluationPeriods"]) == ("alert", "failingPeriods")
    assert accessed(periods["minFailingPeriodsToAlert"]) == ("alert", "failingPeriods")
    assert alert_defaults()["failingPeriods"] == 1
    assert {alert["name"]: alert["failingPeriods"] for alert in alert_definitions() if "failingPeriods" in alert} == {
        "sustained-throttling": 2
    }


def test_an_alert_counting_failing_periods_has_a_time_column_to_count_them_by() -> None:
    # Microsoft: to use the number of violations, the query's results must include a datetime column.
    counted = [alert for alert in alert_definitions() if alert.get("failingPeriods", 1) > 1]

    assert counted
    for alert in counted:
        assert "TimeGenerated" in projected_columns((MONITORING / "alerts" / alert["query"]).read_text())


def test_a_threshold_parameter_is_a_deployment_parameter_whose_default_is_the_json_threshold() -> None:
    monitoring = parsed("modules/monitoring.bicep")
    main = parsed("main.bicep")
    passed = main["modules"]["monitoring"]["config"]["params"]
    thresholds = monitoring["variables"]["thresholds"]["value"]

    for alert in [alert for alert in alert_definitions() if "thresholdParameter" in alert]:
        name = alert["thresholdParameter"]
        assert thresholds[name] == name
        assert name in monitoring["parameters"]
        assert passed[name] == name
        assert main["parameters"][name]["default"] == alert["threshold"], name
    threshold = log_alert_rule()["config"]["properties"]["criteria"]["allOf"][0]["threshold"]["operator"]["operands"]
    assert threshold["condition"]["function"]["parameters"]["container"] == "thresholds"
    assert accessed(threshold["condition"]["function"]["parameters"]["item_to_find"]) == ("alert", "thresholdParameter")
    assert accessed(threshold["false_value"]) == ("alert", "threshold")
    assert threshold["true_value"]["operator"]["operands"]["operand_1"] == "thresholds"
    assert alert_defaults()["thresholdParameter"] == ""  # no parameter of that name: the alert's own


def test_the_marked_days_line_the_template_replaces_is_the_querys_and_its_default_is_the_parameters() -> None:
    monitoring = parsed("modules/monitoring.bicep")
    line = monitoring["variables"]["markedDaysLine"]["value"]
    query = (MONITORING / "alerts" / "marked-too-long.kql").read_text()
    text = (INFRA / "modules" / "monitoring.bicep").read_text()

    assert line in query.splitlines()
    assert parsed("main.bicep")["parameters"]["markedDaysAlert"]["default"] == int(re.findall(r"\d+", line)[0])
    assert (
        "replace(queries['marked-too-long.kql'], markedDaysLine, 'let markedDaysAlert = ${markedDaysAlert};')" in text
    )
    assert "query: deployedQueries[alert.query]" in text


def test_azd_asks_for_the_alert_email_unless_the_environment_has_one() -> None:
    # azd prompts for a parameter with no default whose parameters-file value is missing or resolves
    # empty (Azure/azure-dev, bicep_provider.go: armParameterFileValue, ensureParameters).
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]

    assert parsed("main.bicep")["parameters"]["alertEmail"]["default"] is None
    assert mapped["alertEmail"] == {"value": "${RESPONDER_ALERT_EMAIL}"}
    assert mapped["existingActionGroupId"] == {"value": "${RESPONDER_EXISTING_ACTION_GROUP_ID=}"}


def test_an_existing_action_group_is_used_and_none_is_made_and_an_email_alone_gets_one() -> None:
    variables = parsed("modules/monitoring.bicep")["variables"]
    mail = parsed("modules/monitoring.bicep")["resources"]["mail"]["config"]
    chosen = variables["actionGroupId"]["value"]["operator"]["operands"]

    assert mail["condition"] == "createActionGroup"
    assert mail["config"]["properties"]["emailReceivers"][0]["emailAddress"] == "alertEmail"
    assert variables["createActionGroup"]["value"]["operator"]["type"] == "and"
    assert chosen["condition"] == {
        "function": {"type": "empty", "parameters": {"item_to_test": "existingActionGroupId"}}
    }
    assert chosen["false_value"] == "existingActionGroupId"
    assert chosen["true_value"]["operator"]["operands"]["false_value"] == ""  # neither: portal only


def test_every_alert_rule_log_and_metric_notifies_the_chosen_action_group() -> None:
    log_actions = log_alert_rule()["config"]["properties"]["actions"]["actionGroups"]["operator"]["operands"]
    metric = parsed("modules/watched-subscription.bicep")["resources"]["deliveryAlertRules"]["config"]["config"]
    metric_actions = metric["properties"]["actions"]["operator"]["operands"]
    watched = parsed("main.bicep")["modules"]["watchedTopics"]["config"]["config"]["params"]

    assert log_actions["false_value"] == ["actionGroupId"]
    assert parsed("modules/monitoring.bicep")["outputs"]["actionGroupId"]["value"] == "actionGroupId"
    assert metric_actions["false_value"] == [{"actionGroupId": "actionGroupId"}]
    assert accessed(watched["actionGroupId"]) == (
        "monitoring",
        {"operator": {"type": "property_accessor", "operands": {"operand_1": "outputs", "operand_2": "actionGroupId"}}},
    )


def test_event_grid_alerts_on_dead_lettered_dropped_and_failing_deliveries_per_event_subscription() -> None:
    # Names and dimensions from Microsoft's supported metrics of Microsoft.EventGrid/systemTopics.
    module = parsed("modules/watched-subscription.bicep")
    alerts = {alert["metricName"]: alert for alert in module["variables"]["deliveryAlerts"]["value"]}
    (criterion,) = module["resources"]["deliveryAlertRules"]["config"]["config"]["properties"]["criteria"]["allOf"]

    assert set(alerts) == {"DeadLetteredCount", "DroppedEventCount", "DeliveryAttemptFailCount"}
    assert alerts["DeadLetteredCount"]["threshold"] == alerts["DroppedEventCount"]["threshold"] == 0
    assert 0 < alerts["DeliveryAttemptFailCount"]["threshold"] <= 10
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    (split,) = criterion["dimensions"]
    assert (split["name"], split["operator"]) == ("EventSubscriptionName", "Include")
    assert split["values"] == "subscriptionNames"  # the responder's own subscriptions, as named and upper-cased
    assert (criterion["operator"], criterion["timeAggregation"]) == ("GreaterThan", "Total")


def test_event_grid_alerts_watch_the_subscriptions_own_topic_from_its_resource_group() -> None:
    module = parsed("modules/watched-subscription.bicep")
    rule = module["resources"]["deliveryAlertRules"]["config"]["config"]
    topic_id = module["variables"]["topicId"]["value"]["function"]

    assert rule["location"] == "global"
    assert rule["properties"]["scopes"] == ["topicId"]
    assert (topic_id["type"], topic_id["parameters"]["resource_type"]) == (
        "resource_id",
        "Microsoft.EventGrid/systemTopics",
    )
    assert topic_id["parameters"]["resource_name_1"] == "topicName"
    assert rule["dependsOn"] == ["topic", "existingTopic"]


def test_the_workbook_is_listed_under_the_apps_application_insights() -> None:
    workbook = parsed("modules/monitoring.bicep")["resources"]["workbook"]["config"]["properties"]
    passed = parsed("main.bicep")["modules"]["monitoring"]["config"]["params"]

    assert workbook["sourceId"] == "applicationInsightsId"
    assert accessed(passed["applicationInsightsId"])[0] == "app"
    assert "output applicationInsightsId string = insights.id" in (INFRA / "modules" / "app.bicep").read_text()


def test_the_workbook_is_in_azure_monitors_workbook_gallery_with_the_same_content() -> None:
    resources = parsed("modules/monitoring.bicep")["resources"]
    template = resources["workbookTemplate"]["config"]["properties"]

    assert [(gallery["type"], gallery["resourceType"]) for gallery in template["galleries"]] == [
        ("workbook", "Azure Monitor")
    ]
    assert template["templateData"] == "workbookData"
    assert resources["workbook"]["config"]["properties"]["serializedData"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "workbookData"}}
    }


def test_the_workbooks_queries_read_the_apps_workspace_wherever_it_is_opened() -> None:
    # Microsoft: the workspace table names (AppTraces, AppRequests) are queried from the Log Analytics
    # workspace; through the Application Insights resource the classic schema is served.
    variables = parsed("modules/monitoring.bicep")["variables"]
    items = variables["workbookItems"]["value"]
    chosen = items["config"]["operator"]["operands"]
    workbook = json.loads((MONITORING / "workbook.json").read_text())

    assert accessed(items["loop_type"]["detail"]["array_name"]) == ("workbookContent", "items")
    assert chosen["condition"]["function"]["parameters"]["item_to_find"] == "query"
    assert chosen["true_value"]["function"]["parameters"]["arg_2"]["content"]["function"]["parameters"]["arg_2"] == {
        "crossComponentResources": ["workspaceId"]
    }
    assert chosen["false_value"] == "item"
    assert variables["workbookData"]["value"]["function"]["parameters"]["arg_2"] == {
        "fallbackResourceIds": ["workspaceId"],
        "items": "workbookItems",
    }
    assert {item["content"]["resourceType"] for item in workbook["items"] if "query" in item["content"]} == {
        "microsoft.operationalinsights/workspaces"
    }
