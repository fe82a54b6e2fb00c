"""Shared fixtures: Azurite for the session, a fresh ledger table and fresh
Graph/ARM simulators (seeded with the sample tenant) per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from handlers import vm_created, vm_deleted, vm_power
from handlers._eventgrid import trigger_input
from localdev.arm_sim import ArmWorld
from localdev.azurite import Azurite, running_azurite
from localdev.graph_sim import GraphTenant
from localdev.inprocess import InProcess, in_process
from localdev.queue_host import provision_queues
from localdev.simulators import Simulators, load_seed, running_simulators
from responder.adapters.table_ledger import TableLedger
from responder.composition import close_services, get_services
from responder.decisions.model import EventKind, VmRecord, VmRef
from responder.decisions.settings import Settings
from responder.ports import Ledger, Services
from responder.stages.pipeline import Handled, Stage, collecting, handle

EVENTS = Path(__file__).parent / "events"


def load_events(name: str) -> list[Any]:
    """A sample delivery as a list of raw events (a batch file, or one event)."""
    document = json.loads((EVENTS / name).read_text())
    return document if isinstance(document, list) else [document]


def load_event(name: str) -> dict[str, Any]:
    (event,) = load_events(name)
    assert isinstance(event, dict)
    return event


async def outcome_of(function: Callable[[Any], Awaitable[None]], raw: Mapping[str, Any]) -> Handled:
    """Run a real trigger function on one delivered event: what the pipeline decided
    (the host discards a trigger's return value, so it is collected, not returned)."""
    with collecting() as handled:
        await function(trigger_input(raw))
    (outcome,) = handled
    return outcome


def sample_in_process(env: Mapping[str, str], now: Callable[[], datetime]) -> InProcess:
    """The sample tenant with the product in-process (storage in memory), with these app settings."""
    seed = load_seed("sample")
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", **env})
    return in_process(settings, GraphTenant.from_seed(seed), ArmWorld.from_seed(seed), now)


@pytest.fixture(autouse=True)
def no_real_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any credential a test builds without the simulators asks a dead loopback
    port for a token, never the Azure instance metadata service."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "no-cloud-in-tests")
    for name in ("AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


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
    azurite: Azurite, simulators: Simulators, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, str]]:
    """App settings for the handlers, as the Functions host would set them locally:
    Azurite, and the Graph/ARM simulators (nothing can reach a real cloud)."""
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESPONDER_LEDGER_TABLE": table_name,
        "RESPONDER_MODE": "audit",
        **simulators.settings,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    await close_services()


@pytest.fixture
def seed() -> dict[str, Any]:
    """The sample tenant; a test may change it before the simulators start."""
    return load_seed("sample")


@pytest.fixture
def simulators(seed: dict[str, Any]) -> Iterator[Simulators]:
    with running_simulators(seed) as running:
        yield running


async def deployed_services() -> Services:
    """`get_services()` with the queues the deployment creates in Azure (the app creates
    them only when it first sends)."""
    services = await get_services()
    cleanup, checks = services.settings.cleanup, services.settings.device_check
    await provision_queues(
        services.settings.storage.connection_string or "",
        cleanup.queue,
        cleanup.poison_queue,
        checks.queue,
        checks.poison_queue,
    )
    return services


@pytest.fixture
async def services(app_env: dict[str, str]) -> AsyncIterator[Services]:
    """The app's services as the handlers get them, pointed at Azurite and the simulators."""
    yield await deployed_services()
    await close_services()


def log_lines(caplog: pytest.LogCaptureFixture, kind: str) -> list[dict[str, Any]]:
    """The responder's JSON log lines of one `kind`, parsed, with their level as `_level`."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name == "responder" and message.startswith('{"log": "intune-vm-responder"'):
            line = json.loads(message)
            if line["kind"] == kind:
                found.append({**line, "_level": record.levelno})
    return found


def stage_of(accepts: frozenset[EventKind]) -> Stage:
    """The stage of the trigger that accepts these kinds, as that trigger names it."""
    from responder.stages.creation import creation_stage
    from responder.stages.deletion import deletion_stage
    from responder.stages.power import power_stage

    stages: dict[frozenset[EventKind], Stage] = {
        vm_created.ACCEPTS: creation_stage,
        vm_power.ACCEPTS: power_stage,
        vm_deleted.ACCEPTS: deletion_stage,
    }
    return stages[accepts]


async def handle_as(raw: Mapping[str, Any], accepts: frozenset[EventKind], services: Services) -> Handled:
    """`pipeline.handle` as the trigger that accepts `accepts` calls it (without the trigger object)."""
    return await handle(raw, accepts, stage_of(accepts), services)


async def ledger_row(ledger: Ledger, vm: VmRef) -> VmRecord:
    """The VM's ledger row, which the test expects to exist."""
    record = await ledger.get(vm)
    assert record is not None, f"no ledger row for {vm.resource_id}"
    return record
