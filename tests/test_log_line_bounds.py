"""Every log line is bounded as a whole (`log_lines.MAX_LINE`): Application Insights cuts a trace
message at 32,768 characters, a cut line is no longer JSON, and the workbook and alerts lose it.

Through `log_lines.write`, as the responder logs, with the worst values a field can hold: the
line's length is counted as Application Insights counts it, in UTF-16 code units."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from responder.log_lines import MAX_LINE, MAX_TEXT, write

PREFIX = '{"log": "intune-vm-responder"'  # what the workbook and the alerts filter on
EMOJI = "\U0001f600"  # 1 character, 2 UTF-16 code units, 12 characters as a JSON \u escape pair
SHORT_FIELDS: dict[str, Any] = {
    "vmName": "vm-win11-01",
    "mode": "enforce",
    "note": f"café ☕ {EMOJI}",
    "attempt": 3,
    "accepted": True,
    "failure": None,
}
WORST: dict[str, dict[str, Any]] = {
    "astral emoji": {f"field{n}": EMOJI * MAX_TEXT for n in range(20)},
    "control characters": {f"field{n}": "\x00\x1b\x7f\x85" * (MAX_TEXT // 4) for n in range(20)},
    "control characters with emoji": {f"field{n}": f"\x01{EMOJI}" * (MAX_TEXT // 2) for n in range(20)},
    "quotes and backslashes": {f"field{n}": '"\\' * (MAX_TEXT // 2) for n in range(20)},
    "lone surrogates": {f"field{n}": "\ud800" * MAX_TEXT for n in range(20)},
    "a list of 500 strings": {"actions": [EMOJI * MAX_TEXT] * 500},
    "strings far over the clip": {f"field{n}": "x" * 100_000 for n in range(20)},
}


def units(text: str) -> int:
    """The length Application Insights counts: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def written(caplog: pytest.LogCaptureFixture, **fields: Any) -> str:
    """The message of the one line `write` logs with these fields."""
    caplog.set_level(logging.INFO, logger="responder")
    write(logging.INFO, "bounds", **fields)
    (record,) = [record for record in caplog.records if record.name == "responder"]
    return record.getMessage()


@pytest.fixture(params=list(WORST), ids=list(WORST))
def worst_line(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> str:
    """A line of every short field and one worst case."""
    return written(caplog, **SHORT_FIELDS, **WORST[request.param])


def test_the_bound_is_below_where_application_insights_cuts_a_message() -> None:
    assert MAX_LINE < 32_768


def test_a_worst_case_line_is_within_the_bound(worst_line: str) -> None:
    assert units(worst_line) <= MAX_LINE


def test_a_worst_case_line_parses_as_json(worst_line: str) -> None:
    assert isinstance(json.loads(worst_line), dict)


def test_a_worst_case_line_starts_with_the_prefix_the_queries_filter_on(worst_line: str) -> None:
    assert worst_line.startswith(PREFIX)


def test_a_worst_case_line_keeps_its_short_fields_as_they_were(worst_line: str) -> None:
    line = json.loads(worst_line)

    assert {name: line[name] for name in SHORT_FIELDS} == SHORT_FIELDS
    assert (line["schema"], line["kind"]) == (1, "bounds")


def test_a_worst_case_line_encodes_as_utf8(worst_line: str) -> None:
    worst_line.encode("utf-8")  # the worker sends it as UTF-8: a lone surrogate would raise


def test_a_line_that_fits_is_not_shortened(caplog: pytest.LogCaptureFixture) -> None:
    reason = "r" * MAX_TEXT

    line = json.loads(written(caplog, reason=reason, actions=["a"] * 100, **SHORT_FIELDS))

    assert (line["reason"], line["actions"]) == (reason, ["a"] * 100)


def test_non_ascii_is_written_as_itself_not_as_an_escape(caplog: pytest.LogCaptureFixture) -> None:
    assert f'"note": "café ☕ {EMOJI}"' in written(caplog, note=f"café ☕ {EMOJI}")


def test_a_string_over_the_clip_is_clipped_as_before(caplog: pytest.LogCaptureFixture) -> None:
    line = json.loads(written(caplog, reason="x" * 5000))

    assert line["reason"] == "x" * MAX_TEXT + "…(5000 characters)"


def test_an_astral_character_counts_two_units_toward_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    fields = {f"field{n}": EMOJI * 3000 for n in range(6)}  # 18,000 characters, 36,000 UTF-16 code units

    line = written(caplog, **fields)

    assert units(line) <= MAX_LINE
    assert json.loads(line) != {"log": "intune-vm-responder", "schema": 1, "kind": "bounds", **fields}


def test_a_shortened_string_is_marked_with_its_full_length(caplog: pytest.LogCaptureFixture) -> None:
    line = json.loads(written(caplog, **{f"field{n}": EMOJI * 3000 for n in range(20)}))

    shown, mark = line["field0"].split("…")
    assert (set(shown), mark) == ({EMOJI}, "(3000 characters)")


def test_the_longest_string_is_shortened_first(caplog: pytest.LogCaptureFixture) -> None:
    longest = f"\x01{EMOJI}" * (MAX_TEXT // 2)  # clipped, every character shown escaped: 32,000 in JSON
    medium = "m" * 3000

    line = json.loads(written(caplog, longest=longest, medium1=medium, medium2=medium, medium3=medium))

    assert [line[name] for name in ("medium1", "medium2", "medium3")] == [medium] * 3
    assert line["longest"].endswith(f"…({MAX_TEXT} characters)")


def test_a_shortened_list_keeps_its_first_items_and_says_how_many_it_had(caplog: pytest.LogCaptureFixture) -> None:
    items = [f"{n:03d}-" + "a" * 996 for n in range(500)]

    line = json.loads(written(caplog, actions=items))

    *kept, mark = line["actions"]
    assert kept == items[: len(kept)]
    assert mark == "…(500 items)"


def test_a_line_that_cannot_fit_keeps_only_its_kind_and_its_length(caplog: pytest.LogCaptureFixture) -> None:
    fields = {f"field{n}": "z" * 150 for n in range(400)}  # 400 short fields: none is long enough to shorten

    line = json.loads(written(caplog, **fields))

    assert set(line) == {"log", "schema", "kind", "clipped"}
    assert line["kind"] == "bounds"
    assert line["clipped"].endswith(" characters)")
