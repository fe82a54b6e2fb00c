"""The queue watch, through its real timer function: every 15 minutes, one line per poison queue and
one for Event Grid's dead letters, which the poison-queue and dead-letter alerts read (design §8)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from azure.functions.timer import TimerRequest

from handlers import queue_watch
from localdev.azurite import Azurite
from localdev.queue_host import queue_client
from responder.composition import close_services
from responder.ports import Services
from tests.conftest import deployed_services, log_lines

on_queue_watch_timer = queue_watch.on_queue_watch_timer.build().get_user_function()


@pytest.fixture
async def services(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str
) -> AsyncIterator[Services]:
    monkeypatch.setenv("RESPONDER_CLEANUP_QUEUE", f"watch-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_DEVICE_CHECK_QUEUE", f"watch-checks-{table_name[-12:]}")
    monkeypatch.setenv("RESPONDER_DEAD_LETTER_CONTAINER", f"dead-{table_name[-12:]}")
    yield await deployed_services()
    await close_services()


async def test_each_watch_counts_the_dead_letters_and_each_poison_queue(
    services: Services, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    from azure.storage.blob.aio import ContainerClient

    caplog.set_level(logging.INFO, logger="responder")
    settings = services.settings
    async with ContainerClient.from_connection_string(
        azurite.connection_string, settings.cleanup.dead_letter_container
    ) as dead_letters:
        await dead_letters.create_container()
        for number in range(2):  # what Event Grid writes: one blob per undeliverable batch
            await dead_letters.upload_blob(f"topic/subscription/2026/11/24/{number}.json", b"[]")
        await services.cleanup_queue.send_poison("{}", "a test parks one message")

        await on_queue_watch_timer(TimerRequest(past_due=False))

        depths = {line["purpose"]: (line["queue"], line["messages"]) for line in log_lines(caplog, "queue-depth")}
        assert depths == {
            "cleanup": (settings.cleanup.poison_queue, 1),
            "device-check": (settings.device_check.poison_queue, 0),
        }
        (dead,) = log_lines(caplog, "dead-letters")
        assert (dead["container"], dead["deadLettered"]) == (settings.cleanup.dead_letter_container, 2)
        await dead_letters.delete_container()
    async with queue_client(azurite.connection_string, settings.cleanup.poison_queue) as poison:
        await poison.delete_queue()


async def test_a_count_that_fails_says_so_and_the_others_still_run(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")

    await on_queue_watch_timer(TimerRequest(past_due=False))  # no container yet: nothing dead-lettered

    assert [line["messages"] for line in log_lines(caplog, "queue-depth")] == [0, 0]
    (dead,) = log_lines(caplog, "dead-letters")
    assert (dead["deadLettered"], dead["failure"]) == (0, None)
