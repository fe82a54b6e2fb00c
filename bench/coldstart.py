"""Cold start as users feel it: process start → first event handled, per function, per Python.

For each function (created, power, deleted, cleanup worker, reconcile) and each interpreter,
fresh processes alternate between the responder (`bench/first_event.py`: index the app, handle
one event) and the reference (`bench/reference_handler.py`: `azure.functions`, `azure-identity`
and `aiohttp` replaying the very HTTP calls that the responder's run just made). Every run starts
from the same state: the simulators' tenant reset from the seed, fresh tables and queue. The
median of the runs is reported, and the ratio against the target (≤ 1.5x).

Storage calls are recorded by a reverse proxy in front of Azurite that both sides go through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import yarl
from aiohttp import web

from localdev.arm_sim import ArmWorld
from localdev.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, free_port
from localdev.graph_sim import GraphTenant
from localdev.sim_http import HOST, SimulatorServer
from localdev.simulators import Simulators

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "tests" / "events"
SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-avd-prod/providers/Microsoft.Compute/virtualMachines/vm-win11-01"
TARGET = 1.5
FUNCTIONS = {  # function → (label, sample event or None)
    "on_vm_created": ("created", "eventgrid-vm-write.json"),
    "on_vm_power_changed": ("power (deallocated)", "eventgrid-vm-deallocate.json"),
    "on_vm_deleted": ("deleted", "eventgrid-vm-delete.json"),
    "on_cleanup_message": ("cleanup worker", None),
    "on_reconcile_timer": ("reconcile", None),
}
UNSIGNED = {"authorization", "x-ms-date", "date", "host", "content-length", "user-agent", "connection"}
UNSIGNED |= {"x-ms-client-request-id", "accept-encoding"}


@dataclass
class Call:
    """One HTTP call the responder made, in the form the reference replays it."""

    received: float
    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    scope: str | None  # the token's scope; None: a storage call (account SAS)


@dataclass
class RecordingProxy:
    """A reverse proxy in front of one Azurite service that records every call it forwards."""

    target: str
    calls: list[Call] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: value for name, value in request.headers.items() if name.lower() not in UNSIGNED}
        recorded = Call(time.monotonic(), request.method, request.raw_path, headers, body.decode() or None, None)
        self.calls.append(recorded)
        forwarded = {name: value for name, value in request.headers.items() if name.lower() != "host"}
        async with self._session.request(
            request.method,
            yarl.URL(self.target + request.raw_path, encoded=True),
            headers=forwarded,
            data=body or None,
            skip_auto_headers={"Content-Type", "User-Agent", "Accept", "Accept-Encoding"},
        ) as answer:
            payload = await answer.read()
            kept = {
                name: value
                for name, value in answer.headers.items()
                if name.lower() not in {"content-length", "transfer-encoding", "content-encoding", "connection"}
            }
            return web.Response(status=answer.status, body=payload, headers=kept)

    @contextlib.contextmanager
    def serving(self) -> Iterator[RecordingProxy]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> web.AppRunner:
            self._session = aiohttp.ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=64 * 2**20)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, HOST, self.port).start()
            return runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._runner = loop.run_until_complete(start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="storage-proxy", daemon=True)
        thread.start()
        ready.wait()
        try:
            yield self
        finally:

            async def stop() -> None:
                await self._runner.cleanup()
                await self._session.close()

            asyncio.run_coroutine_threadsafe(stop(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()


def account_sas(service: str) -> str:
    """An account SAS for one Azurite service, made with the storage SDKs (outside the timing)."""
    expiry = datetime.now(UTC) + timedelta(hours=2)
    if service == "table":
        from azure.core.credentials import AzureNamedKeyCredential
        from azure.data.tables import AccountSasPermissions, ResourceTypes, generate_account_sas

        return generate_account_sas(
            AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
            resource_types=ResourceTypes(service=True, container=True, object=True),
            permission=AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, update=True),
            expiry=expiry,
        )
    from azure.storage.queue import AccountSasPermissions as QueuePermissions
    from azure.storage.queue import ResourceTypes as QueueResources
    from azure.storage.queue import generate_account_sas as queue_sas

    return queue_sas(
        ACCOUNT,
        ACCOUNT_KEY,
        resource_types=QueueResources(service=True, container=True, object=True),
        permission=QueuePermissions(read=True, write=True, delete=True, list=True, add=True, update=True, process=True),
        expiry=expiry,
    )


def simulator_calls(server: SimulatorServer, scope: str) -> list[Call]:
    calls = []
    for request in server.requests:
        url = server.url + quote(request.path)
        if request.query:
            url += "?" + urlencode(request.query)
        headers = {"Accept": "application/json"}
        body = None
        if request.body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(request.body)
        calls.append(Call(request.received, request.method, url, headers, body, scope))
    return calls


def storage_calls(proxy: RecordingProxy, sas: str) -> list[Call]:
    return [
        Call(
            call.received,
            call.method,
            proxy.url + call.url + ("&" if "?" in call.url else "?") + sas,
            call.headers,
            call.body,
            None,
        )
        for call in proxy.calls
    ]


@dataclass
class Bench:
    simulators: Simulators
    azurite: Azurite
    seed: dict[str, Any]
    settings: dict[str, str]
    tables: RecordingProxy
    queues: RecordingProxy
    folder: Path
    table_sas: str
    queue_sas: str

    def fresh_state(self) -> dict[str, str]:
        """The seed's tenant and VMs again, and storage no run has used."""
        tenant, world = GraphTenant.from_seed(self.seed), ArmWorld.from_seed(self.seed)
        self.simulators.graph_router.tenant = self.simulators.tenant = tenant
        self.simulators.arm_router.world = self.simulators.world = world
        suffix = uuid.uuid4().hex[:10]
        return {
            **self.settings,
            "AzureWebJobsStorage": (
                f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint=http://{HOST}:{self.azurite.blob_port}/{ACCOUNT};"
                f"QueueEndpoint={self.queues.url}/{ACCOUNT};TableEndpoint={self.tables.url}/{ACCOUNT};"
            ),
            "RESPONDER_LEDGER_TABLE": f"cold{suffix}",
            "RESPONDER_AUDIT_TABLE": f"coldaudit{suffix}",
            "RESPONDER_CLEANUP_QUEUE": f"cold-{suffix}",
        }

    def forget_calls(self) -> None:
        for server in (self.simulators.graph, self.simulators.arm, self.simulators.topic):
            server.reset_calls()
        self.tables.calls.clear()
        self.queues.calls.clear()

    def recorded_calls(self) -> list[Call]:
        cloud = self.simulators.cloud
        calls = simulator_calls(self.simulators.graph, cloud.graph_scope)
        calls += simulator_calls(self.simulators.arm, cloud.arm_scope)
        calls += simulator_calls(self.simulators.topic, "https://eventgrid.azure.net/.default")
        calls += storage_calls(self.tables, self.table_sas) + storage_calls(self.queues, self.queue_sas)
        return sorted(calls, key=lambda call: call.received)


def timed(command: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning `command` to its "handled" line (the process's exit is not counted)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    elapsed = time.perf_counter() - started
    _, errors = process.communicate()
    if line.strip() != "handled":
        raise RuntimeError(f"{command[1:]} did not handle its event: {errors[-2000:]}")
    return elapsed


def prepare(bench: Bench, python: str, function_name: str, env: dict[str, str]) -> Path:
    """Put the world where this function's first event finds it; return the host's payload."""
    payload: Any = None
    world = bench.simulators.world
    if function_name == "on_vm_power_changed":
        world.set_power_state(VM, "deallocated")
    if function_name in ("on_vm_deleted", "on_cleanup_message"):
        world.delete_vm(VM)
    if function_name == "on_cleanup_message":
        deletion = bench.folder / "deletion.json"
        deletion.write_text(json.dumps(sample("eventgrid-vm-delete.json")))
        setup = [python, "bench/first_event.py", "on_vm_deleted", str(deletion)]
        subprocess.run(setup, cwd=REPO, env=env, check=True, capture_output=True)
        from azure.storage.queue import QueueClient

        queue = QueueClient.from_connection_string(
            bench.azurite.connection_string, env["RESPONDER_CLEANUP_QUEUE"], message_encode_policy=None
        )
        with queue:
            message = next(iter(queue.receive_messages(max_messages=1)))
            queue.delete_message(message)
        payload = message.content
    elif function_name in FUNCTIONS and FUNCTIONS[function_name][1]:
        payload = sample(FUNCTIONS[function_name][1] or "")
    path = bench.folder / f"{function_name}.json"
    path.write_text(json.dumps(payload))
    return path


def sample(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EVENTS / name).read_text())[0]
    raw["id"] = str(uuid.uuid4())
    return raw


def first_event_pair(bench: Bench, python: str, function_name: str) -> tuple[float, float]:
    """One responder run and one reference run of the same calls, each from a fresh state."""
    env = {**os.environ, **bench.fresh_state()}
    payload = prepare(bench, python, function_name, env)
    bench.forget_calls()
    responder = timed([python, "bench/first_event.py", function_name, str(payload)], env)
    calls = bench.recorded_calls()
    replay = bench.folder / "calls.json"
    replay.write_text(json.dumps([call.__dict__ for call in calls]))
    env = {**os.environ, **bench.fresh_state()}
    prepare(bench, python, function_name, env)
    reference = timed([python, "bench/reference_handler.py", str(replay)], env)
    return responder, reference


@dataclass
class ColdStart:
    python: str  # "3.13"
    function: str
    responder: float
    reference: float

    @property
    def ratio(self) -> float:
        return self.responder / self.reference


def measure(bench: Bench, pythons: dict[str, str], runs: int) -> list[ColdStart]:
    results = []
    for version, python in pythons.items():
        for function_name in FUNCTIONS:
            first_event_pair(bench, python, function_name)  # compiles the .pyc files; not counted
            pairs = [first_event_pair(bench, python, function_name) for _ in range(runs)]
            results.append(
                ColdStart(
                    version,
                    function_name,
                    statistics.median(pair[0] for pair in pairs),
                    statistics.median(pair[1] for pair in pairs),
                )
            )
    return results


def interpreters(wanted: list[str]) -> dict[str, str]:
    """This venv's Python, and a benchmark venv per other version (built once, from requirements.txt;
    `azure-functions` 2.x needs 3.13, so older Pythons get its 1.x line)."""
    found = {f"{sys.version_info.major}.{sys.version_info.minor}": sys.executable}
    for version in wanted:
        if version in found:
            continue
        venv = REPO / ".bench" / f"venv-{version}"
        python = venv / "bin" / "python"
        if not python.exists():
            base = _pyenv_python(version)
            if base is None:
                print(f"cold start: no Python {version} found (pyenv install {version}); skipped", file=sys.stderr)
                continue
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
            requirements = venv / "requirements.txt"
            lines = (REPO / "requirements.txt").read_text().splitlines()
            requirements.write_text(
                "\n".join("azure-functions<2" if line.startswith("azure-functions==") else line for line in lines)
            )
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
                check=True,
                capture_output=True,
            )
        found[version] = str(python)
    return found


def _pyenv_python(version: str) -> str | None:
    with contextlib.suppress(FileNotFoundError, subprocess.CalledProcessError):
        pyenv = ["pyenv", "root"]  # wherever the user's PATH has it
        root = subprocess.run(pyenv, capture_output=True, text=True, check=True).stdout.strip()
        candidates = sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}"))
        if candidates:
            return str(candidates[-1])
    return None


@contextlib.contextmanager
def cold_start_bench(
    simulators: Simulators, azurite: Azurite, seed: dict[str, Any], settings: dict[str, str]
) -> Iterator[Bench]:
    tables = RecordingProxy(f"http://{HOST}:{azurite.table_port}")
    queues = RecordingProxy(f"http://{HOST}:{azurite.queue_port}")
    with tables.serving(), queues.serving(), tempfile.TemporaryDirectory(prefix="coldstart-") as folder:
        sas = account_sas("table"), account_sas("queue")
        yield Bench(simulators, azurite, seed, settings, tables, queues, Path(folder), *sas)
