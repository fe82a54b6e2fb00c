"""Hostile and implausible events end as `malformed` with a bounded reason: never an exception,
never a ledger row, never a log line that echoes megabytes, never a time that freezes a VM."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers import vm_power
from localdev.inprocess import InProcess
from responder.decisions.events import ClassifiedEvent, IntakeError, parse_event
from responder.decisions.model import VmRef
from tests.conftest import handle_as, load_event, sample_in_process

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PREFIX = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/"
LONGEST_REASON = 1200  # a reason echoes at most a few clipped values


def deallocate(resource_id: str | None = None, **fields: Any) -> dict[str, Any]:
    raw = copy.deepcopy(load_event("eventgrid-vm-deallocate.json"))
    if resource_id is not None:
        raw["subject"] = raw["data"]["resourceUri"] = resource_id
    raw.update(fields)
    return raw


HOSTILE_NAMES = {
    "a control character": "vm\x00one",
    "a newline": "vm\none",
    "a hash": "vm#1",
    "a question mark": "vm?x=1",
    "a backslash": "vm\\one",
    "an encoded slash": "vm%2Fone",
    "a dot-dot": "..",
    "a space": "vm one",
    "a 2,000-character name": "v" * 2000,
    "a 5 MB name": "v" * 5_000_000,
    "a trailing dot": "vm1.",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_vm_name_azure_would_refuse_is_malformed(name: str) -> None:
    result = parse_event(deallocate(PREFIX + name), NOW)

    assert isinstance(result, IntakeError)
    assert len(result.message) < LONGEST_REASON


@pytest.mark.parametrize(
    "group", ["rg avd", "rg#1", "rg.", "r" * 91, "rg\x7f"], ids=["space", "hash", "dot", "long", "control"]
)
def test_a_resource_group_azure_would_refuse_is_malformed(group: str) -> None:
    resource_id = f"/subscriptions/{SUB}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/vm1"

    assert isinstance(parse_event(deallocate(resource_id), NOW), IntakeError)


def test_a_subscription_that_is_not_a_guid_is_malformed() -> None:
    resource_id = PREFIX.replace(SUB, "not-a-guid") + "vm1"

    assert isinstance(parse_event(deallocate(resource_id, topic="/subscriptions/not-a-guid"), NOW), IntakeError)


def test_names_azure_allows_are_accepted() -> None:
    result = parse_event(
        deallocate(
            f"/subscriptions/{SUB}/resourceGroups/rg_(prod).1/providers/Microsoft.Compute/virtualMachines/avd-host_01.a"
        ),
        NOW,
    )

    assert isinstance(result, ClassifiedEvent)


@pytest.mark.parametrize("field", ["topic", "subject"])
def test_a_non_string_envelope_field_is_malformed(field: str) -> None:
    not_a_string: Any = ["/subscriptions/x"]
    assert isinstance(parse_event(deallocate(**{field: not_a_string}), NOW), IntakeError)


def test_a_non_string_cloudevents_source_is_malformed() -> None:
    raw = copy.deepcopy(load_event("cloudevents-vm-deallocate.json"))
    raw["source"] = {"subscription": SUB}

    assert isinstance(parse_event(raw, NOW), IntakeError)


def test_a_subject_that_disagrees_with_the_resource_uri_is_malformed() -> None:
    raw = deallocate()
    raw["subject"] = PREFIX + "another-vm"

    result = parse_event(raw, NOW)

    assert isinstance(result, IntakeError)
    assert "disagrees" in result.message


def test_a_subject_differing_only_in_case_is_the_same_resource() -> None:
    raw = deallocate()
    raw["subject"] = raw["subject"].upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")

    assert isinstance(parse_event(raw, NOW), ClassifiedEvent)


@pytest.mark.parametrize(
    "moment",
    ["9999-01-01T00:00:00Z", "9999-12-31T23:59:59.9999999Z", "2026-11-21T14:00:00Z", "1999-12-31T23:59:59Z"],
    ids=["year 9999", "the last instant of 9999", "two hours ahead", "before ARM events"],
)
def test_an_implausible_event_time_is_malformed(moment: str) -> None:
    result = parse_event(deallocate(eventTime=moment), NOW)

    assert isinstance(result, IntakeError)
    assert "event time" in result.message


def test_a_little_clock_skew_is_accepted() -> None:
    ahead = (NOW + timedelta(minutes=10)).isoformat()

    assert isinstance(parse_event(deallocate(eventTime=ahead), NOW), ClassifiedEvent)


@pytest.mark.parametrize("event_id", ["x" * 5000, "id\nwith a newline", "   "], ids=["long", "newline", "blank"])
def test_an_unprintable_or_huge_event_id_is_malformed(event_id: str) -> None:
    result = parse_event(deallocate(id=event_id), NOW)

    assert isinstance(result, IntakeError)
    assert len(result.message) < LONGEST_REASON


# --- through the pipeline: the outcome, the ledger, the log line -------------------------


@pytest.fixture
def product() -> Iterator[InProcess]:
    running = sample_in_process({}, lambda: NOW)
    yield running
    asyncio.run(running.services.aclose())


def deliver(product: InProcess, raw: dict[str, Any]) -> str:
    return asyncio.run(handle_as(raw, vm_power.ACCEPTS, product.services)).outcome


def test_a_5_mb_resource_id_is_dropped_with_one_short_log_line(
    product: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="responder")

    outcome = deliver(product, deallocate(PREFIX + "v" * 5_000_000))

    assert outcome == "malformed"
    assert product.ledger.rows == {}
    assert max(len(record.getMessage()) for record in caplog.records) < 2000


def test_an_event_from_the_far_future_does_not_freeze_the_vm(product: InProcess) -> None:
    assert deliver(product, deallocate(id="from-the-future", eventTime="9999-12-31T23:59:59.9999999Z")) == "malformed"

    assert deliver(product, deallocate()) == "recorded"
    record = asyncio.run(product.ledger.get(VmRef(SUB, "rg-avd-prod", "vm-win11-01")))
    assert record is not None
    assert record.power_state_at is not None
    assert record.power_state_at.year == 2026
