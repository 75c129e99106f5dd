"""An MCP client built with the official Python SDK, driving the e2e server's full sequence.

    client.py URL [--transport streamable|sse]

Initializes, lists tools, calls `add` and `count` (collecting every progress notification in the
order received), reads `config://greeting`, then ends the session (the SDK sends DELETE on exit
with Streamable HTTP). Prints one JSON object with what it received; the test asserts on it.
"""

import argparse
import asyncio
import json

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


async def run(url: str, transport: str) -> dict:
    summary: dict = {}
    progress: list[dict] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append({"progress": value, "total": total, "message": message})

    if transport == "streamable":
        connect = streamable_http_client(url)
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
    summary["closed"] = True
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.transport))), flush=True)


if __name__ == "__main__":
    main()
