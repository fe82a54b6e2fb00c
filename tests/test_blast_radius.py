"""The rolling-hour cap on destructive actions, as a pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from responder.decisions.blast_radius import CapState, reserve

NOW = datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC)
MINUTE = NOW.replace(second=0)


def test_slots_are_granted_while_the_hour_has_room() -> None:
    state, reservation = reserve(CapState(), 2, cap=3, now=NOW)

    assert reservation.granted
    assert state.buckets == ((MINUTE, 2),)


def test_over_the_cap_the_work_waits_until_a_slot_frees_up() -> None:
    state = CapState(buckets=((MINUTE - timedelta(minutes=50), 1), (MINUTE - timedelta(minutes=10), 1)))

    _, reservation = reserve(state, 1, cap=2, now=NOW)

    assert not reservation.granted
    assert reservation.retry_after_seconds == 571  # 11:10's deletion leaves the window at 12:10:00


def test_deletions_older_than_an_hour_no_longer_count() -> None:
    state = CapState(buckets=((MINUTE - timedelta(minutes=61), 5),))

    _, reservation = reserve(state, 1, cap=1, now=NOW)

    assert reservation.granted


def test_the_state_stays_small_however_many_deletions() -> None:
    state = CapState()
    for second in range(0, 3600, 5):
        state, _ = reserve(state, 2, cap=10_000, now=NOW + timedelta(seconds=second))

    assert len(state.buckets) <= 60
    assert sum(count for _, count in state.buckets) > 1000


def test_one_warning_per_hour_says_the_cap_holds_work_back() -> None:
    full = CapState(buckets=((MINUTE, 1),))

    after_first, first = reserve(full, 1, cap=1, now=NOW)
    after_second, second = reserve(after_first, 1, cap=1, now=NOW + timedelta(minutes=5))
    _, third = reserve(after_second, 1, cap=1, now=NOW + timedelta(minutes=61))

    assert (first.warn, second.warn) == (True, False)
    assert third.granted  # by then the first deletion left the window


def test_a_plan_with_nothing_to_delete_needs_no_slot_and_never_waits() -> None:
    reservation = reserve(CapState(buckets=((MINUTE, 1),)), 0, cap=1, now=NOW)[1]
    assert (reservation.granted, reservation.retry_after_seconds, reservation.warn) == (0, 0, False)


def test_a_cap_smaller_than_one_cleanup_grants_what_fits_and_says_when_the_rest_can_go() -> None:
    state, reservation = reserve(CapState(), 2, cap=1, now=NOW)

    assert reservation.granted == 1
    assert state.buckets == ((MINUTE, 1),)
    assert reservation.retry_after_seconds == 3571  # this minute's deletion leaves the window at 13:00:00
