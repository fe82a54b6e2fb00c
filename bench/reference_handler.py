"""The reference for the cold start: a minimal Functions handler that makes the same HTTP calls.

    python bench/reference_handler.py <calls.json>

It is what a careful admin could write without the responder's SDKs: `azure.functions` for the
app, `azure-identity` for the managed-identity tokens, `aiohttp` for the calls; no decisions, no
SDK clients. The calls (method, URL, headers, body, in order) are the ones the responder's own
first event made, recorded at the simulators and at a proxy in front of Azurite; storage calls
carry an account SAS instead of a shared-key signature. TLS is aiohttp's default, the system's trust
store (the bench adds the simulators' CA to it). Prints one line when the last answer is read.
"""

import asyncio
import json
import os
import sys
from email.utils import formatdate
from pathlib import Path

import aiohttp
import azure.functions as func
from azure.identity.aio import ManagedIdentityCredential

app = func.FunctionApp()  # a real app object, as the host would index it


async def replay(calls: list[dict[str, object]]) -> None:
    tokens: dict[str, str] = {}
    async with ManagedIdentityCredential() as credential, aiohttp.ClientSession() as session:
        for call in calls:
            headers = {str(name): str(value) for name, value in dict(call["headers"]).items()}  # type: ignore[call-overload]
            scope = call.get("scope")
            if scope:
                if scope not in tokens:
                    tokens[str(scope)] = (await credential.get_token(str(scope))).token
                headers["Authorization"] = f"Bearer {tokens[str(scope)]}"
            else:
                headers["x-ms-date"] = formatdate(usegmt=True)
            body = call.get("body")
            async with session.request(
                str(call["method"]),
                str(call["url"]),
                data=None if body is None else str(body).encode(),
                headers=headers,
            ) as answer:
                await answer.read()


def main() -> None:
    calls = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(replay(calls))
    print("handled", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
