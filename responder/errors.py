"""Errors that decide what the Functions host does next.

A handler lets `TransientError` escape so Event Grid (or the queue) delivers the
event again later; every other problem is handled, logged and dropped.
"""


class TransientError(Exception):
    """A dependency failed in a way that a later retry can fix (throttling, 5xx,
    network, a lost optimistic-concurrency race)."""


class LedgerConflict(TransientError):
    """Another event changed the same ledger row first (ETag mismatch)."""
