"""Errors that decide what the Functions host does next.

A handler lets `TransientError` escape so Event Grid (or the queue) delivers the
event again later; every other problem is handled, logged and dropped.
"""


class TransientError(Exception):
    """A dependency failed in a way that a later retry can fix (throttling, 5xx,
    network, a lost optimistic-concurrency race). `service` names it, for the log line."""

    def __init__(self, message: str = "", service: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.status = status  # the HTTP status when the service answered (429: throttled), for the log line


class LedgerConflict(TransientError):
    """Another event changed the same ledger row first (ETag mismatch)."""


class RequestRefused(Exception):
    """A service refused a request for a reason a retry will not change (400,
    403, 404, 409...): the caller records it as a finding or a refusal."""

    def __init__(self, status: int, message: str, service: str | None = None, resource: str | None = None) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")
        self.message = message
        self.service = service
        self.resource = resource  # what the refused request was for, where the caller can't tell


IDENTITY_MISSING = "managed identity (AZURE_CLIENT_ID)"  # the `role` of an AccessDenied for want of any token


class AccessDenied(RequestRefused):
    """401/403, or no token at all: the app's identity lacks a role or a setting is wrong.
    The message names what is missing; nothing retries it. `role` names the role an admin grants
    (the access-denied alert is split by it)."""

    def __init__(
        self,
        status: int,
        message: str,
        service: str | None = None,
        resource: str | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(status, message, service, resource)
        self.role = role


class UnreadableMessage(ValueError):
    """A queue message its worker can't read (not its schema): parked at once with this reason, never retried."""
