"""What the tests of the alerts and the workbook share: the sample estate in enforce mode, and
the rows Application Insights keeps of what the app writes (traces per log line, failed requests)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localdev.azurite import Azurite
from localdev.simulators import Simulators
from responder.composition import close_services
from responder.ports import Services
from tests.conftest import deployed_services

LINE_PREFIX = '{"log": "intune-vm-responder"'
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"


@dataclass
class Telemetry:
    """The rows one failure leaves in the workspace: a trace per log line, and the requests of
    invocations that failed (the Functions host writes those; here the test does, as it would)."""

    traces: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    operation: str = "operation-1"
    offset: timedelta = timedelta(0)  # rows are stamped this far from the real time (a test's past)

    def record(self, message: str) -> None:
        self.traces.append(
            {"Message": message, "OperationId": self.operation, "SeverityLevel": 1, "TimeGenerated": self._now()}
        )

    def failed_invocation(self, function: str) -> None:
        self.requests.append(
            {
                "OperationName": function,
                "Name": function,
                "Success": False,
                "ResultCode": "1",
                "OperationId": self.operation,
                "TimeGenerated": self._now(),
            }
        )

    def _now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """The tables as written, each row at the time it was written."""
        return {"AppTraces": list(self.traces), "AppRequests": list(self.requests)}

    def at(self, when: datetime, repeat: int = 1) -> dict[str, list[dict[str, Any]]]:
        """The tables as they stand at `when`: every row written then, `repeat` times over."""
        return {
            "AppTraces": [{**row, "TimeGenerated": when} for row in self.traces for _ in range(repeat)],
            "AppRequests": [{**row, "TimeGenerated": when} for row in self.requests for _ in range(repeat)],
        }


@contextlib.contextmanager
def captured_into(telemetry: Telemetry) -> Iterator[None]:
    """The responder's log lines, as the Functions host's logger ships them to App Insights."""

    class Ship(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith(LINE_PREFIX):
                telemetry.record(message)

    ship = Ship(logging.INFO)
    responder = logging.getLogger("responder")
    before = responder.level
    responder.addHandler(ship)
    responder.setLevel(logging.INFO)
    try:
        yield
    finally:
        responder.removeHandler(ship)
        responder.setLevel(before)


@dataclass
class Estate:
    """The sample estate behind the simulators, in enforce mode with a suppression group."""

    simulators: Simulators
    azurite: Azurite
    monkeypatch: pytest.MonkeyPatch
    telemetry: Telemetry

    async def start(self, **settings: str) -> Services:
        """The app's services, with these settings on top of the estate's."""
        for name, value in settings.items():
            self.monkeypatch.setenv(name, value)
        return await deployed_services()


@contextlib.asynccontextmanager
async def enforced_estate(
    simulators: Simulators, azurite: Azurite, monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Estate]:
    """The estate's settings on top of `app_env`'s: queues, tables and a container of the test's own."""
    for name, value in {
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
        "RESPONDER_CLEANUP_DELAY_SECONDS": "0",
        "RESPONDER_CLEANUP_QUEUE": f"alert-{table_name[-12:]}",
        "RESPONDER_DEVICE_CHECK_QUEUE": f"alert-checks-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
        "RESPONDER_DEAD_LETTER_CONTAINER": f"dead-{table_name[-12:]}",
    }.items():
        monkeypatch.setenv(name, value)
    yield Estate(simulators, azurite, monkeypatch, Telemetry())
    await close_services()
