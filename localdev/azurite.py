"""Start Azurite (the Azure Storage emulator, from npm) on free loopback ports.

Used by the test session and by the local run. Always on 127.0.0.1, in memory,
with telemetry off, and stopped when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: it opens nothing but
# a local emulator. Real storage is reached with a managed identity only.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
STARTUP_SECONDS = 30.0


@dataclass(frozen=True)
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{HOST}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint=http://{HOST}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint=http://{HOST}:{self.table_port}/{ACCOUNT};"
        )


def azurite_executable() -> Path:
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return local
    found = shutil.which("azurite")
    if found:
        return Path(found)
    raise RuntimeError("Azurite is not installed: run scripts/bootstrap (npm ci) first")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_azurite() -> Iterator[Azurite]:
    """Azurite on three free loopback ports for the life of the context."""
    ports = Azurite(free_port(), free_port(), free_port())
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        log_path = Path(workdir) / "azurite.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(azurite_executable()),
                    "--blobHost",
                    HOST,
                    "--blobPort",
                    str(ports.blob_port),
                    "--queueHost",
                    HOST,
                    "--queuePort",
                    str(ports.queue_port),
                    "--tableHost",
                    HOST,
                    "--tablePort",
                    str(ports.table_port),
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                    "--skipApiVersionCheck",
                    "--silent",
                    "--loose",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,  # so stopping it also stops its child processes
            )
            try:
                _wait_until_listening(process, ports, log_path)
                yield ports
            finally:
                _stop(process)


def _wait_until_listening(process: subprocess.Popen[bytes], ports: Azurite, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    pending = {ports.blob_port, ports.queue_port, ports.table_port}
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not listen within {STARTUP_SECONDS:.0f}s")
        for port in list(pending):
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                pending.discard(port)
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
