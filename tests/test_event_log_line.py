"""Every delivered event leaves one `responder.event` JSON line an admin can join to the
Activity Log by the ARM operation's correlation id."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from datetime import UTC, datetime

import pytest

from handlers import vm_power
from localdev.arm_sim import ArmWorld
from localdev.graph_sim import GraphTenant
from localdev.inprocess import in_process
from localdev.simulators import load_seed
from responder.pipeline import handle
from responder.settings import Settings
from tests.conftest import load_event


def test_the_event_line_carries_the_arm_correlation_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="responder")
    seed = load_seed("sample")
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    product = in_process(
        settings, GraphTenant.from_seed(seed), ArmWorld.from_seed(seed), lambda: datetime(2026, 11, 21, tzinfo=UTC)
    )
    raw = copy.deepcopy(load_event("eventgrid-vm-deallocate.json"))

    asyncio.run(handle(raw, vm_power.ACCEPTS, product.services))

    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("responder.event ")]
    document = json.loads(line.removeprefix("responder.event "))
    assert document["correlation_id"] == raw["data"]["correlationId"]
    assert document["outcome"] == "recorded"
    asyncio.run(product.services.aclose())
