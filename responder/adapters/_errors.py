"""One mapping of a service's failure to what happens next, for every adapter.

- throttling (429), timeouts (408), 5xx and network failures → `TransientError`: the host
  delivers the event or message again, and the retry resumes the work;
- 401/403, and a token the identity can't get → `AccessDenied`, naming the role or setting
  that is missing: retrying for a day would not help, so it is logged once and not retried;
- any other refusal (400, 409, ...) → `RequestRefused` with the service's message.

404 and the optimistic-concurrency answers (409/412 on tables) mean something to each
adapter, so adapters handle those before they get here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from responder.decisions.errors import IDENTITY_MISSING, AccessDenied, RequestRefused, TransientError
from responder.decisions.names import clip

TABLES, QUEUES, BLOBS, ARM, GRAPH, EVENT_GRID = (
    "Azure Table storage",
    "Azure Queue storage",
    "Azure Blob storage",
    "Azure Resource Manager",
    "Microsoft Graph",
    "Event Grid",
)

# What each service needs the app's identity to hold (README "Permissions").
NEEDS = {
    TABLES: "the 'Storage Table Data Contributor' role on the storage account",
    QUEUES: "the 'Storage Queue Data Contributor' role on the storage account",
    BLOBS: "a 'Storage Blob Data' reader role on the storage account",
    ARM: "the 'Reader' role (and 'Tag Contributor' for findings tags) on the watched scope",
    GRAPH: "the Graph app roles listed in the README's Permissions section, with admin consent",
    EVENT_GRID: "the 'EventGrid Data Sender' role on the findings topic",
}


# The role itself, short: what the access-denied alert is split by (a Graph call's own app role,
# where the caller knows it, replaces this: `AccessDenied.role`).
ROLES = {
    TABLES: "Storage Table Data Contributor",
    QUEUES: "Storage Queue Data Contributor",
    BLOBS: "Storage Blob Data Reader",
    ARM: "Reader",
    GRAPH: "Microsoft Graph app roles",
    EVENT_GRID: "EventGrid Data Sender",
}


def is_transient(status: int) -> bool:
    """Statuses a later retry can fix."""
    return status in {408, 429} or status >= 500


def service_failure(problem: Exception, service: str) -> Exception:
    """The exception to raise instead of `problem` (an azure-core failure of `service`)."""
    if isinstance(problem, ClientAuthenticationError) and problem.status_code is None:
        return AccessDenied(
            401,
            f"no token for {service}: {clip(str(problem))} (check the managed identity and AZURE_CLIENT_ID)",
            service,
            role=IDENTITY_MISSING,
        )
    if isinstance(problem, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{service} unreachable: {clip(str(problem))}", service)
    if isinstance(problem, HttpResponseError):
        return status_failure(problem.status_code, clip(problem.message or str(problem)), service)
    return problem


def status_failure(status: int | None, message: str, service: str) -> Exception:
    """The same mapping from an HTTP status, for clients that are not azure-core (msgraph-sdk)."""
    if status is None or is_transient(status):
        return TransientError(f"{service} answered {status}: {message}", service, status)
    if status in {401, 403}:
        return AccessDenied(
            status,
            f"{service} refused the app's identity: it needs {NEEDS[service]} ({message})",
            service,
            role=ROLES[service],
        )
    return RequestRefused(status, f"{service}: {message}", service)


T = TypeVar("T")
P = ParamSpec("P")


# The table answers that mean something to a caller: no such row, the row exists, it changed since read.
TABLE_ANSWERS = (ResourceNotFoundError, ResourceExistsError, ResourceModifiedError)


@contextmanager
def table_failures(answers: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """A table call's failures mapped as above; `answers` pass through as the SDK raised them, for a
    caller that handles them. Any other 404, 409 or 412 is a refusal like the rest, never raised raw."""
    try:
        yield
    except answers:
        raise
    except (HttpResponseError, ServiceRequestError, ServiceResponseError) as error:
        raise service_failure(error, TABLES) from error


async def table_call(operation: Awaitable[T]) -> T:  # noqa: UP047 (Python 3.11 stays importable for the benchmark)
    """Await one table call whose caller handles the table answers (`TABLE_ANSWERS`) itself."""
    with table_failures(TABLE_ANSWERS):
        return await operation


def table_failures_mapped(method: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:  # noqa: UP047
    """Every failure of an adapter method's table calls mapped (`table_failures`), so each method needn't
    repeat it: the method handles the answers it expects there itself."""

    @wraps(method)
    async def mapped(*args: P.args, **kwargs: P.kwargs) -> T:
        with table_failures():
            return await method(*args, **kwargs)

    return mapped
