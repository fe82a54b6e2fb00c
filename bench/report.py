"""The benchmark table: each row what was measured, against which target, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    measure: str
    value: str
    target: str
    verdict: str = ""


def table(rows: list[Row]) -> str:
    """The rows as the benchmark prints them, each column as wide as its widest cell."""
    lines = [("measure", "measured", "target", "verdict")]
    lines += [(row.measure, row.value, row.target, row.verdict) for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(3)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[3]]).rstrip()
        for line in lines
    )
