"""The queue watch (design §8): what waits for a person, counted every 15 minutes.

A message the responder parks, and one the Functions host moves itself after its
retries, both land in the queue's `-poison` twin; Event Grid's dead letters land as
blobs in the dead-letter container. Counting them often (not once a day) is what
lets the poison-queue and dead-letter alerts fire at once: one `queue-depth` line
per poison queue and one `dead-letters` line, each naming what it counted. A count
that fails says so in its line (with the failure, which the access-denied alert
reads), and the other counts still run.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from responder.decisions.errors import RequestRefused, TransientError
from responder.log_lines import failure_fields, write
from responder.ports import QueueWatchPorts


async def watch_queues(services: QueueWatchPorts) -> None:
    """One line per poison queue and one for the dead letters."""
    settings = services.settings
    for queue, purpose, depth in (
        (settings.cleanup.poison_queue, "cleanup", services.cleanup_queue.poison_depth),
        (settings.device_check.poison_queue, "device-check", services.device_check_queue.poison_depth),
    ):
        count, problem = await _counted(depth)
        _line("queue-depth", count, problem, queue=queue, purpose=purpose, messages=count)
    if services.dead_letters is not None:
        count, problem = await _counted(services.dead_letters.count)
        container = settings.cleanup.dead_letter_container
        _line("dead-letters", count, problem, container=container, deadLettered=count)


async def _counted(count: Callable[[], Awaitable[int]]) -> tuple[int | None, Exception | None]:
    try:
        return await count(), None
    except (TransientError, RequestRefused) as problem:
        return None, problem


def _line(kind: str, count: int | None, problem: Exception | None, **fields: object) -> None:
    level = logging.WARNING if problem is not None or count else logging.INFO
    write(level, kind, **fields, reason=str(problem) if problem else None, **failure_fields(problem))
