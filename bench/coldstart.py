"""Cold start as users feel it: process start → first event handled, per function, per Python.

For each function (created, power, deleted, cleanup worker, device check, reconcile) and each
interpreter, fresh processes alternate between the responder (`bench/first_event.py`: index the
app, handle one event) and the reference (`bench/reference_handler.py`: `azure.functions`,
`azure-identity` and `aiohttp` replaying the very HTTP calls that the responder's run just made).
Every run starts from the same state: the simulators' tenant reset from the seed, fresh tables and
queues. Both sides run from a copy of the app as shipped, whose first-party sources every process
compiles (the package holds no bytecode), in a venv with `requirements.txt` alone (`interpreters`).
The queue-triggered functions get the message the product itself queued: the cleanup worker the
one a deletion event queues, the device check the one a creation event queues (each made by a
setup run of that event, not timed), Base64-decoded as the host hands it over. Reconciliation
walks the sample subscription, as Bicep's `RESPONDER_WATCHED_SUBSCRIPTIONS` has it walk the estate.
The median of the runs is reported, the ratio of the medians against the target (≤ 1.5x), and the
spread: each side's min-max and the ratios pair by pair (min-max); and the ratio of CPU seconds,
which a machine shared with other work moves less.

Storage calls are recorded by a reverse proxy in front of Azurite that both sides go through.

    .venv/bin/python -m bench.coldstart [--runs 7] [--pythons 3.13,3.11] [--functions on_vm_created,...]
        [--bytecode] [--dev-venv]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import ssl
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

from bench.report import Row, table
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
SUPPRESSION_GROUP = "5a9e0000-7c7c-4d4d-9e9e-00000000a11c"  # the sample tenant's, as bench.run sets it
FUNCTIONS = {  # function → (label, sample event or None)
    "on_vm_created": ("created", "eventgrid-vm-write.json"),
    "on_vm_power_changed": ("power (deallocated)", "eventgrid-vm-deallocate.json"),
    "on_vm_deleted": ("deleted", "eventgrid-vm-delete.json"),
    "on_cleanup_message": ("cleanup worker", None),
    "on_device_check_message": ("device check", None),
    "on_reconcile_timer": ("reconcile", None),
}
QUEUED_BY = {  # queue-triggered function → (the event function that queues its message, its sample, the queue setting)
    "on_cleanup_message": ("on_vm_deleted", "eventgrid-vm-delete.json", "RESPONDER_CLEANUP_QUEUE"),
    "on_device_check_message": ("on_vm_created", "eventgrid-vm-write.json", "RESPONDER_DEVICE_CHECK_QUEUE"),
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
    bytecode: bool = False  # False: as shipped, the first-party sources compiled by every process

    @property
    def app(self) -> Path:
        """The copy of the app the processes run (see `shipped_copy`)."""
        return self.folder / "app"

    def environment(self) -> dict[str, str]:
        """A process's environment: this one's, the settings of a fresh state, the bytecode rule, and TLS
        as in Azure: no `RESPONDER_CA_FILE` (with a CA file azure-core builds an SSL context for every
        request, and aiohttp can't reuse a connection across contexts: a TLS handshake per ARM or Event
        Grid call, which Azure never pays) but a trust store that holds the simulators' CA beside the
        system's (`SSL_CERT_FILE`, which OpenSSL's default paths read), for both sides alike."""
        env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        if not self.bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        env = {**env, **self.fresh_state(), "SSL_CERT_FILE": str(self.trust_store)}
        env.pop("RESPONDER_CA_FILE", None)
        return env

    @property
    def trust_store(self) -> Path:
        """The system's CA bundle with the simulators' CA appended (written once)."""
        bundle = self.folder / "trust-store.pem"
        if not bundle.exists():
            system = Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile)
            text = system.read_text() if system.is_file() else ""
            bundle.write_text(text.rstrip("\n") + "\n" + self.simulators.ca_file.read_text())
        return bundle

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
            "RESPONDER_DEVICE_CHECK_QUEUE": f"coldcheck-{suffix}",
            # As Bicep sets it: reconciliation walks the estate's VMs (none without it), and the
            # cleanup worker looks there for a VM a record's anchor may have moved to.
            "RESPONDER_WATCHED_SUBSCRIPTIONS": SUB,
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


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Seconds from spawning `command` to its "handled" line (the process's exit is not counted), and the
    CPU seconds (user + system) the process used: a figure that a loaded machine moves less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline() if process.stdout else ""
    elapsed = time.perf_counter() - started
    _, errors = process.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # this process alone was reaped in between
    if line.strip() != "handled":
        raise RuntimeError(f"{command[1:]} did not handle its event: {errors[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare(bench: Bench, python: str, function_name: str, env: dict[str, str]) -> Path:
    """Put the world where this function's first event finds it; return the host's payload."""
    payload: Any = None
    world = bench.simulators.world
    if function_name == "on_vm_power_changed":
        world.set_power_state(VM, "deallocated")
    if function_name in ("on_vm_deleted", "on_cleanup_message"):
        world.delete_vm(VM)
    if function_name in QUEUED_BY:
        payload = queued_message(bench, python, function_name, env)
    elif function_name in FUNCTIONS and FUNCTIONS[function_name][1]:
        payload = sample(FUNCTIONS[function_name][1] or "")
    path = bench.folder / f"{function_name}.json"
    path.write_text(json.dumps(payload))
    return path


def queued_message(bench: Bench, python: str, function_name: str, env: dict[str, str]) -> str:
    """The message the product queues for this queue-triggered function: a setup run of the event that
    queues it (a deletion its cleanup, a creation its device check), taken off the queue and decoded as
    the host decodes it (the product sends Base64). The device check's first delay is cut to a second
    for the setup run alone, so the message can be taken at once."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy

    event_function, event_sample, queue_setting = QUEUED_BY[function_name]
    event = bench.folder / "setup-event.json"
    event.write_text(json.dumps(sample(event_sample)))
    setup = [python, "bench/first_event.py", event_function, str(event)]
    setup_env = {**env, "RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS": "1"}
    subprocess.run(setup, cwd=bench.app, env=setup_env, check=True, capture_output=True)
    queue = QueueClient.from_connection_string(
        bench.azurite.connection_string, env[queue_setting], message_decode_policy=TextBase64DecodePolicy()
    )
    deadline = time.monotonic() + 30
    with queue:
        while True:
            message = next(iter(queue.receive_messages(max_messages=1)), None)
            if message is not None:
                queue.delete_message(message)
                return str(message.content)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{event_function} queued nothing on {env[queue_setting]}")
            time.sleep(0.2)


def sample(name: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EVENTS / name).read_text())[0]
    raw["id"] = str(uuid.uuid4())
    return raw


def first_event_pair(bench: Bench, python: str, function_name: str) -> Pair:
    """One responder run and one reference run of the same calls, each from a fresh state."""
    env = bench.environment()
    payload = prepare(bench, python, function_name, env)
    bench.forget_calls()
    responder = timed([python, "bench/first_event.py", function_name, str(payload)], env, bench.app)
    calls = bench.recorded_calls()
    replay = bench.folder / "calls.json"
    replay.write_text(json.dumps([call.__dict__ for call in calls]))
    env = bench.environment()
    prepare(bench, python, function_name, env)
    reference = timed([python, "bench/reference_handler.py", str(replay)], env, bench.app)
    return Pair(*responder, *reference, len(calls))


@dataclass(frozen=True)
class Pair:
    """One responder run and the reference run beside it: wall and CPU seconds each."""

    responder: float
    responder_cpu: float
    reference: float
    reference_cpu: float
    calls: int  # HTTP calls of the responder's first event (what the reference replayed)


@dataclass
class ColdStart:
    python: str  # "3.13"
    function: str
    pairs: list[Pair]

    @property
    def responder(self) -> float:
        return statistics.median(pair.responder for pair in self.pairs)

    @property
    def reference(self) -> float:
        return statistics.median(pair.reference for pair in self.pairs)

    @property
    def ratio(self) -> float:
        """The medians' ratio: the figure held against the target."""
        return self.responder / self.reference

    @property
    def ratios(self) -> list[float]:
        """Pair by pair: each responder run against the reference run made beside it."""
        return sorted(pair.responder / pair.reference for pair in self.pairs)

    @property
    def cpu_ratio(self) -> float:
        """The medians' ratio of CPU seconds, a cross-check when other work shares the machine."""
        responder = statistics.median(pair.responder_cpu for pair in self.pairs)
        return responder / statistics.median(pair.reference_cpu for pair in self.pairs)

    @property
    def calls(self) -> int:
        return self.pairs[-1].calls

    def spread(self) -> str:
        """Each side's min-max and the pairwise ratios' min-max, as bench/RESULTS.md quotes them."""
        responders = [pair.responder * 1000 for pair in self.pairs]
        references = [pair.reference * 1000 for pair in self.pairs]
        ratios = self.ratios
        return (
            f"{min(responders):.0f}-{max(responders):.0f} ms vs {min(references):.0f}-{max(references):.0f} ms, "
            f"pairs {ratios[0]:.2f}-{ratios[-1]:.2f}x"
        )


def measure(bench: Bench, pythons: dict[str, str], runs: int, functions: list[str] | None = None) -> list[ColdStart]:
    results = []
    for version, python in pythons.items():
        for function_name in functions or FUNCTIONS:
            first_event_pair(bench, python, function_name)  # warm-up, not counted (writes bytecode if kept)
            pairs = [first_event_pair(bench, python, function_name) for _ in range(runs)]
            results.append(ColdStart(version, function_name, pairs))
    return results


def rows(results: list[ColdStart]) -> list[Row]:
    """One benchmark row per function and Python: the medians, their ratio against the target, the spread."""
    return [
        Row(
            f"first event, Python {result.python}: {FUNCTIONS[result.function][0]}",
            f"{result.responder * 1000:.0f} ms vs {result.reference * 1000:.0f} ms: {result.ratio:.2f}x "
            f"(median of {len(result.pairs)}; {result.spread()}; CPU {result.cpu_ratio:.2f}x; {result.calls} calls)",
            f"<= {TARGET}x the reference",
            "ok" if result.ratio <= TARGET else "MISSED",
        )
        for result in results
    ]


def interpreters(wanted: list[str], deployed: bool = True) -> dict[str, str]:
    """A benchmark venv per version with what is deployed, `requirements.txt` alone (built once, rebuilt
    when the requirements change; `azure-functions` 2.x needs 3.13, so older Pythons get its 1.x line).
    Not the development venv: its extras change what the first event imports (httpx loads its command
    line, rich, click and pygments, when they are installed; import-linter installs them). `deployed=False`:
    this venv's own Python for its version, as before."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = {} if deployed else {running: sys.executable}
    for version in wanted:
        if version in found:
            continue
        venv = REPO / ".bench" / f"venv-{version}"
        python = venv / "bin" / "python"
        requirements = venv / "requirements.txt"
        lines = (REPO / "requirements.txt").read_text().splitlines()
        if tuple(int(part) for part in version.split(".")) < (3, 13):
            lines = ["azure-functions<2" if line.startswith("azure-functions==") else line for line in lines]
        wanted_text = "\n".join(lines)
        if not python.exists() or not requirements.exists() or requirements.read_text() != wanted_text:
            base = getattr(sys, "_base_executable", None) if version == running else _pyenv_python(version)
            if base is None:
                print(f"cold start: no Python {version} found (pyenv install {version}); skipped", file=sys.stderr)
                continue
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
            requirements.write_text(wanted_text)
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
    simulators: Simulators,
    azurite: Azurite,
    seed: dict[str, Any],
    settings: dict[str, str],
    *,
    bytecode: bool = False,
    source: Path = REPO,
) -> Iterator[Bench]:
    """`bytecode`: False (as shipped) every process compiles the first-party sources it imports, as in
    Azure, where the package holds no bytecode (`.funcignore`); True: the warm-up run writes it.
    `source`: where the app's files are copied from (another commit's, unpacked, to compare)."""
    tables = RecordingProxy(f"http://{HOST}:{azurite.table_port}")
    queues = RecordingProxy(f"http://{HOST}:{azurite.queue_port}")
    with tables.serving(), queues.serving(), tempfile.TemporaryDirectory(prefix="coldstart-") as folder:
        sas = account_sas("table"), account_sas("queue")
        bench = Bench(simulators, azurite, seed, settings, tables, queues, Path(folder), *sas, bytecode=bytecode)
        shipped_copy(bench.app, source)
        yield bench


def shipped_copy(app: Path, source: Path = REPO) -> None:
    """The app's first-party files as the package ships them (no `__pycache__`), and the two bench scripts:
    both sides run from here, so neither finds bytecode another process left in the working tree, and
    edits made there while the bench runs don't reach half of its runs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("handlers", "responder"):
        shutil.copytree(source / folder, app / folder, ignore=ignore)
    (app / "bench").mkdir()
    for name in ("__init__.py", "first_event.py", "reference_handler.py"):
        shutil.copyfile(REPO / "bench" / name, app / "bench" / name)
    for name in ("function_app.py", "host.json"):
        shutil.copyfile(source / name, app / name)


def main() -> None:
    """The cold-start rows alone, against their own emulators (the rest of `bench.run` skipped)."""
    import argparse
    import logging

    from localdev.azurite import running_azurite
    from localdev.simulators import load_seed, running_simulators

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh process pairs per function and Python")
    parser.add_argument("--pythons", default="3.13", help="interpreters, comma-separated (3.13,3.11)")
    parser.add_argument("--functions", default=",".join(FUNCTIONS), help="functions, comma-separated")
    parser.add_argument(
        "--app",
        type=Path,
        default=REPO,
        help="copy the app from here (e.g. `git archive <commit> function_app.py host.json handlers responder`)",
    )
    parser.add_argument(
        "--bytecode", action="store_true", help="first-party bytecode written by the warm-up (default: as shipped)"
    )
    parser.add_argument(
        "--dev-venv", action="store_true", help="this venv's Python for its version, not requirements.txt alone"
    )
    args = parser.parse_args()
    functions = args.functions.split(",")
    unknown = set(functions) - set(FUNCTIONS)
    if unknown:
        parser.error(f"unknown function(s): {', '.join(sorted(unknown))}; known: {', '.join(FUNCTIONS)}")
    logging.basicConfig(level=logging.CRITICAL)
    seed = load_seed("sample")
    with running_azurite() as azurite, running_simulators(seed) as simulators:
        settings = {
            **simulators.settings,
            "AzureWebJobsStorage": azurite.connection_string,
            "RESPONDER_CLEANUP_DELAY_SECONDS": "0",
            "RESPONDER_MODE": "enforce",
            "RESPONDER_SUPPRESSION_GROUP_ID": SUPPRESSION_GROUP,
        }
        with cold_start_bench(simulators, azurite, seed, settings, bytecode=args.bytecode, source=args.app) as bench:
            pythons = interpreters(args.pythons.split(","), deployed=not args.dev_venv)
            results = measure(bench, pythons, args.runs, functions)
    print(table(rows(results)))


if __name__ == "__main__":
    main()
