"""Every delivered event leaves one `event` JSON line an admin can join to the
Activity Log by the ARM operation's correlation id."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime

import pytest

from handlers import vm_power
from tests.conftest import handle_as, load_event, log_lines, sample_in_process


def test_the_event_line_carries_the_arm_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    product = sample_in_process({}, lambda: datetime(2026, 11, 21, tzinfo=UTC))
    raw = copy.deepcopy(load_event("eventgrid-vm-deallocate.json"))

    asyncio.run(handle_as(raw, vm_power.ACCEPTS, product.services))

    (document,) = log_lines(caplog, "event")
    assert document["correlationId"] == raw["data"]["correlationId"]
    assert document["outcome"] == "recorded"
    assert (document["vmName"], document["resourceGroup"]) == ("vm-win11-01", "rg-avd-prod")
    asyncio.run(product.services.aclose())
