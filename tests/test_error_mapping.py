"""One mapping of a service's failure to what happens next, for every adapter: retry what a
retry can fix; say once, naming the missing role, what it can't."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ServiceRequestError

from responder.adapters._errors import (
    ARM,
    GRAPH,
    QUEUES,
    TABLES,
    service_failure,
    status_failure,
    table_failures_mapped,
)
from responder.decisions.errors import AccessDenied, RequestRefused, TransientError


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_throttling_timeouts_and_server_errors_are_retried(status: int) -> None:
    assert isinstance(status_failure(status, "busy", GRAPH), TransientError)


def test_a_network_failure_is_retried() -> None:
    assert isinstance(service_failure(ServiceRequestError("connection refused"), TABLES), TransientError)


@pytest.mark.parametrize(("service", "role"), [(TABLES, "Storage Table Data Contributor"), (ARM, "Reader")])
def test_a_403_names_the_role_the_identity_lacks_and_is_not_retried(service: str, role: str) -> None:
    problem = HttpResponseError(message="This request is not authorized to perform this operation.")
    problem.status_code = 403

    failure = service_failure(problem, service)

    assert isinstance(failure, AccessDenied)
    assert role in str(failure)


def test_a_401_from_storage_is_access_denied() -> None:
    problem = ClientAuthenticationError(message="Server failed to authenticate the request.")
    problem.status_code = 401

    assert isinstance(service_failure(problem, QUEUES), AccessDenied)


def test_no_token_for_the_identity_is_access_denied_naming_the_setting() -> None:
    failure = service_failure(ClientAuthenticationError("ManagedIdentityCredential authentication unavailable"), GRAPH)

    assert isinstance(failure, AccessDenied)
    assert "AZURE_CLIENT_ID" in str(failure)


def test_a_bad_request_is_refused_with_the_services_message() -> None:
    failure = status_failure(400, "Invalid filter clause", GRAPH)

    assert type(failure) is RequestRefused
    assert "Invalid filter clause" in str(failure)


async def test_an_answer_a_table_method_does_not_expect_is_mapped_not_raised_raw() -> None:
    """The audit table's methods handle the 404s and 409s they expect; one where none can be is a refusal
    like any other (the worker parks it with its reason), never a raw SDK error."""

    @table_failures_mapped
    async def save() -> None:
        problem = ResourceExistsError(message="The specified entity already exists.")
        problem.status_code = 409
        raise problem

    with pytest.raises(RequestRefused):
        await save()


async def test_a_table_method_that_loses_its_network_is_retried() -> None:
    @table_failures_mapped
    async def read() -> None:
        raise ServiceRequestError("connection reset")

    with pytest.raises(TransientError):
        await read()
