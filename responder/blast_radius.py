"""The blast-radius cap: at most N destructive actions per rolling hour, across all instances.

The state (the times of recent deletions) lives in one table row updated under
ETag concurrency, not in memory, so every worker instance counts the same
deletions. Over the cap, work waits: the caller puts the message back with a
delay until a slot frees up, and one warning per hour says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CapState:
    deletions: tuple[datetime, ...] = ()  # within the last WINDOW
    last_warning_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    retry_after_seconds: int = 0  # when not granted: until the oldest counted deletion leaves the window
    warn: bool = False  # over the cap, and no warning was logged in the last hour


def reserve(state: CapState, wanted: int, cap: int, now: datetime) -> tuple[CapState, Reservation]:
    """Take `wanted` slots if the rolling hour has room for them."""
    recent = tuple(moment for moment in state.deletions if now - moment < WINDOW)
    if wanted == 0:
        return CapState(recent, state.last_warning_at), Reservation(True)
    if len(recent) + wanted <= cap:
        return CapState((*recent, *([now] * wanted)), state.last_warning_at), Reservation(True)
    frees_at = sorted(recent)[max(0, len(recent) + wanted - cap - 1)] + WINDOW if recent else now
    wait = max(1, int((frees_at - now).total_seconds()) + 1)
    warn = state.last_warning_at is None or now - state.last_warning_at >= WINDOW
    return (
        CapState(recent, now if warn else state.last_warning_at),
        Reservation(False, retry_after_seconds=wait, warn=warn),
    )
