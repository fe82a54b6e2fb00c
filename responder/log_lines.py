"""The responder's log lines: one JSON object each, with stable field names.

The workbook and the alerts (`infra/monitoring/`) read these fields, so they are a
contract: documented in the README ("Log lines are JSON"), checked by
tests/test_monitoring.py against the queries, and versioned by `schema`.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from responder.decisions.errors import AccessDenied, RequestRefused, TransientError
from responder.decisions.events import vm_ref_from_resource_id
from responder.decisions.names import CLIP, clip

LOG = "intune-vm-responder"
SCHEMA = 1

log = logging.getLogger("responder")


MAX_TEXT = 4000  # a reason names every candidate record; more is never useful, and the line must stay JSON
# A whole line, in UTF-16 code units. Application Insights cuts a trace message at 32,768 characters,
# counted as .NET counts a string's length: in UTF-16 code units, so a character beyond the BMP (an
# emoji) counts 2. 768 spare units: a cut line is no longer JSON, and the workbook and alerts lose it.
MAX_LINE = 32_000
SHORT = CLIP  # a string whose JSON is this long or shorter (units) is never shortened to fit a line
FEW_ITEMS = 10  # a list is shortened to fit a line down to its first ten items, then its strings are

_SURROGATE = re.compile("[\ud800-\udfff]")


def write(level: int, kind: str, **fields: Any) -> None:
    """One line: `{"log": "intune-vm-responder", "schema": 1, "kind": kind, ...fields}` (`line`)."""
    log.log(level, "%s", line(kind, fields))


def line(kind: str, fields: Mapping[str, Any]) -> str:
    """The line's JSON, at most `MAX_LINE` UTF-16 code units, so the telemetry pipeline never cuts it.

    Every string is clipped to `MAX_TEXT` characters (`names.clip`, which shows control characters
    escaped), and non-ASCII characters are written as themselves, not as 6- or 12-character `\\u`
    escapes. A line still too long is shortened step by step, the longest part first: a string is
    clipped further (marked `…(N characters)`, N its full length), a list of more than `FEW_ITEMS`
    keeps its first items (the last one says `…(N items)`); a part `SHORT` or shorter is left alone,
    and so is every number, boolean and null. A line that can't fit even so keeps only `log`, `schema`,
    `kind` and `clipped` (the length it had)."""
    document = _Fields({"log": LOG, "schema": SCHEMA, "kind": kind, **fields})
    text = _json(document.value())
    if _units(text) <= MAX_LINE:  # nearly every line
        return text
    while True:
        longest = heapq.nlargest(2, _shortenable(document), key=lambda part: part.size)  # sizes refreshed
        excess = document.size - MAX_LINE
        if excess <= 0 or not longest:
            break
        size, second = longest[0].size, longest[1].size if len(longest) > 1 else 0
        # what the line needs, but no deeper than the next-longest part or half, whichever is deeper
        longest[0].shorten(max(size - excess, min(second, size // 2), SHORT))
    text = _json(document.value())
    if _units(text) <= MAX_LINE:
        return text
    return _json({"log": LOG, "schema": SCHEMA, "kind": clip(kind), "clipped": f"…({_units(text)} characters)"})


def _json(value: Any) -> str:
    """JSON as the line holds it: default separators (the queries filter on the line's start), and
    lone surrogates escaped (they have no UTF-8 form, and the worker sends the line as UTF-8)."""
    text = json.dumps(value, ensure_ascii=False)
    return _SURROGATE.sub(lambda found: f"\\u{ord(found[0]):04x}", text) if _SURROGATE.search(text) else text


def _units(text: str) -> int:
    """The length Application Insights counts: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class _Part:
    """A piece of the line: its value, and the length of its JSON in UTF-16 code units (`size`,
    worked out only when the line is too long: most lines never need it)."""

    _size: int | None = None

    def value(self) -> Any:
        raise NotImplementedError

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self._measure()
        return self._size

    def _measure(self) -> int:
        return _units(_json(self.value()))


class _Fixed(_Part):
    """A number, a boolean, null: never shortened."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def value(self) -> Any:
        return self._value


class _Text(_Part):
    """A string, clipped to `MAX_TEXT` characters, and further when the line needs it."""

    def __init__(self, text: str) -> None:
        self._text, self._limit = text, min(len(text), MAX_TEXT)
        self._value = clip(text, self._limit)

    def value(self) -> str:
        return self._value

    @property
    def shortenable(self) -> bool:
        return self._limit > 0 and self.size > SHORT

    def shorten(self, target: int) -> None:
        """Clip to the most characters whose JSON is at most `target` long (or to none at all)."""
        while self.size > target and self._limit > 0:
            self._limit = max(0, min(self._limit - 1, self._limit * target // self.size))
            self._value, self._size = clip(self._text, self._limit), None


class _Items(_Part):
    """A list, and how many of its items the line keeps."""

    def __init__(self, items: list[_Part]) -> None:
        self.items, self.kept = items, len(items)

    def value(self) -> list[Any]:
        return [item.value() for item in self.items[: self.kept]] + self._mark(self.kept)

    @property
    def shortenable(self) -> bool:
        return self.kept > FEW_ITEMS

    def shorten(self, target: int) -> None:
        """Keep fewer items (one fewer at least, `FEW_ITEMS` at least): as many as fit `target`."""
        kept, size = self.kept - 1, self._size_keeping(self.kept - 1)
        while kept > FEW_ITEMS and size > target:
            kept, size = kept - 1, size - self.items[kept - 1].size - 2  # the item and its ", "
        self.kept, self._size = kept, size

    def refresh(self) -> None:
        self._size = None

    def _measure(self) -> int:
        return self._size_keeping(self.kept)

    def _mark(self, kept: int) -> list[str]:
        return [f"…({len(self.items)} items)"] if kept < len(self.items) else []

    def _size_keeping(self, kept: int) -> int:
        """`[item, item, "…(N items)"]`: the kept items, the mark when some are left out, ", " between."""
        sizes = [item.size for item in self.items[:kept]] + [_units(_json(mark)) for mark in self._mark(kept)]
        return 2 + sum(sizes) + 2 * max(len(sizes) - 1, 0)


class _Fields(_Part):
    """An object: the line itself, or a field's value."""

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = {str(name): _part(value) for name, value in fields.items()}

    def value(self) -> dict[str, Any]:
        return {name: part.value() for name, part in self.fields.items()}

    def refresh(self) -> None:
        self._size = None

    def _measure(self) -> int:
        entries = [_units(_json(name)) + 2 + part.size for name, part in self.fields.items()]  # `"name": value`
        return 2 + sum(entries) + 2 * max(len(entries) - 1, 0)


def _part(value: Any) -> _Part:
    if isinstance(value, str):
        return _Text(value)
    if isinstance(value, (list, tuple)):
        return _Items([_part(item) for item in value])
    if isinstance(value, Mapping):
        return _Fields(value)
    if value is None or isinstance(value, (bool, int, float)):
        return _Fixed(value)
    return _Text(str(value))  # a time, an enum, anything else: as its text


def _shortenable(part: _Part) -> Iterator[_Text | _Items]:
    """The parts that can still be shortened, innermost first; every container's size refreshed."""
    if isinstance(part, _Items):
        for item in part.items[: part.kept]:
            yield from _shortenable(item)
        part.refresh()
        if part.shortenable:
            yield part
    elif isinstance(part, _Fields):
        for field in part.fields.values():
            yield from _shortenable(field)
        part.refresh()
    elif isinstance(part, _Text) and part.shortenable:
        yield part


def vm_fields(resource_id: str | None) -> dict[str, str | None]:
    """The VM's resource id and its parts, for filtering by subscription, group and name."""
    ref = vm_ref_from_resource_id(resource_id) if resource_id else None
    return {
        "resourceId": resource_id,
        "subscriptionId": ref.subscription_id if ref else None,
        "resourceGroup": ref.resource_group if ref else None,
        "vmName": ref.name if ref else None,
    }


def failure_of(problem: BaseException | None) -> tuple[str | None, str | None]:
    """What kind of failure, and of which service: what the throttling and access alerts read."""
    if isinstance(problem, AccessDenied):
        return "access-denied", problem.service
    if isinstance(problem, RequestRefused):
        return "refused", problem.service
    if isinstance(problem, TransientError):
        return "transient", problem.service
    return None, None


def failure_fields(problem: BaseException | None) -> dict[str, str | int | None]:
    """`failure` and `service`, with the `role` a refused identity needs (the access-denied alert is
    split by it) and the HTTP `status` (429: throttled, what the throttling alert counts)."""
    failure, service = failure_of(problem)
    role = problem.role if isinstance(problem, AccessDenied) else None
    status = problem.status if isinstance(problem, (TransientError, RequestRefused)) else None
    return {"failure": failure, "service": service, "role": role, "status": status}
