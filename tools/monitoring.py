"""The workbook's panels and the alerts, run offline over the rows the app's log lines make.

What an admin would see in the portal, computed without it: `tools/kql.py` runs the deployed
queries (`infra/monitoring/`) over `AppTraces` (one row per JSON line) and `AppRequests` rows,
the way a scheduled query rule and a workbook panel run them. The local run's `--failures`
prints it; the tests of the alerts and the workbook assert on it.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tools.kql import evaluate, substitute

MONITORING = Path(__file__).resolve().parent.parent / "infra" / "monitoring"
ALERTS: dict[str, dict[str, Any]] = {
    alert["name"]: alert for alert in json.loads((MONITORING / "alerts.json").read_text())["alerts"]
}
PANELS: dict[str, dict[str, Any]] = {
    item["name"]: item["content"]
    for item in json.loads((MONITORING / "workbook.json").read_text())["items"]
    if item["type"] == 3
}
Tables = dict[str, list[dict[str, Any]]]


def duration(text: str) -> timedelta:
    """An ISO 8601 duration of the forms alerts.json uses (PT15M, PT1H, P1D, P2D)."""
    days, _, clock = text.removeprefix("P").partition("T")
    hours = minutes = 0
    if clock.endswith("H"):
        hours = int(clock[:-1])
    elif clock.endswith("M"):
        minutes = int(clock[:-1])
    return timedelta(days=int(days.removesuffix("D") or 0), hours=hours, minutes=minutes)


def alert_fires(alert: dict[str, Any], tables: Tables, now: datetime) -> list[dict[str, str]]:
    """The dimension values the alert fires for at `now`: its query over its time range (the window,
    or `lookBack`), the rows counted per dimension value, those counted past the threshold."""
    since = now - duration(alert.get("lookBack") or alert["window"])
    in_range = {name: [row for row in rows if since < row["TimeGenerated"] <= now] for name, rows in tables.items()}
    rows = evaluate((MONITORING / "alerts" / alert["query"]).read_text(), in_range, now)
    counted = Counter(tuple(str(row.get(name) or "") for name in alert["dimensions"]) for row in rows)
    return [
        dict(zip(alert["dimensions"], values, strict=True))
        for values, count in counted.items()
        if count > alert["threshold"]
    ]


def panel_rows(
    name: str, tables: Tables, now: datetime, chosen_range: timedelta = timedelta(hours=24)
) -> list[dict[str, Any]]:
    """A workbook panel's rows with no filter chosen, over its time range: the TimeRange parameter's
    (`chosen_range`), or the panel's own fixed range (the current-state panels)."""
    content = PANELS[name]
    span = chosen_range
    if not content.get("timeContextFromParameter"):
        span = timedelta(milliseconds=content["timeContext"]["durationMs"])
    in_range = {
        table: [row for row in rows if now - span < row["TimeGenerated"] <= now] for table, rows in tables.items()
    }
    query = substitute(content["query"], {"Subscription": "", "ResourceGroup": "", "VmName": ""})
    return evaluate(query, in_range, now)
