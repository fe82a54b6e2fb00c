"""The blast-radius cap: at most N destructive actions per rolling hour, across all instances.

The state lives in one table row updated under ETag concurrency, not in memory, so
every worker instance counts the same deletions. It is kept as per-minute counts
(at most sixty; the hour rolls by the minute), so the row stays small however large
the cap. Over the cap, work
waits: the caller puts the message back with a delay until a slot frees up, and one
warning per hour says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CapState:
    buckets: tuple[tuple[datetime, int], ...] = ()  # (minute, deletions in it), within the last WINDOW
    last_warning_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: int  # slots taken: all that were wanted, as many as the hour had room for, or none
    retry_after_seconds: int = 0  # when fewer than wanted: until a slot frees up
    warn: bool = False  # the cap held work back, and no warning was logged in the last hour


def reserve(state: CapState, wanted: int, cap: int, now: datetime) -> tuple[CapState, Reservation]:
    """Take up to `wanted` slots, as many as the rolling hour has room for.

    Granting part of a request (one record of a VM's two) means a cap smaller than
    one cleanup still makes progress, one record at a time, instead of waiting forever.
    """
    recent = sorted((minute, count) for minute, count in state.buckets if now - minute < WINDOW)
    counted = sum(count for _, count in recent)
    room = max(0, cap - counted)
    granted = min(wanted, room)
    counts = dict(recent)
    if granted:
        minute = now.replace(second=0, microsecond=0)
        counts[minute] = counts.get(minute, 0) + granted
    taken = CapState(tuple(sorted(counts.items())), state.last_warning_at)
    if granted == wanted:
        return taken, Reservation(granted)
    frees_at = now
    excess = counted + granted + 1 - cap  # the next slot frees when this many counted deletions left the window
    for minute, count in taken.buckets:  # oldest first: when has enough left the window?
        excess -= count
        frees_at = minute + WINDOW  # a minute's count stops counting an hour after the minute began
        if excess <= 0:
            break
    wait = max(1, int((frees_at - now).total_seconds()) + 1)
    warn = state.last_warning_at is None or now - state.last_warning_at >= WINDOW
    return (
        CapState(taken.buckets, now if warn else state.last_warning_at),
        Reservation(granted, retry_after_seconds=wait, warn=warn),
    )
