"""Which AVD host pool each session host VM was registered in, per subscription, as this instance last saw it.

The fallback of `ArmCompute.find_host_pool` for a VM whose own tag or registration extension doesn't
lead to its pool: one walk of the subscription (every host pool, every session host) serves every
lookup of the period, so a storm of events costs one walk per subscription, instance and period, not
one per event. An entry is where to look, not a proof: a lookup proves it again (the session host, read
by name, still has the VM's `resourceId`), except in the lookup whose own miss made the walk.

What staleness costs: a VM registered in a pool after the last walk, which names no pool it is in, is
not found (no session host) until the index is older than the period and a lookup misses again: at
most one period (15 minutes by default; the first device check comes 15 minutes after creation).
A VM taken out of a pool since the walk fails its proof and is not called a host.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from responder.decisions.errors import AccessDenied
from responder.decisions.facts import HostPool


@dataclass(frozen=True, slots=True)
class Registration:
    """A session host as the walk saw it: its pool, and its own name in the pool."""

    pool: HostPool  # with the session host's agent version
    session_host: str


@dataclass(frozen=True, slots=True)
class Walk:
    """One walk of a subscription's host pools."""

    hosts: dict[str, Registration] = field(default_factory=dict)  # by the VM's resource id, lower case
    refused: AccessDenied | None = None  # the first refusal met: the pools' list, or a pool's session hosts
    at: float = 0.0  # the index's clock when it ended


class HostPoolIndex:
    """Per instance (the ARM adapter's lifetime): the last walk of each subscription, and its age."""

    def __init__(self, max_age_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self.walks = 0  # walks made (the bench and the tests read it)
        self._walks: dict[str, Walk] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def last(self, subscription_id: str) -> Walk | None:
        return self._walks.get(subscription_id.lower())

    def is_fresh(self, walk: Walk) -> bool:
        return self.clock() - walk.at < self.max_age_seconds

    async def refresh(self, subscription_id: str, walk: Callable[[], Awaitable[Walk]], seen: Walk | None) -> Walk:
        """Walk again, unless another lookup did while this one waited: `seen` is the walk this lookup found
        (stale, or none), so concurrent misses of one subscription share one walk. A walk other than `seen`
        was made during the lookup: what it saw is as fresh as a proof."""
        key = subscription_id.lower()
        async with self._locks.setdefault(key, asyncio.Lock()):
            current = self._walks.get(key)
            if current is not None and current is not seen and self.is_fresh(current):
                return current
            self.walks += 1
            done = await walk()
            self._walks[key] = fresh = Walk(done.hosts, done.refused, self.clock())
            return fresh
