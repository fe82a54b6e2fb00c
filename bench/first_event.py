"""A fresh host process's first event: index the app as the host does, handle one event, say so.

    python bench/first_event.py <function name> <payload.json>

The payload is what the host hands the function: an Event Grid event, a queue message body,
or nothing for the timer. The parent times from spawning this process to the line it prints,
so interpreter start, indexing, every import the first event needs, token, and the calls
themselves are all in the figure. Settings come from the environment, as in Azure.
"""

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def trigger_for(function_name: str, payload: Any) -> Any:
    """The trigger object the worker builds for this function from the host's payload."""
    if function_name in ("on_cleanup_message", "on_device_check_message"):
        from azure.functions.queue import QueueMessage

        return QueueMessage(id="bench", body=payload.encode(), dequeue_count=1)
    if function_name == "on_reconcile_timer":
        from azure.functions.timer import TimerRequest

        return TimerRequest(past_due=False)
    from handlers._eventgrid import trigger_input

    return trigger_input(payload)


def main() -> None:
    function_name, payload_file = sys.argv[1], sys.argv[2]
    import function_app  # what the host imports to index the functions

    functions = {function.get_function_name(): function for function in function_app.app.get_functions()}
    handler = functions[function_name].get_user_function()
    payload = json.loads(Path(payload_file).read_text())
    asyncio.run(handler(trigger_for(function_name, payload)))
    print("handled", flush=True)
    os._exit(0)  # the host keeps the process; its teardown is not part of the first event


if __name__ == "__main__":
    main()
