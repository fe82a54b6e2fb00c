"""The clients look for proxy variables and a netrc file only where one exists, and honour them then."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from localdev.simulators import Simulators
from responder.adapters._environment import environment_matters
from responder.decisions.facts import VmFacts
from responder.decisions.model import VmRef
from responder.ports import Services

SUB = "6b1c2e8a-3f4d-4c1a-9e2b-7d5f0a1b2c3d"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "WS_PROXY", "WSS_PROXY", "NETRC")


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No proxy variable in any case, and a home directory without a netrc file."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    environment_matters.cache_clear()
    yield tmp_path
    environment_matters.cache_clear()


def test_without_proxy_variables_or_a_netrc_file_the_environment_is_not_consulted(bare_environment: Path) -> None:
    assert environment_matters() is False


def test_a_proxy_variable_in_lower_case_is_consulted(bare_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")

    assert environment_matters() is True


def test_a_netrc_file_in_the_home_directory_is_consulted(bare_environment: Path) -> None:
    (bare_environment / ".netrc").write_text("machine 127.0.0.1 login someone password nothing\n")

    assert environment_matters() is True


class ConnectProxy:
    """An HTTPS proxy on loopback (CONNECT tunnels to loopback only): which hosts went through it."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []

    async def handle(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        head = await client_in.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, port = target.rsplit(":", 1)
        if method != "CONNECT" or host != "127.0.0.1":
            client_out.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client_out.close()
            return
        self.tunnels.append(target)
        server_in, server_out = await asyncio.open_connection(host, int(port))
        client_out.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(_pipe(client_in, server_out), _pipe(server_in, client_out))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


@pytest.fixture
async def https_proxy(bare_environment: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    environment_matters.cache_clear()
    yield proxy
    server.close()


async def test_arm_reads_go_through_the_proxy_https_proxy_names(
    https_proxy: ConnectProxy, services: Services, simulators: Simulators
) -> None:
    facts = await services.compute.get_vm(VmRef(SUB, "rg-avd-prod", "vm-win11-01"))

    assert isinstance(facts, VmFacts)
    arm_host = simulators.arm.url.removeprefix("https://").split("/")[0]
    assert arm_host in https_proxy.tunnels
