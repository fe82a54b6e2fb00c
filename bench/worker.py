"""One cleanup-worker process for the burst benchmark: drains the queue like a host instance.

Runs apart from the simulators so the two don't share one interpreter lock; prints its
counts and its peak memory (resident set, from the kernel) as one JSON line. Not `tracemalloc`:
tracing every allocation made the burst's workers about twice as slow (141 s against 76 s
for 1,000 deletions on 2 cores), so the memory row cost the burst its figure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handlers import cleanup_worker
from localdev.queue_host import run_queue_trigger


async def drain() -> dict[str, int]:
    from responder.composition import close_services

    worker = cleanup_worker.on_cleanup_message.build().get_user_function()
    totals = {"completed": 0, "retried": 0, "poisoned": 0}
    idle_rounds = 0
    while idle_rounds < 3:  # the host keeps polling; stop after a few empty polls
        run = await run_queue_trigger(os.environ["AzureWebJobsStorage"], os.environ["RESPONDER_CLEANUP_QUEUE"], worker)
        for key in totals:
            totals[key] += getattr(run, key)
        idle_rounds = 0 if (run.completed or run.retried or run.poisoned) else idle_rounds + 1
        if idle_rounds:
            await asyncio.sleep(1)
    await close_services()
    return totals


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)
    totals = asyncio.run(drain())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({**totals, "peak_bytes": peak_kib * 1024}))


if __name__ == "__main__":
    main()
