"""The cleanup queue message: one cleanup per deletion, and a message read strictly."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from responder.decisions.cleanup import CleanupRequest, MessageError
from responder.decisions.model import Incarnation

DELETED_AT = datetime(2026, 11, 22, 16, 45, 10, tzinfo=UTC)
REQUEST = CleanupRequest(
    event_id="delete-1",
    resource_id="/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/vm1",
    subscription_id="s",
    resource_group="rg",
    vm_name="vm1",
    deleted_at=DELETED_AT,
    incarnation=Incarnation(vm_id="vmid-1"),
)


def test_a_redelivered_deletion_shares_its_cleanup() -> None:
    again = replace(REQUEST, event_id="another-delivery-of-the-same-deletion")

    assert again.key == REQUEST.key


def test_a_second_delete_event_of_the_same_vm_shares_its_cleanup() -> None:
    # Two cleanups of one VM would chase the same records.
    later = replace(REQUEST, event_id="delete-2", deleted_at=DELETED_AT + timedelta(minutes=10))

    assert later.key == REQUEST.key


def test_each_deletion_of_a_vm_never_seen_gets_its_own_cleanup() -> None:
    unseen = replace(REQUEST, incarnation=replace(REQUEST.incarnation, vm_id=None))
    later = replace(unseen, event_id="delete-2", deleted_at=DELETED_AT + timedelta(days=2))

    assert later.key != unseen.key


def test_a_recreated_vm_gets_its_own_cleanup() -> None:
    assert replace(REQUEST, incarnation=replace(REQUEST.incarnation, vm_id="vmid-2")).key != REQUEST.key


def test_a_message_survives_the_queue_unchanged() -> None:
    assert CleanupRequest.from_text(REQUEST.to_text()) == REQUEST


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"schema": 99}, "schema"),
        ({"surprise": 1}, "surprise"),
        ({"deleted_at": "yesterday"}, "deleted_at"),
        ({"opted_out": "no"}, "opted_out"),
        ({"resource_id": ""}, "resource_id"),
    ],
)
def test_an_unreadable_message_names_the_field(change: dict[str, object], named: str) -> None:
    document = {**json.loads(REQUEST.to_text()), **change}

    with pytest.raises(MessageError, match=named):
        CleanupRequest.from_text(json.dumps(document))
