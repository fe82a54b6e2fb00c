"""What both queue workers (cleanups, device checks) do with a message, whatever its work.

Unreadable (not UTF-8, or not the worker's schema): parked at once with the reason. A transient
failure: raised while deliveries remain, so the host makes the message visible again; from the
last but one delivery on, parked with the reason, which leaves the last delivery to park it should
storage fail then. Refused (a missing role, a bad request): parked at once, since retrying won't help.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from responder.decisions.errors import RequestRefused, TransientError, UnreadableMessage

# The Functions host gives a message this many deliveries (host.json `extensions.queues.maxDequeueCount`;
# a test holds the two equal).
MAX_ATTEMPTS = 5
PARK_FROM_ATTEMPT = MAX_ATTEMPTS - 1

Request = TypeVar("Request")
Outcome = TypeVar("Outcome")
Outcome_co = TypeVar("Outcome_co", covariant=True)


class QueueWork(Protocol[Request, Outcome_co]):
    """One worker's part: how its messages read, what working one does, how it records each ending."""

    def read(self, text: str) -> Request:
        """The message as the worker's request; raises `UnreadableMessage` with the reason."""
        ...

    async def unreadable(self, text: str, reason: str) -> Outcome_co:
        """Park a message that can't be read, and record it."""
        ...

    async def work(self, request: Request, text: str) -> Outcome_co: ...

    def retrying(self, request: Request, reason: str, error: TransientError) -> None:
        """Record a transient failure the next delivery retries."""
        ...

    async def park(self, request: Request, text: str, reason: str, problem: Exception) -> Outcome_co:
        """Park a message whose work can't succeed (refused, or out of deliveries), and record it."""
        ...


async def work_message(  # noqa: UP047 (Python 3.11 stays importable for the benchmark)
    body: str | bytes, attempt: int, worker: QueueWork[Request, Outcome]
) -> Outcome:
    """Handle one delivery; raises TransientError only while deliveries remain."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        if isinstance(body, bytes):
            body.decode("utf-8")  # a body that isn't UTF-8 is parked with that reason, not retried
        request = worker.read(text)
    except UnicodeDecodeError as error:
        return await worker.unreadable(text, f"not UTF-8 ({error.reason})")
    except UnreadableMessage as error:
        return await worker.unreadable(text, str(error))
    try:
        return await worker.work(request, text)
    except TransientError as error:
        if attempt < PARK_FROM_ATTEMPT:
            worker.retrying(request, f"attempt {attempt} failed, the queue delivers the message again: {error}", error)
            raise
        return await worker.park(request, text, f"still failing after {attempt} attempts: {error}", error)
    except RequestRefused as refused:
        return await worker.park(request, text, f"refused: {refused}", refused)
