"""The KQL evaluator (tools/kql.py) runs the workbook's and the alerts' queries over log lines
in memory, so a test can say which lines make an alert fire. These tests pin its semantics to Kusto's,
one behaviour each, and check it accepts every query in infra/monitoring."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from responder.log_lines import LOG, SCHEMA
from tools.kql import KqlError, UnsupportedKql, evaluate, parameters, substitute

MONITORING = Path(__file__).resolve().parent.parent / "infra" / "monitoring"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
LINES = """AppTraces
| where Message startswith '{"log": "intune-vm-responder"'
| extend line = parse_json(Message)
"""


def line(kind: str, minutes_ago: float = 0, **fields: Any) -> dict[str, Any]:
    """An AppTraces row holding one of the responder's JSON log lines."""
    message = json.dumps({"log": LOG, "schema": SCHEMA, "kind": kind, **fields})
    return {"TimeGenerated": NOW - timedelta(minutes=minutes_ago), "Message": message}


def run(query: str, *traces: dict[str, Any], requests: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    return evaluate(query, {"AppTraces": list(traces), "AppRequests": list(requests), "AppExceptions": []}, NOW)


def test_where_reads_the_fields_of_the_parsed_json_lines() -> None:
    other = {"TimeGenerated": NOW, "Message": "Executed 'Functions.vm_power' (Succeeded)"}
    rows = run(
        LINES + '| where tostring(line.kind) == "finding" | project ruleId = tostring(line.ruleId)',
        line("event", outcome="done"),
        line("finding", ruleId="windows-version"),
        other,
    )

    assert rows == [{"ruleId": "windows-version"}]


def test_a_missing_field_is_null_and_its_tostring_is_empty() -> None:
    rows = run(LINES + "| project reason = tostring(line.reason), messages = toint(line.messages)", line("event"))

    assert rows == [{"reason": "", "messages": None}]


def test_summarize_without_by_over_no_rows_yields_one_row_with_a_count_of_zero() -> None:
    query = LINES + '| where tostring(line.kind) == "reconcile" | summarize runs = count() | where runs == 0'

    assert run(query, line("event")) == [{"runs": 0}]
    assert run(query, line("reconcile")) == []


def test_summarize_with_by_over_no_rows_yields_no_rows() -> None:
    assert run(LINES + "| summarize count() by kind = tostring(line.kind)") == []


def test_aggregates_over_no_rows_take_kustos_defaults() -> None:
    rows = run(
        LINES + "| summarize n = countif(true), d = dcount(Message), s = sum(toint(line.x)), set = make_set(Message),"
        " latest = max(TimeGenerated)"
    )

    assert rows == [{"n": 0, "d": 0, "s": 0, "set": [], "latest": None}]


def test_unnamed_columns_are_named_as_kusto_names_them() -> None:
    rows = run(LINES + "| summarize count(), dcount(Message) by tostring(line.kind), bin(TimeGenerated, 1h)", line("x"))

    assert list(rows[0]) == ["line_kind", "TimeGenerated", "count_", "dcount_Message"]


def test_arg_max_keeps_the_whole_latest_row_per_key_with_the_by_column() -> None:
    rows = run(
        LINES + '| where tostring(line.kind) == "queue-depth"'
        "| summarize arg_max(TimeGenerated, *) by queue = tostring(line.queue)"
        "| project queue, TimeGenerated, messages = toint(line.messages)"
        "| order by queue asc",
        line("queue-depth", 20, queue="cleanup-poison", messages=3),
        line("queue-depth", 5, queue="cleanup-poison", messages=0),
        line("queue-depth", 10, queue="device-check-poison", messages=2),
    )

    assert rows == [
        {"queue": "cleanup-poison", "TimeGenerated": NOW - timedelta(minutes=5), "messages": 0},
        {"queue": "device-check-poison", "TimeGenerated": NOW - timedelta(minutes=10), "messages": 2},
    ]


def test_in_is_case_sensitive_and_in_tilde_is_not() -> None:
    lines = [line("cleanup", decision="parked"), line("cleanup", decision="Refused"), line("cleanup", decision="done")]

    def decisions(op: str) -> list[dict[str, Any]]:
        where = f"| where tostring(line.decision) {op} ('parked', 'refused') "
        query = LINES + where + "| project d = tostring(line.decision)"
        return run(query, *lines)

    assert decisions("in") == [{"d": "parked"}]
    assert decisions("in~") == [{"d": "parked"}, {"d": "Refused"}]
    assert decisions("!in") == [{"d": "Refused"}, {"d": "done"}]


def test_equal_tilde_ignores_case_and_double_equals_does_not() -> None:
    lines = [line("event", vmName="VM-Win11-01"), line("event", vmName="vm-win10-02")]
    project = "| project vm = tostring(line.vmName)"

    assert run(LINES + "| where tostring(line.vmName) =~ 'vm-win11-01'" + project, *lines) == [{"vm": "VM-Win11-01"}]
    assert run(LINES + "| where tostring(line.vmName) == 'vm-win11-01'" + project, *lines) == []
    assert run(LINES + "| where tostring(line.vmName) !~ 'VM-WIN11-01'" + project, *lines) == [{"vm": "vm-win10-02"}]


def test_has_matches_whole_terms_ignoring_case_and_contains_any_substring() -> None:
    refusal = line("event", reason="Graph refused the request (403 Forbidden)")

    def matches(predicate: str) -> bool:
        return run(LINES + f"| where tostring(line.reason) {predicate}", refusal) != []

    assert matches("has 'graph'")
    assert matches("has '403'")
    assert not matches("has 'refuse'")
    assert not matches("has_cs 'graph'")
    assert matches("contains 'REFUSE'")
    assert not matches("contains_cs 'REFUSE'")
    assert not matches("!has 'forbidden'")


def test_startswith_and_endswith_ignore_case_unless_cs() -> None:
    message = {"TimeGenerated": NOW, "Message": "Executed 'Functions.vm_power'"}

    def matches(predicate: str) -> bool:
        return run(f"AppTraces | where Message {predicate}", message) != []

    assert matches("startswith 'executed'")
    assert not matches("startswith_cs 'executed'")
    assert matches('endswith "VM_POWER\'"')
    assert not matches('!endswith "vm_power\'"')


def test_ago_reaches_back_from_now_by_a_timespan() -> None:
    rows = run(
        "AppTraces | where TimeGenerated > ago(26h) | project TimeGenerated",
        line("reconcile", minutes_ago=25 * 60),
        line("reconcile", minutes_ago=27 * 60),
    )

    assert rows == [{"TimeGenerated": NOW - timedelta(hours=25)}]


def test_datetimes_and_timespans_add_and_subtract() -> None:
    rows = run(
        "AppTraces | project age = now() - TimeGenerated, due = TimeGenerated + 1d - 30m,"
        " late = now() - 2h > TimeGenerated, since = TimeGenerated - datetime(2026-11-21)",
        line("event", minutes_ago=90),
    )

    assert rows == [
        {
            "age": timedelta(minutes=90),
            "due": NOW - timedelta(minutes=90) + timedelta(days=1) - timedelta(minutes=30),
            "late": False,
            "since": timedelta(hours=10, minutes=30),
        }
    ]


def test_a_comparison_with_null_is_not_true_so_where_drops_the_row() -> None:
    no_count = line("queue-depth", queue="cleanup-poison")

    assert run(LINES + "| where toint(line.messages) > 0", no_count) == []
    assert run(LINES + "| where toint(line.messages) == 0", no_count) == []
    assert run(LINES + "| where toint(line.messages) != 0", no_count) != []  # Kusto: null != a value is true
    assert run(LINES + "| where isnull(toint(line.messages)) or toint(line.messages) > 0", no_count) != []


def test_where_refuses_a_predicate_that_is_not_a_bool() -> None:
    with pytest.raises(KqlError, match="bool"):
        run(LINES + "| where toint(line.messages)", line("queue-depth", messages=1))


def test_bin_rounds_datetimes_down_to_whole_hours() -> None:
    rows = run(
        "AppTraces | summarize n = count() by bin(TimeGenerated, 1h) | order by TimeGenerated asc",
        line("event", minutes_ago=5),
        line("event", minutes_ago=50),
        line("event", minutes_ago=65),
    )

    assert rows == [
        {"TimeGenerated": datetime(2026, 11, 21, 10, tzinfo=UTC), "n": 1},
        {"TimeGenerated": datetime(2026, 11, 21, 11, tzinfo=UTC), "n": 2},
    ]


def test_datetime_diff_counts_the_boundaries_crossed() -> None:
    rows = run(
        "AppTraces | project minutes = datetime_diff('minute', datetime(2017-10-30 23:05:01), "
        "datetime(2017-10-30 23:00:59)), days = datetime_diff('day', datetime(2017-10-31 00:01), "
        "datetime(2017-10-30 23:59)), hours = datetime_diff('hour', TimeGenerated, datetime(2026-11-21T10:59:59Z))",
        line("event"),
    )

    assert rows == [{"minutes": 5, "days": 1, "hours": 2}]


def test_order_by_defaults_to_descending_with_nulls_last() -> None:
    rows = run(
        LINES + "| project n = toint(line.n) | order by n",
        line("x", n=1),
        line("x"),
        line("x", n=3),
    )

    assert [row["n"] for row in rows] == [3, 1, None]


def test_top_keeps_the_first_rows_by_its_key() -> None:
    rows = run(
        LINES + "| top 2 by toint(line.n) asc | project n = toint(line.n)",
        line("x", n=5),
        line("x", n=2),
        line("x", n=9),
    )

    assert rows == [{"n": 2}, {"n": 5}]


def test_a_leftanti_join_keeps_the_requests_no_line_explains() -> None:
    explained = line("event", outcome="retrying") | {"OperationId": "op-retried"}
    requests = (
        {"TimeGenerated": NOW, "OperationName": "vm_power", "Success": False, "OperationId": "op-retried"},
        {"TimeGenerated": NOW, "OperationName": "vm_power", "Success": False, "OperationId": "op-crashed"},
        {"TimeGenerated": NOW, "OperationName": "vm_power", "Success": True, "OperationId": "op-fine"},
    )
    query = (
        "AppRequests | where Success == false | join kind=leftanti ("
        + LINES
        + "| where tostring(line.outcome) == 'retrying' | project OperationId) on OperationId | project OperationId"
    )

    assert run(query, explained, requests=requests) == [{"OperationId": "op-crashed"}]


def test_an_inner_join_numbers_the_right_sides_repeated_columns() -> None:
    requests = ({"TimeGenerated": NOW, "OperationId": "op-1", "Success": True},)
    query = "AppRequests | join kind=inner (AppTraces | project OperationId, Message) on OperationId"
    rows = run(query, {"TimeGenerated": NOW, "Message": "hello", "OperationId": "op-1"}, requests=requests)

    assert (rows[0]["OperationId"], rows[0]["OperationId1"], rows[0]["Message"]) == ("op-1", "op-1", "hello")


def test_let_binds_a_value_the_query_reads() -> None:
    query = "let markedDaysAlert = 14;\n" + LINES + "| where toint(line.markedDays) > markedDaysAlert | count"

    assert run(query, line("still-marked", markedDays=15), line("still-marked", markedDays=14)) == [{"Count": 1}]


def test_an_unsupported_operator_raises_with_its_text() -> None:
    with pytest.raises(UnsupportedKql, match="mv-expand"):
        run(LINES + "| mv-expand line")


def test_an_unsupported_function_raises_with_its_text() -> None:
    with pytest.raises(UnsupportedKql, match="extract"):
        run("AppTraces | where extract('(\\\\d+)', 1, Message) == '403'")


def test_an_unknown_token_or_trailing_text_raises() -> None:
    with pytest.raises(UnsupportedKql, match=r"'\?"):
        run("AppTraces | where Message ? 'x'")
    with pytest.raises(UnsupportedKql, match="by TimeGenerated"):
        run("AppTraces | take 1 by TimeGenerated")


def test_an_unknown_column_raises_even_over_an_empty_table() -> None:
    with pytest.raises(KqlError, match="Mesage"):
        run("AppTraces | where Mesage has 'x'")


def test_a_row_with_a_column_the_table_does_not_have_raises() -> None:
    with pytest.raises(KqlError, match="Mesage"):
        run("AppTraces | count", {"TimeGenerated": NOW, "Mesage": "typo"})


def test_substitute_puts_in_workbook_parameters_and_refuses_a_missing_one() -> None:
    query = "AppTraces | where '{VmName}' == '' or Message has '{VmName}' or Message has '{Subscription}'"

    assert parameters(query) == ["VmName", "Subscription"]
    assert substitute(query, {"VmName": "vm-1", "Subscription": ""}) == (
        "AppTraces | where 'vm-1' == '' or Message has 'vm-1' or Message has ''"
    )
    with pytest.raises(KeyError, match="Subscription"):
        substitute(query, {"VmName": "vm-1"})


def monitoring_queries() -> dict[str, str]:
    """Every workbook query (its parameters empty, as when nothing is picked) and every alert query."""
    workbook = json.loads((MONITORING / "workbook.json").read_text())
    found = {
        f"workbook:{item['name']}": substitute(query, dict.fromkeys(parameters(query), ""))
        for item in workbook["items"]
        if item["type"] == 3 and (query := item["content"]["query"])
    }
    return found | {f"alert:{path.name}": path.read_text() for path in sorted((MONITORING / "alerts").glob("*.kql"))}


@pytest.mark.parametrize("query", list(monitoring_queries().values()), ids=list(monitoring_queries()))
def test_every_monitoring_query_is_accepted_by_the_evaluator(query: str) -> None:
    assert isinstance(run(query), list)
