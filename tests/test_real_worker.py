"""The app as the Functions host runs it on Python 3.13: through Microsoft's worker library
`azure-functions-runtime`, driven with the host's own protobuf messages.

The messages are generated at test time (grpcio-tools) from the published language-worker
`.proto` files vendored in tests/contracts/worker-protobuf. The worker indexes `function_app.py`
and invokes each function with the payloads the host sends: an Event Grid event as JSON, a queue
message with its dequeue count in the trigger metadata, a timer's schedule status.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import azure_functions_runtime as worker
import pytest
from grpc_tools import protoc

from localdev.azurite import Azurite
from localdev.queue_host import queue_client
from localdev.simulators import Simulators
from responder.composition import close_services
from responder.decisions.model import VmRef
from tests.conftest import load_event

REPO = Path(__file__).resolve().parent.parent
PROTO = Path(__file__).parent / "contracts" / "worker-protobuf"
GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"
WIN11 = VmRef("6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d", "rg-avd-prod", "vm-win11-01").resource_id
WIN11_ENTRA = "e0b10001-1111-4222-8333-000000000001"


@pytest.fixture(scope="session")
def protos(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The host's messages, generated from the published .proto files."""
    out = tmp_path_factory.mktemp("worker-protos")
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/duration.proto
    files = ["FunctionRpc.proto", "identity/ClaimsIdentityRpc.proto", "shared/NullableTypes.proto"]
    assert protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))
    generated = importlib.import_module("FunctionRpc_pb2")
    return types.SimpleNamespace(**{name: getattr(generated, name) for name in dir(generated) if name[0] != "_"})


def message(protos: Any, properties: dict[str, Any] | None = None, **fields: Any) -> Any:
    """A request as the proxy worker hands it to the library: the streaming message and its properties."""
    return types.SimpleNamespace(
        request=protos.StreamingMessage(**fields), properties={"protos": protos, **(properties or {})}
    )


@pytest.fixture(scope="session")
def indexed(protos: Any) -> dict[str, Any]:
    """The worker's init (which indexes the app, as in Azure) and its function metadata, by name."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the host starts the worker in the app's directory
    # A worker starts in a new process: the app it indexes is a fresh import, not one another test indexed.
    sys.modules.pop("function_app", None)

    async def start() -> dict[str, Any]:
        init = protos.WorkerInitRequest(host_version="4.1040.0", function_app_directory=str(REPO))
        response = await worker.worker_init_request(message(protos, {"host": "127.0.0.1"}, worker_init_request=init))
        assert response.result.status == protos.StatusResult.Success, response.result.exception.message
        metadata = protos.FunctionsMetadataRequest(function_app_directory=str(REPO))
        listed = await worker.functions_metadata_request(message(protos, functions_metadata_request=metadata))
        return {function.name: function for function in listed.function_metadata_results}

    return asyncio.run(start())


async def invoke(protos: Any, function: Any, name: str, data: Any, metadata: dict[str, Any] | None = None) -> Any:
    load = protos.FunctionLoadRequest(function_id=function.function_id, metadata=function)
    await worker.function_load_request(message(protos, function_load_request=load))
    request = protos.InvocationRequest(
        invocation_id=str(uuid.uuid4()),
        function_id=function.function_id,
        input_data=[protos.ParameterBinding(name=name, data=data)],
        trigger_metadata=metadata or {},
    )
    return await worker.invocation_request(message(protos, invocation_request=request))


def test_the_worker_indexes_every_function_with_its_trigger(protos: Any, indexed: dict[str, Any]) -> None:
    triggers = {
        name: {key: binding.type for key, binding in function.bindings.items()} for name, function in indexed.items()
    }

    assert triggers == {
        "on_vm_created": {"event": "eventGridTrigger"},
        "on_vm_power_changed": {"event": "eventGridTrigger"},
        "on_vm_deleted": {"event": "eventGridTrigger"},
        "on_cleanup_message": {"message": "queueTrigger"},
        "on_device_check_message": {"message": "queueTrigger"},
        "on_reconcile_timer": {"timer": "timerTrigger"},
        "on_queue_watch_timer": {"timer": "timerTrigger"},
    }
    assert all(
        b.direction == protos.BindingInfo.Direction.Value("in") for f in indexed.values() for b in f.bindings.values()
    )


@pytest.fixture
async def enforcing(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, table_name: str) -> AsyncIterator[None]:
    for name, value in {
        "RESPONDER_MODE": "enforce",
        "RESPONDER_SUPPRESSION_GROUP_ID": GROUP,
        "RESPONDER_CLEANUP_QUEUE": f"cleanup-{table_name[-12:]}",
        "RESPONDER_AUDIT_TABLE": f"audit{table_name[-12:]}",
    }.items():
        monkeypatch.setenv(name, value)
    yield
    await close_services()


async def test_the_worker_invokes_the_power_handler_with_an_event_grid_event(
    protos: Any, indexed: dict[str, Any], enforcing: None, simulators: Simulators
) -> None:
    simulators.world.set_power_state(WIN11, "deallocated")
    event = protos.TypedData(json=json.dumps(load_event("eventgrid-vm-deallocate.json")))

    response = await invoke(protos, indexed["on_vm_power_changed"], "event", event)

    assert response.result.status == protos.StatusResult.Success, response.result.exception.message
    assert simulators.tenant.members_of(GROUP) == [WIN11_ENTRA]


async def test_the_worker_hands_the_queue_message_and_its_dequeue_count_to_the_cleanup_worker(
    protos: Any, indexed: dict[str, Any], enforcing: None, azurite: Azurite
) -> None:
    body = protos.TypedData(string='{"schema": 99}')
    metadata = {"DequeueCount": protos.TypedData(json="1"), "Id": protos.TypedData(string="m-1")}

    response = await invoke(protos, indexed["on_cleanup_message"], "message", body, metadata)

    assert response.result.status == protos.StatusResult.Success, response.result.exception.message
    async with queue_client(azurite.connection_string, f"{os.environ['RESPONDER_CLEANUP_QUEUE']}-poison") as poison:
        (parked,) = [json.loads(item.content) async for item in poison.receive_messages()]
    assert "unknown schema version 99" in parked["reason"]


async def test_the_worker_invokes_the_reconciliation_timer(
    protos: Any, indexed: dict[str, Any], app_env: dict[str, str]
) -> None:
    timer = protos.TypedData(json=json.dumps({"Schedule": {"AdjustForDST": True}, "IsPastDue": False}))

    response = await invoke(protos, indexed["on_reconcile_timer"], "timer", timer)

    assert response.result.status == protos.StatusResult.Success, response.result.exception.message
    await close_services()
