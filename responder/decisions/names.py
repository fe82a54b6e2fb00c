"""What an id, name or time from outside may look like, before anything stores or echoes it.

The rules are Azure's own (resource names: "Naming rules and restrictions for Azure
resources"; Table keys: "Understanding the Table service data model"), narrowed where the
responder is stricter than Azure needs: a name the rules allow can't reach a ledger key,
a log line or a Graph filter in a form that breaks them.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

# Microsoft.Compute/virtualMachines: 1-64 characters (a Windows VM's 1-15, but the OS is not known
# at intake); letters, digits, '-', '_', '.'; starts with a letter or digit, ends with one or '_'.
VM_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?")
MAX_RESOURCE_GROUP = 90  # letters and digits (Unicode), '-', '_', '(', ')', '.'; no trailing '.'
RESOURCE_GROUP_PUNCTUATION = frozenset("-_().")
MAX_RESOURCE_ID = 1024  # far longer than any VM's; a Table key holds 1 KiB
MAX_EVENT_ID = 256  # Event Grid ids are GUIDs; the ledger keeps recent ones in a Table property
EARLIEST_EVENT = datetime(2015, 1, 1, tzinfo=UTC)  # before Azure Resource Manager events existed
CLOCK_SKEW = timedelta(hours=1)  # how far in the future an event's time may be
CLIP = 200  # characters of a foreign value a log line or a reason echoes


def clip(value: object, limit: int = CLIP) -> str:
    """A foreign value as a log line may echo it: bounded, control characters made visible."""
    text = value if isinstance(value, str) else repr(value)
    shown = text[:limit].encode("unicode_escape").decode("ascii") if has_control(text[:limit]) else text[:limit]
    return shown if len(text) <= limit else f"{shown}…({len(text)} characters)"


def vm_name_problem(name: str) -> str | None:
    if VM_NAME.fullmatch(name) is None or ".." in name:
        return f"VM name {clip(name)!r} breaks Azure's naming rules (1-64 letters, digits, '-', '_', '.')"
    return None


def resource_group_problem(name: str) -> str | None:
    valid = (
        0 < len(name) <= MAX_RESOURCE_GROUP
        and all(character.isalnum() or character in RESOURCE_GROUP_PUNCTUATION for character in name)
        and not name.endswith(".")
        and ".." not in name
    )
    if not valid:
        return f"resource group {clip(name)!r} breaks Azure's naming rules (1-90 letters, digits, '-_().')"
    return None


def subscription_problem(subscription_id: str) -> str | None:
    try:
        parsed = uuid.UUID(subscription_id)
    except ValueError:
        parsed = None
    if parsed is None or len(subscription_id) != 36:
        return f"subscription {clip(subscription_id)!r} is not a GUID"
    return None


def event_id_problem(event_id: str) -> str | None:
    if len(event_id) > MAX_EVENT_ID or has_control(event_id) or not event_id.strip():
        return f"event id {clip(event_id)!r} is not a printable string of at most {MAX_EVENT_ID} characters"
    return None


def event_time_problem(moment: datetime, now: datetime) -> str | None:
    """An event dated far in the future would freeze the VM's state (every later event is older)."""
    if moment < EARLIEST_EVENT:
        return f"event time {moment.isoformat()} is before Azure Resource Manager events existed"
    if moment > now + CLOCK_SKEW:
        return f"event time {moment.isoformat()} is in the future (now {now.isoformat()})"
    return None


def has_control(text: str) -> bool:
    """C0 or C1 control characters: never in an id or a name, and they would garble a log line."""
    return any(ord(character) < 32 or 127 <= ord(character) < 160 for character in text)
