"""One Functions host instance in the storm benchmark: Event Grid pushes events to it, it runs them.

    python bench/storm_host.py <start epoch seconds> < events.jsonl

Each line is `{"due": seconds after start, "event": {...}}`. At its due time each event is handed
to the real power handler, concurrently (the host runs many invocations of an async function at
once, up to `CONCURRENCY`). A handler that raises is what Event Grid would redeliver: it is sent
again on Event Grid's retry schedule, and counted. Prints one JSON line with the counts, the time
the last event was done, and the process's peak resident memory.

`STORM_TRACEMALLOC=<folder>`: each host also writes there the 25 source lines that hold the most
memory once its events are done (`tracemalloc`), to find what a host keeps from one event to the next.
"""

import asyncio
import json
import logging
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONCURRENCY = 32
RETRY_SCHEDULE = (10, 30, 60, 300, 600)  # Event Grid's first delays, in seconds


async def deliver(handler: Any, raw: dict[str, Any], totals: dict[str, float], gate: asyncio.Semaphore) -> None:
    from handlers._eventgrid import trigger_input

    for attempt, delay in enumerate((0, *RETRY_SCHEDULE)):
        await asyncio.sleep(delay)
        try:
            async with gate:
                await handler(trigger_input(raw))
        except Exception:
            totals["redelivered"] += 1
            continue
        totals["handled"] += 1
        totals["retried_events"] += attempt > 0
        totals["last_done"] = max(totals["last_done"], time.time())
        return
    totals["dead_lettered"] += 1


async def run(start: float, lines: list[str]) -> dict[str, float]:
    import function_app
    from responder.composition import close_services

    functions = {function.get_function_name(): function for function in function_app.app.get_functions()}
    handler = functions["on_vm_power_changed"].get_user_function()
    totals = {"handled": 0.0, "redelivered": 0.0, "retried_events": 0.0, "dead_lettered": 0.0, "last_done": 0.0}
    gate = asyncio.Semaphore(CONCURRENCY)
    pending = []
    for line in lines:
        item = json.loads(line)
        await asyncio.sleep(max(0.0, start + item["due"] - time.time()))
        pending.append(asyncio.create_task(deliver(handler, item["event"], totals, gate)))
    await asyncio.gather(*pending)
    await close_services()
    return totals


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    start = float(sys.argv[1])
    traced = os.environ.get("STORM_TRACEMALLOC")
    if traced:
        tracemalloc.start()
    totals = asyncio.run(run(start, sys.stdin.read().splitlines()))
    if traced:
        top = tracemalloc.take_snapshot().statistics("lineno")[:25]
        Path(traced, f"host-{os.getpid()}.txt").write_text("\n".join(str(line) for line in top))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**totals, "peak_bytes": peak_kib * 1024}))


if __name__ == "__main__":
    main()
