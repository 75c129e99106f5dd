"""The upstream for the end-to-end tests: an MCP server built with the official Python SDK.

It has a tool that returns a value (`add`), a tool that sends progress notifications before it
answers (`count`), a tool a gateway allowlist is meant to refuse (`delete_all`), and a resource
(`config://greeting`). Every HTTP request it receives and every
tool it runs is appended to --record as one JSON line, so a test can prove what reached it (and
what did not).

    server.py (--port P | --uds PATH) --record FILE [--protection on|off]
              [--transport streamable|sse] [--fetch]

--protection off turns the SDK's own DNS-rebinding protection off, so the gateway in front is the
only defence; on allows only Host 127.0.0.1:P (and Origin http://127.0.0.1:P).
--uds serves on a Unix socket instead of a TCP port (uvicorn's `--uds`).
--fetch adds a `fetch` tool that GETs a URL and returns its body, as fetch MCP servers do (the
egress tests confine what it may reach); a failed fetch is the tool's error, with the reason.
Prints `listening P` (or `listening PATH`) on stdout once it accepts connections.
"""

import argparse
import asyncio
import json
import sys
import threading
import urllib.request

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

GREETING = "hello from the upstream MCP server"


def main() -> None:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--uds")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind with --port")
    parser.add_argument("--record", required=True)
    parser.add_argument("--protection", choices=["on", "off"], default="off")
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    parser.add_argument("--fetch", action="store_true")
    args = parser.parse_args()

    lock = threading.Lock()

    def record(entry: dict) -> None:
        # One line per event, flushed at once: the test reads the file while we run.
        with lock, open(args.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    server = MCPServer("e2e-upstream")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        record({"event": "tool", "name": "add", "args": {"a": a, "b": b}})
        return a + b

    @server.tool()
    async def count(steps: int, ctx: Context) -> str:
        """Reports `steps` progress notifications, then answers."""
        record({"event": "tool", "name": "count", "args": {"steps": steps}})
        for i in range(1, steps + 1):
            await ctx.report_progress(i, steps, f"step {i}")
            # A pause so the notifications really stream before the answer.
            await asyncio.sleep(0.05)
        return f"counted to {steps}"

    @server.tool()
    def delete_all() -> str:
        """Stands for a dangerous tool: the allowlist tests prove it never runs."""
        record({"event": "tool", "name": "delete_all", "args": {}})
        return "everything deleted"

    if args.fetch:

        @server.tool()
        def fetch(url: str) -> str:
            """Fetches a URL and returns its body."""
            record({"event": "tool", "name": "fetch", "args": {"url": url}})
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.read().decode("utf-8", "replace")
            except OSError as error:
                # As fetch servers do: the reason goes back to the model as the tool's error.
                raise ToolError(f"fetching {url} failed: {error}") from error

    @server.resource("config://greeting", mime_type="text/plain")
    def greeting() -> str:
        """A fixed text."""
        return GREETING

    if args.protection == "on" and args.uds:
        sys.exit("--protection on needs --port (it allows Host 127.0.0.1:PORT)")
    if args.protection == "on":
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=[f"127.0.0.1:{args.port}"],
            allowed_origins=[f"http://127.0.0.1:{args.port}"],
        )
    else:
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)

    if args.transport == "streamable":
        app = server.streamable_http_app(transport_security=security)
    else:
        app = server.sse_app(transport_security=security)

    async def recording_app(scope, receive, send):
        # Records every request before the SDK sees it, whatever the SDK then answers.
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            record(
                {
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "host": headers.get("host"),
                    "origin": headers.get("origin"),
                    "mcp_protocol_version": headers.get("mcp-protocol-version"),
                    "mcp_method": headers.get("mcp-method"),
                    "mcp_name": headers.get("mcp-name"),
                }
            )
        await app(scope, receive, send)

    if args.uds:
        config = uvicorn.Config(recording_app, uds=args.uds, log_level="warning", lifespan="on")
    else:
        config = uvicorn.Config(
            recording_app, host=args.host, port=args.port, log_level="warning", lifespan="on"
        )
    uv = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(uv.serve())
        while not uv.started:
            if task.done():
                task.result()
                sys.exit("server stopped before it started")
            await asyncio.sleep(0.02)
        print(f"listening {args.uds or args.port}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
