"""Queue messages outlive their delays: a message sent with Azure's longest visibility delay
(7 days, which is also a message's default time-to-live) is still there when it becomes
visible, and a parked message never expires. Through the real adapter and Azurite, and in
the in-memory queue the stateful model runs on, which expires messages as Azure does."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from azure.core.pipeline import PipelineResponse
from azure.storage.queue.aio import QueueServiceClient

from localdev.azurite import Azurite
from localdev.inprocess import MemoryQueue
from localdev.queue_host import queue_client
from responder.adapters.storage_queue import StorageWorkQueue
from responder.decisions.settings import MAX_QUEUE_DELAY_SECONDS
from tests.conftest import log_lines

WEEK = 7 * 24 * 3600


class PutMessageAnswers:
    """What Azurite answers to each Put Message the adapter sends (its `QueueMessagesList`)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, datetime]] = []

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        request, answer = response.http_request, response.http_response
        if request.method != "POST" or not request.url.split("?")[0].endswith("/messages"):
            return
        text = answer.text()
        self.messages.append(
            {
                field: parsedate_to_datetime(re.findall(rf"<{field}>([^<]+)</{field}>", text)[0])
                for field in ("InsertionTime", "TimeNextVisible", "ExpirationTime")
            }
        )


@pytest.fixture
def answers() -> PutMessageAnswers:
    return PutMessageAnswers()


@pytest.fixture
def queue_name() -> str:
    return f"lifetime-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def work_queue(azurite: Azurite, answers: PutMessageAnswers, queue_name: str) -> AsyncIterator[StorageWorkQueue]:
    """The product's queue adapter over real azure-storage-queue clients, whose answers are kept."""
    queue = StorageWorkQueue(
        lambda: QueueServiceClient.from_connection_string(azurite.connection_string, raw_response_hook=answers),
        queue_name,
        f"{queue_name}-poison",
    )
    yield queue
    await queue.close()


async def test_a_message_sent_with_the_longest_delay_has_not_expired_when_it_becomes_visible(
    work_queue: StorageWorkQueue, answers: PutMessageAnswers
) -> None:
    await work_queue.send('{"cleanup": "vm-old-09"}', MAX_QUEUE_DELAY_SECONDS)

    (put,) = answers.messages
    assert MAX_QUEUE_DELAY_SECONDS == WEEK
    assert put["TimeNextVisible"] - put["InsertionTime"] == timedelta(seconds=WEEK)
    assert put["ExpirationTime"] > put["TimeNextVisible"]  # Azure's default time-to-live makes them equal


async def test_a_parked_message_never_expires(work_queue: StorageWorkQueue, azurite: Azurite, queue_name: str) -> None:
    await work_queue.send_poison('{"cleanup": "vm-old-09"}', "a test parks it")

    async with queue_client(azurite.connection_string, f"{queue_name}-poison") as poison:
        (parked,) = await poison.peek_messages(max_messages=32)

    assert parked.expires_on is not None
    assert parked.expires_on >= datetime(9999, 12, 31, tzinfo=UTC)  # Azure's "never expires"


async def test_a_delay_past_azures_longest_visibility_timeout_is_sent_as_seven_days_and_said(
    work_queue: StorageWorkQueue, answers: PutMessageAnswers, caplog: pytest.LogCaptureFixture
) -> None:
    await work_queue.send('{"cleanup": "vm-old-09"}', WEEK + 1)  # Azure would refuse it (400)

    (put,) = answers.messages
    (line,) = log_lines(caplog, "queue-delay")
    assert put["TimeNextVisible"] - put["InsertionTime"] == timedelta(seconds=WEEK)
    assert line["_level"] == logging.WARNING
    assert "longer than Azure Storage's longest visibility timeout" in line["reason"]


def test_the_in_memory_queue_loses_a_message_whose_delay_reaches_its_time_to_live() -> None:
    clock = {"now": 1_000_000.0}
    queue = MemoryQueue(lambda: clock["now"])
    queue.put_message('{"cleanup": "vm-old-09"}', visibility_timeout=WEEK)  # no time-to-live: Azure's 7 days

    clock["now"] += WEEK

    assert queue.visible() == []
    assert queue.messages == []


async def test_the_in_memory_queue_delivers_what_the_product_sends_with_the_longest_delay() -> None:
    clock = {"now": 1_000_000.0}
    queue = MemoryQueue(lambda: clock["now"])
    await queue.send('{"cleanup": "vm-old-09"}', MAX_QUEUE_DELAY_SECONDS)

    clock["now"] += 10 * WEEK

    assert [message.text for message in queue.visible()] == ['{"cleanup": "vm-old-09"}']
