"""The Event Grid functions as routes, for running them without the host.

Each route calls the function's user code exactly as the worker does, with an
`azure.functions` trigger object, so the local run and `replay` exercise the
same path as Azure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.functions.decorators.function_app import FunctionBuilder

from handlers import vm_created, vm_deleted, vm_power
from handlers._eventgrid import trigger_input
from tools.replay import Route

_EVENT_GRID: tuple[tuple[FunctionBuilder, frozenset[Any]], ...] = (
    (vm_created.on_vm_created, vm_created.ACCEPTS),
    (vm_power.on_vm_power_changed, vm_power.ACCEPTS),
    (vm_deleted.on_vm_deleted, vm_deleted.ACCEPTS),
)


def event_grid_routes() -> tuple[Route, ...]:
    return tuple(_route(builder, accepts) for builder, accepts in _EVENT_GRID)


def _route(builder: FunctionBuilder, accepts: frozenset[Any]) -> Route:
    function = builder.build()
    user_function = function.get_user_function()

    async def call(raw: Mapping[str, Any]) -> None:
        await user_function(trigger_input(raw))

    return Route(name=function.get_function_name() or user_function.__name__, accepts=accepts, call=call)
