"""Graph JSON batching (`$batch`, up to 20 requests per call), through msgraph-sdk's batch builder.

Each inner request is throttled on its own: 429/503/504 answers are sent again after
their Retry-After, a bounded number of times; other 5xx are transient. The cleanup
worker reads and deletes an Intune record and its Entra object this way: one call
instead of two, each time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kiota_abstractions.method import Method
from kiota_abstractions.request_adapter import RequestAdapter
from kiota_abstractions.request_information import RequestInformation

from responder.adapters._errors import GRAPH
from responder.decisions.errors import TransientError

RETRIED_STATUSES = frozenset({429, 503, 504})


@dataclass(frozen=True, slots=True)
class Answer:
    """One inner response: its status, and its JSON body when it has one."""

    status: int
    body: dict[str, Any] | None


class GraphBatching:
    """`send` posts one request through the SDK's adapter and returns Graph's JSON (errors mapped)."""

    def __init__(
        self,
        adapter: RequestAdapter,
        base_url: str,
        send: Callable[[RequestInformation], Awaitable[dict[str, Any]]],
        max_retries: int,
    ) -> None:
        self._adapter = adapter
        self._base_url = base_url
        self._send = send
        self._max_retries = max_retries

    async def send(self, requests: dict[str, RequestInformation]) -> dict[str, Answer]:
        from msgraph_core.requests.batch_request_content import BatchRequestContent
        from msgraph_core.requests.batch_request_item import BatchRequestItem

        pending, answers = dict(requests), {}
        for attempt in range(self._max_retries + 1):
            content = BatchRequestContent()
            for key, information in pending.items():
                item = BatchRequestItem(request_information=information, id=key)
                item.url = item.url.removeprefix(self._base_url)  # Graph wants URLs relative to the version
                content.add_request(key, item)
            # msgraph-core reads inner bodies as base64 only; Graph sends JSON objects. So the
            # batch goes through the SDK's request adapter (auth, retries, TLS) and its
            # response is read as the JSON Graph documents.
            information = RequestInformation()
            information.http_method = Method.POST
            information.url = f"{self._base_url}/$batch"
            information.headers.try_add("Accept", "application/json")
            information.set_content_from_parsable(self._adapter, "application/json", content)
            document = await self._send(information)
            by_id = {str(item.get("id")): item for item in document.get("responses", [])}
            wait = 0
            for key in list(pending):
                item = by_id.get(key, {})
                status = int(item.get("status") or 0)
                if status in RETRIED_STATUSES:
                    wait = max(wait, _retry_after(item.get("headers")))
                    continue
                if status >= 500 or status == 0:
                    raise TransientError(
                        f"Microsoft Graph answered {status or 'nothing'} inside a batch", GRAPH, status or None
                    )
                body = item.get("body")
                answers[key] = Answer(status, body if isinstance(body, dict) else None)
                del pending[key]
            if not pending:
                return answers
            if attempt < self._max_retries:
                await asyncio.sleep(wait)
        raise TransientError(f"Microsoft Graph kept throttling {len(pending)} batched request(s)", GRAPH, 429)


def _retry_after(headers: dict[str, Any] | None) -> int:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after" and str(value).isdigit():
            return max(1, int(value))
    return 1
