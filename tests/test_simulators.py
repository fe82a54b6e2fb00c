"""The local simulators hold the line a real cloud holds: tokens, loopback, OData."""

from __future__ import annotations

import ssl
from http import HTTPStatus

import httpx
import pytest

from localdev.graph_sim import odata_filter
from localdev.sim_http import Request
from localdev.simulators import Simulators


def client(simulators: Simulators) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(simulators.ca_file)))


def test_a_request_without_a_token_is_refused(simulators: Simulators) -> None:
    with client(simulators) as http:
        response = http.get(f"{simulators.graph.url}/v1.0/devices")

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_a_token_the_identity_endpoint_did_not_issue_is_refused(simulators: Simulators) -> None:
    with client(simulators) as http:
        response = http.get(f"{simulators.arm.url}/subscriptions", headers={"Authorization": "Bearer forged"})

    assert response.status_code == HTTPStatus.UNAUTHORIZED


def test_the_identity_endpoint_wants_its_secret_header(simulators: Simulators) -> None:
    response = httpx.get(simulators.identity.url, params={"resource": "https://graph.microsoft.com"})

    assert response.status_code == HTTPStatus.BAD_REQUEST


def test_an_issued_token_opens_the_simulators(simulators: Simulators) -> None:
    token = httpx.get(
        simulators.identity.url,
        params={"resource": "https://graph.microsoft.com", "api-version": "2019-08-01"},
        headers={"X-IDENTITY-HEADER": simulators.identity.tokens.identity_header},
    ).json()["access_token"]
    with client(simulators) as http:
        response = http.get(f"{simulators.graph.url}/v1.0/devices", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == HTTPStatus.OK
    assert len(response.json()["value"]) == len(simulators.tenant.devices)


def test_a_client_off_loopback_is_refused_even_with_a_token(simulators: Simulators) -> None:
    token = simulators.identity.tokens.issue("https://graph.microsoft.com")
    request = Request("GET", "/v1.0/devices", {}, {"authorization": f"Bearer {token}"}, None)

    assert simulators.graph.dispatch(request, "10.1.2.3").status == HTTPStatus.FORBIDDEN
    assert simulators.graph.dispatch(request, "127.0.0.1").status == HTTPStatus.OK


def test_graph_filters_compare_strings_case_insensitively() -> None:
    assert odata_filter("deviceName eq 'VM-1'")({"deviceName": "vm-1"})
    assert not odata_filter("deviceName eq 'vm-1'")({"deviceName": "vm-10"})


def test_graph_filters_support_any_over_a_collection() -> None:
    matches = odata_filter("physicalIds/any(p:p eq '[AzureResourceId]:/x')")

    assert matches({"physicalIds": ["[ZTDID]:1", "[AzureResourceId]:/x"]})
    assert not matches({"physicalIds": []})


def test_a_collection_value_matches_only_as_stored() -> None:
    # The conservative reading of Graph: physicalIds keep ARM's casing, so the adapter must ask in it.
    matches = odata_filter("physicalIds/any(p:p eq '[AzureResourceId]:/x')")

    assert not matches({"physicalIds": ["[AzureResourceId]:/X"]})


def test_graph_filters_join_clauses_with_and() -> None:
    matches = odata_filter("operatingSystem eq 'Windows' and model eq 'Virtual Machine'")

    assert matches({"operatingSystem": "Windows", "model": "Virtual Machine"})
    assert not matches({"operatingSystem": "Windows", "model": "Surface Laptop 5"})


def test_a_filter_the_simulator_does_not_know_is_an_error_not_a_silent_match() -> None:
    with pytest.raises(ValueError, match="Invalid filter clause"):
        odata_filter("startswith(deviceName,'vm')")
