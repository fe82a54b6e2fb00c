"""How the app's services are put together: which identity, and what a cold start loads."""

from __future__ import annotations

from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from handlers.vm_created import on_vm_created
from localdev.simulators import Simulators
from responder.composition import GraphOnFirstUse, _credential
from responder.decisions.settings import Settings
from responder.ports import Services
from tests.conftest import load_event, outcome_of

STORAGE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


async def test_the_managed_identity_is_used_where_the_platform_offers_one() -> None:
    settings = Settings.from_env({**STORAGE, "IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi/token"})
    credential = _credential("11111111-2222-3333-4444-555555555555", settings)
    async with credential:
        assert isinstance(credential, ManagedIdentityCredential)


async def test_a_developer_machine_falls_back_to_default_azure_credential() -> None:
    credential = _credential(None, Settings.from_env(STORAGE))
    async with credential:
        assert isinstance(credential, DefaultAzureCredential)


async def test_a_creation_event_never_builds_the_graph_client(services: Services, simulators: Simulators) -> None:
    assert (await outcome_of(on_vm_created, load_event("eventgrid-vm-write.json"))).outcome == "recorded"

    directory = services.directory
    assert isinstance(directory, GraphOnFirstUse)
    assert not directory.connected
    assert simulators.graph.requests == []
