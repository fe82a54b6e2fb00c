"""Shared fixtures: Azurite for the session, a fresh ledger table per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from localdev.azurite import Azurite, running_azurite
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services

EVENTS = Path(__file__).parent / "events"


def load_events(name: str) -> list[Any]:
    """A sample delivery as a list of raw events (a batch file, or one event)."""
    document = json.loads((EVENTS / name).read_text())
    return document if isinstance(document, list) else [document]


def load_event(name: str) -> dict[str, Any]:
    (event,) = load_events(name)
    assert isinstance(event, dict)
    return event


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with running_azurite() as emulator:
        yield emulator


@pytest.fixture
def table_name() -> str:
    return f"ledger{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def ledger(azurite: Azurite, table_name: str) -> AsyncIterator[TableLedger]:
    async with TableClient.from_connection_string(azurite.connection_string, table_name) as table:
        ledger = TableLedger(table)
        await ledger.ensure_table()
        yield ledger


@pytest.fixture
async def app_env(
    azurite: Azurite, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, str]]:
    """App settings for the handlers, as the Functions host would set them locally."""
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESPONDER_LEDGER_TABLE": table_name,
        "RESPONDER_MODE": "audit",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    await close_services()
