"""National clouds: one setting names the cloud; Graph and ARM tokens, the `@odata.id` root
and the storage suffix follow it. Each cloud runs against simulators that accept only that
cloud's tokens and references, the way its real services do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from handlers import vm_power
from handlers._eventgrid import trigger_input
from localdev.simulators import Simulators, load_seed, running_simulators
from responder.composition import close_services, get_services
from responder.decisions.clouds import CLOUDS, Cloud
from responder.decisions.model import VmRef
from responder.decisions.settings import Settings, SettingsError
from tests.conftest import load_event

GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"
WIN11 = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg-avd-prod", "vm-win11-01").resource_id
on_vm_power_changed = vm_power.on_vm_power_changed.build().get_user_function()


@pytest.mark.parametrize(
    ("name", "graph", "arm", "suffix"),
    [
        ("AzureCloud", "https://graph.microsoft.com/v1.0", "https://management.azure.com", "core.windows.net"),
        (
            "AzureUSGovernment",
            "https://graph.microsoft.us/v1.0",
            "https://management.usgovcloudapi.net",
            "core.usgovcloudapi.net",
        ),
        (
            "AzureChinaCloud",
            "https://microsoftgraph.chinacloudapi.cn/v1.0",
            "https://management.chinacloudapi.cn",
            "core.chinacloudapi.cn",
        ),
    ],
)
def test_the_cloud_setting_derives_every_endpoint(name: str, graph: str, arm: str, suffix: str) -> None:
    settings = Settings.from_env({"RESPONDER_CLOUD": name, "AzureWebJobsStorage__accountName": "stresponder"})

    assert (settings.graph_url, settings.arm_url) == (graph, arm)
    assert settings.storage.table_service_uri == f"https://stresponder.table.{suffix}"
    assert settings.cloud.graph_scope == graph.removesuffix("/v1.0") + "/.default"


def test_an_unknown_cloud_is_named_in_the_settings_error() -> None:
    with pytest.raises(SettingsError, match="RESPONDER_CLOUD"):
        Settings.from_env({"RESPONDER_CLOUD": "AzureGermanCloud", "AzureWebJobsStorage": "UseDevelopmentStorage=true"})


@pytest.fixture(params=sorted(CLOUDS), ids=lambda key: CLOUDS[key].name)
def cloud(request: pytest.FixtureRequest) -> Cloud:
    return CLOUDS[request.param]


@pytest.fixture
def cloud_simulators(cloud: Cloud) -> Iterator[Simulators]:
    with running_simulators(load_seed("sample"), cloud=cloud) as running:
        yield running


@pytest.fixture
async def in_that_cloud(
    azurite: Any, cloud_simulators: Simulators, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    for name, value in {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESPONDER_LEDGER_TABLE": table_name,
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_SUPPRESSION_ATTRIBUTE": "7",
        **cloud_simulators.settings,
    }.items():
        monkeypatch.setenv(name, value)
    yield
    await close_services()


async def test_a_deallocated_vm_is_marked_in_each_cloud(in_that_cloud: None, cloud_simulators: Simulators) -> None:
    cloud_simulators.world.set_power_state(WIN11, "deallocated")

    await on_vm_power_changed(trigger_input(load_event("eventgrid-vm-deallocate.json")))

    assert cloud_simulators.tenant.members_of(GROUP) == [WIN11_ENTRA]
    assert cloud_simulators.tenant.devices[WIN11_ENTRA]["extensionAttributes"]["extensionAttribute7"]


async def test_tokens_for_another_cloud_are_refused(
    in_that_cloud: None, cloud_simulators: Simulators, cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = next(candidate for candidate in CLOUDS.values() if candidate != cloud)
    monkeypatch.setenv("RESPONDER_CLOUD", other.name)
    services = await get_services()

    cloud_simulators.world.set_power_state(WIN11, "deallocated")
    await on_vm_power_changed(trigger_input(load_event("eventgrid-vm-deallocate.json")))

    assert cloud_simulators.tenant.members_of(GROUP) == []
    assert services.settings.cloud == other
