"""The HTTP plumbing shared by the local Graph and ARM simulators.

Each simulator is a small threaded HTTPS server on 127.0.0.1 with a throw-away
CA (trustme): azure-core and kiota refuse to send bearer tokens over plain
HTTP, and product code is not weakened to make local runs work (design §10).
Requests must carry the token that the local managed-identity endpoint issued,
and come from a loopback address. Every request is recorded (for call counts
and for asserting exactly which writes happened), and a throttle answers a
share of requests with 429 + Retry-After or 503, deterministically.

The API itself (`SimulatedApi`: routing, records, throttle, injected faults) is
apart from the HTTPS server that serves it, so the same API can also be reached
in-process through `InProcessTransport`, an httpx transport: the product's real
SDK clients then run thousands of generated scenarios without sockets or TLS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import trustme

HOST = "127.0.0.1"
MAX_BATCH = 20  # Graph's limit per $batch
POLL_SECONDS = 0.02  # how soon a stopped server notices (the default 0.5 s slows every test)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None
    received: float = field(default_factory=time.monotonic, compare=False)  # for replaying calls in order


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: Mapping[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str) -> Response:
    """The error body both Graph and ARM use: {"error": {"code", "message"}}."""
    return Response(status, {"error": {"code": code, "message": message}})


@dataclass
class Throttle:
    """Answer every `every`-th authenticated request with `status` instead of serving it.

    Deterministic, so a test knows a throttled run really was throttled; the
    refused request changes nothing, as with the real services.
    """

    every: int = 0  # 0: off
    per_window: int = 0  # 0: off; else at most this many requests per `window_seconds`, like Graph's limits
    window_seconds: float = 20.0
    status: int = HTTPStatus.TOO_MANY_REQUESTS
    retry_after_seconds: float = 1  # Graph's SDK reads whole seconds only; ARM's reads fractions
    _seen: int = 0
    _window_start: float = 0.0
    _window_count: int = 0
    refused: int = 0

    def should_refuse(self) -> bool:
        if self.per_window > 0:
            return self._over_window()
        if self.every <= 0:
            return False
        self._seen += 1
        if self._seen % self.every == 0:
            self.refused += 1
            return True
        return False

    def _over_window(self) -> bool:
        now = time.monotonic()
        if now >= self._window_start + self.window_seconds:
            self._window_start, self._window_count = now, 0
        if self._window_count < self.per_window:
            self._window_count += 1
            return False
        self.refused += 1
        # Graph sends whole seconds; the SDK waits that long before it tries again.
        self.retry_after_seconds = max(1, math.ceil(self._window_start + self.window_seconds - now))
        return True

    def response(self) -> Response:
        if self.status == HTTPStatus.TOO_MANY_REQUESTS:
            return Response(
                self.status,
                {"error": {"code": "TooManyRequests", "message": "throttled by the local simulator"}},
                {"Retry-After": f"{self.retry_after_seconds:g}"},
            )
        return error(self.status, "ServiceUnavailable", "the local simulator is having a bad moment")


class LocalCertificateAuthority:
    """A throw-away CA and a server certificate for 127.0.0.1, with the CA as a PEM file."""

    def __init__(self, folder: Path) -> None:
        self._ca = trustme.CA(key_type=trustme.KeyType.ECDSA)  # fast to make
        self._server_cert = self._ca.issue_cert(HOST, "localhost")
        self.ca_file = folder / "local-simulators-ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context


Router = Callable[[Request], Response]
WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Faults:
    """Faults a test switches on at the API's edge, each for the next matching operations.

    `fail` answers with an error status without applying the operation (throttling
    past the client's retries, an outage); `lose` applies the operation and then loses
    the response (the connection drops: the client can't know it happened).
    """

    fail: list[int] = field(default_factory=list)  # statuses for the next matching operations, in order
    lose: int = 0  # the next this many matching operations are applied, their responses lost
    methods: frozenset[str] = frozenset()  # empty: every method; else only these (e.g. WRITES)
    path_prefix: str = ""  # empty: every path; else only operations under it (e.g. "/v1.0/devices/")
    injected: int = 0

    def applies_to(self, request: Request) -> bool:
        return (not self.methods or request.method in self.methods) and request.path.startswith(self.path_prefix)

    def clear(self) -> None:
        self.fail.clear()
        self.lose = 0
        self.methods = frozenset()
        self.path_prefix = ""


LOST = Response(0)  # a marker: the server drops the connection instead of answering


class SimulatedApi:
    """One simulated API: authentication, routing, records, throttle and faults; no transport."""

    def __init__(self, name: str, router: Router, tokens: TokenBook, audience: str | None = None) -> None:
        self.name = name
        self.audience = audience  # the resource a token must be for (the cloud's Graph or ARM); None: any
        self.requests: list[Request] = []  # HTTP calls, as a client pays for them
        self.operations: list[Request] = []  # API operations: the calls, with a $batch's inner requests unpacked
        self.refused: list[Request] = []  # operations answered by the throttle or a fault, not served
        self.throttle = Throttle()
        self.faults = Faults()
        self._router = router
        self._tokens = tokens
        self._lock = threading.Lock()
        self._lost = False
        # A test's hook, called before a write (POST/PATCH/DELETE) is served: what happens
        # meanwhile elsewhere (another instance acting on the same VM).
        self.before_write: Callable[[Request], None] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.name}.simulated.invalid"

    def calls(self, method: str | None = None, path_contains: str = "") -> list[Request]:
        """Recorded requests that were served (throttled ones included), filtered."""
        needle = path_contains.lower()
        with self._lock:
            return [
                request
                for request in self.operations
                if (method is None or request.method == method) and needle in request.path.lower()
            ]

    def served(self) -> list[Request]:
        """Recorded requests that reached the API (not refused by the throttle)."""
        with self._lock:
            refused = {id(request) for request in self.refused}
            return [request for request in self.operations if id(request) not in refused]

    def reset_calls(self) -> None:
        with self._lock:
            self.requests.clear()
            self.operations.clear()
            self.refused.clear()

    def dispatch(self, request: Request, client_host: str) -> Response:
        if not ipaddress.ip_address(client_host).is_loopback:
            return error(HTTPStatus.FORBIDDEN, "Forbidden", "the simulators serve loopback clients only")
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not self._tokens.is_valid(token, self.audience):
            return error(
                HTTPStatus.UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "unknown or missing token, or for another audience",
            )
        if self.before_write is not None and _writes(request):
            self.before_write(request)  # outside the lock: the hook may send requests of its own
        with self._lock:
            self.requests.append(request)
            self._lost = False
            if request.method == "POST" and request.path.rstrip("/").endswith("/$batch"):
                response = self._batch(request)
            else:
                response = self._operation(request)
            return LOST if self._lost else response

    def _operation(self, request: Request) -> Response:
        self.operations.append(request)
        faults = self.faults
        if faults.fail and faults.applies_to(request):
            faults.injected += 1
            self.refused.append(request)
            return error(faults.fail.pop(0), "InjectedFault", "a fault injected by the test")
        if self.throttle.should_refuse():
            self.refused.append(request)
            return self.throttle.response()
        try:
            response = self._router(request)
        except (KeyError, TypeError, ValueError) as problem:
            return error(HTTPStatus.BAD_REQUEST, "BadRequest", f"{type(problem).__name__}: {problem}")
        if faults.lose and faults.applies_to(request):
            faults.lose -= 1
            faults.injected += 1
            self._lost = True
        return response

    def _batch(self, request: Request) -> Response:
        """Graph JSON batching: up to 20 requests in one call, each evaluated (and throttled) on its own."""
        items = (request.body or {}).get("requests")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            return error(HTTPStatus.BAD_REQUEST, "BadRequest", f"a batch holds 1 to {MAX_BATCH} requests")
        prefix = request.path.rstrip("/").removesuffix("/$batch")
        responses = []
        for item in items:
            parts = urlsplit(str(item.get("url", "")))
            inner = Request(
                method=str(item.get("method", "GET")).upper(),
                path=prefix + unquote(parts.path),
                query={key: values[-1] for key, values in parse_qs(parts.query, True).items()},
                headers={str(name).lower(): str(value) for name, value in (item.get("headers") or {}).items()},
                body=item.get("body"),
            )
            answer = self._operation(inner)
            entry: dict[str, Any] = {"id": item.get("id"), "status": answer.status, "headers": dict(answer.headers)}
            if answer.body is not None:
                entry["headers"]["Content-Type"] = "application/json"
                entry["body"] = answer.body
            responses.append(entry)
        return Response(HTTPStatus.OK, {"responses": responses})


def _writes(request: Request) -> bool:
    """A write, or a `$batch` that holds one (a batch of reads is sent as a POST too)."""
    if request.method == "POST" and request.path.rstrip("/").endswith("/$batch"):
        items = (request.body or {}).get("requests") if isinstance(request.body, dict) else None
        return any(str(item.get("method", "GET")).upper() in WRITES for item in items or [] if isinstance(item, dict))
    return request.method in WRITES


class SimulatorServer(SimulatedApi):
    """One simulated API on an HTTPS loopback port, served from a background thread."""

    def __init__(
        self,
        name: str,
        router: Router,
        tls: LocalCertificateAuthority,
        tokens: TokenBook,
        audience: str | None = None,
    ) -> None:
        super().__init__(name, router, tokens, audience)
        self._server = ThreadingHTTPServer((HOST, 0), _handler_class(self))
        self._server.daemon_threads = True
        self._server.socket = tls.server_context().wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_SECONDS,), name=f"{name}-sim", daemon=True
        )

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class InProcessTransport(httpx.AsyncBaseTransport):
    """An httpx transport that hands each request to a `SimulatedApi` in this process.

    The SDK above it (msgraph-sdk's request adapter, middleware and retries) runs
    unchanged; only sockets and TLS are left out. A lost response surfaces as the
    protocol error a dropped connection gives.
    """

    def __init__(self, api: SimulatedApi) -> None:
        self.api = api

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raw = await request.aread()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        simulated = Request(
            method=request.method,
            path=unquote(request.url.path),
            query={key: values[-1] for key, values in parse_qs(request.url.query.decode(), True).items()},
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        response = self.api.dispatch(simulated, HOST)
        if response is LOST:
            raise httpx.RemoteProtocolError("the connection dropped before the response (injected)", request=request)
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        headers = dict(response.headers)
        if response.body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        return httpx.Response(response.status, headers=headers, content=payload, request=request)


class TokenBook:
    """The tokens the local managed-identity endpoint has issued."""

    def __init__(self) -> None:
        self.identity_header = secrets.token_urlsafe(16)
        self._issued: dict[str, str] = {}  # token → the resource (audience) it was issued for
        self._lock = threading.Lock()

    def issue(self, resource: str = "") -> str:
        token = f"local-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._issued[token] = resource.rstrip("/")
        return token

    def is_valid(self, token: str, audience: str | None = None) -> bool:
        """Issued here, and (when the API names its audience) for that API, as Entra's `aud` claim."""
        with self._lock:
            issued_for = self._issued.get(token)
        return issued_for is not None and (audience is None or issued_for == audience.rstrip("/"))


def _handler_class(simulator: SimulatedApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as they are written: no 40 ms delayed-ACK stalls

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._send(error(HTTPStatus.BAD_REQUEST, "BadRequest", "body is not JSON"))
                return
            request = Request(
                method=self.command,
                path=unquote(parts.path),
                query={key: values[-1] for key, values in parse_qs(parts.query, True).items()},
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
            )
            response = simulator.dispatch(request, self.client_address[0])
            if response is LOST:
                self.close_connection = True  # applied, and the client never hears of it
                return
            self._send(response)

        def _send(self, response: Response) -> None:
            payload = b"" if response.body is None else json.dumps(response.body).encode()
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.body is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are the log."""

    return Handler


class IdentityEndpoint:
    """The App Service managed-identity protocol on loopback HTTP.

    `DefaultAzureCredential` → `ManagedIdentityCredential` finds it through
    IDENTITY_ENDPOINT / IDENTITY_HEADER, exactly as it does inside Azure
    Functions, so local runs take the product's real credential path.
    """

    def __init__(self, tokens: TokenBook) -> None:
        self.tokens = tokens
        self.token_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as they are written: no 40 ms delayed-ACK stalls

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                authentic = self.headers.get("X-IDENTITY-HEADER") == tokens.identity_header
                if not authentic or not query.get("resource"):
                    self._send(HTTPStatus.BAD_REQUEST, {"error": "invalid_request"})
                    return
                outer.token_requests += 1
                self._send(
                    HTTPStatus.OK,
                    {
                        "access_token": tokens.issue(query["resource"][0]),
                        "expires_in": "3600",
                        "resource": query["resource"][0],
                        "token_type": "Bearer",
                    },
                )

            def _send(self, status: int, body: Any) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_SECONDS,), name="identity-sim", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/msi/token"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serving(*servers: SimulatorServer | IdentityEndpoint) -> Iterator[None]:
    for server in servers:
        server.start()
    try:
        yield
    finally:
        for server in servers:
            server.stop()
