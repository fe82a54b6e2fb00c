"""One row of the benchmark table: what was measured, against which target, and the verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    measure: str
    value: str
    target: str
    verdict: str = ""
