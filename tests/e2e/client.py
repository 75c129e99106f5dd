"""An MCP client built with the official Python SDK, driving the e2e server's full sequence.

    client.py URL [--transport streamable|sse] [--mode legacy|modern] [--refused TOOL]
              [--cafile CA.pem] [--cert CLIENT.pem --key CLIENT.key] [--token TOKEN]
              [--fetch URL]...

Initializes, lists tools, calls `add` and `count` (collecting every progress notification in the
order received), reads `config://greeting`, then ends the session (the SDK sends DELETE on exit
with Streamable HTTP). With --refused TOOL it also calls TOOL (a tool the gateway refuses) and
records the error. With --fetch URL (legacy mode) it also calls the server's `fetch` tool with
each URL and records the text and whether it was an error. Prints one JSON object with what it
received; the test asserts on it.

--mode legacy (the default) drives the handshake-era `ClientSession` (initialize, 2025-11-25);
--mode modern drives the SDK's `Client`, which speaks 2026-07-28 when the server does: every
request carries `_meta` and the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers.

For an HTTPS gateway (legacy mode, Streamable HTTP): --cafile trusts the gateway's CA, --cert
and --key present a client certificate, --token sends `Authorization: Bearer TOKEN`. This is
how an application points the SDK at such a gateway: an httpx2 client with an SSL context.
"""

import argparse
import asyncio
import json
import ssl

import httpx2

from mcp import Client, ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


async def try_refused(session, name: str) -> dict:
    """Calls a tool the gateway refuses; what the SDK made of the refusal."""
    try:
        result = await session.call_tool(name, {})
        return {"result": text_of(result), "is_error": bool(result.is_error)}
    except Exception as error:  # noqa: BLE001 - any clean error is what the test looks for
        return {"error": str(error) or type(error).__name__}


async def run_modern(url: str, refused: str | None) -> dict:
    summary: dict = {}
    progress: list[dict] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "total": total, "message": message})

    async with Client(url, mode="auto") as client:
        summary["server_name"] = client.server_info.name if client.server_info else None
        summary["protocol_version"] = client.protocol_version
        tools = await client.list_tools()
        summary["tools"] = sorted(t.name for t in tools.tools)
        added = await client.call_tool("add", {"a": 2, "b": 3})
        summary["add"] = text_of(added)
        summary["add_is_error"] = bool(added.is_error)
        counted = await client.call_tool("count", {"steps": 3}, progress_callback=on_progress)
        summary["count"] = text_of(counted)
        summary["progress"] = progress
        resource = await client.read_resource("config://greeting")
        summary["resource"] = [getattr(c, "text", None) for c in resource.contents]
        if refused:
            summary["refused"] = await try_refused(client, refused)
    summary["closed"] = True
    return summary


def http_client(cafile: str | None, cert: str | None, key: str | None, token: str | None):
    """An httpx2 client for an HTTPS gateway with a client certificate, or None for defaults."""
    if not (cafile or cert or token):
        return None
    context = ssl.create_default_context(cafile=cafile)
    if cert:
        context.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # The SDK's own defaults: 30 s to connect, 300 s to read (SSE streams stay open).
    timeout = httpx2.Timeout(30.0, read=300.0)
    return httpx2.AsyncClient(verify=context, headers=headers, timeout=timeout)


async def run(
    url: str, transport: str, refused: str | None, client=None, fetch: list[str] | None = None
) -> dict:
    summary: dict = {}
    progress: list[dict] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "total": total, "message": message})

    if transport == "streamable":
        connect = streamable_http_client(url, http_client=client)
    else:
        connect = sse_client(url)
    async with connect as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            summary["server_name"] = init.server_info.name
            summary["protocol_version"] = init.protocol_version
            tools = await session.list_tools()
            summary["tools"] = sorted(t.name for t in tools.tools)
            added = await session.call_tool("add", {"a": 2, "b": 3})
            summary["add"] = text_of(added)
            summary["add_is_error"] = bool(added.is_error)
            counted = await session.call_tool("count", {"steps": 3}, progress_callback=on_progress)
            summary["count"] = text_of(counted)
            summary["progress"] = progress
            resource = await session.read_resource("config://greeting")
            summary["resource"] = [getattr(c, "text", None) for c in resource.contents]
            if refused:
                summary["refused"] = await try_refused(session, refused)
            summary["fetch"] = []
            for target in fetch or []:
                fetched = await session.call_tool("fetch", {"url": target})
                summary["fetch"].append(
                    {"url": target, "text": text_of(fetched), "is_error": bool(fetched.is_error)}
                )
    summary["closed"] = True
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    parser.add_argument("--mode", choices=["legacy", "modern"], default="legacy")
    parser.add_argument("--refused")
    parser.add_argument("--cafile")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--token")
    parser.add_argument("--fetch", action="append")
    args = parser.parse_args()
    client = http_client(args.cafile, args.cert, args.key, args.token)
    if args.mode == "modern":
        summary = asyncio.run(run_modern(args.url, args.refused))
    else:
        summary = asyncio.run(run(args.url, args.transport, args.refused, client, args.fetch))
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
