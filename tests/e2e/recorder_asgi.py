"""A minimal ASGI upstream for the framing and smuggling tests (tests/tests/smuggling.rs).

It runs under uvicorn with the HTTP parser named by --http: `h11` (pure Python) or `httptools`
(llhttp, what uvicorn picks when it is installed, so what Python SDK servers usually run on).
Every request the parser hands to the app is appended to --record as one JSON line (method,
target, every header, body length), then answered with a small 200 JSON-RPC result, so the test
reads exactly which requests this parser saw.

    recorder_asgi.py --http h11|httptools --record FILE

Binds a free loopback port itself and prints `listening PORT` on stdout once it accepts
connections.
"""

import argparse
import asyncio
import json
import socket
import sys

import uvicorn

ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{}}'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", choices=["h11", "httptools"], required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    # Line-buffered: the test reads the file while we run.
    record = open(args.record, "a", encoding="utf-8", buffering=1)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        target = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        record.write(
            json.dumps(
                {
                    "method": scope["method"],
                    "target": target,
                    "headers": [
                        [k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]
                    ],
                    "body": body,
                }
            )
            + "\n"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(ANSWER)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": ANSWER})

    # Our own socket on port 0: no race for a port with other tests.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # No WebSocket implementation and no lifespan: a plain HTTP app, as the parser sees it.
    config = uvicorn.Config(app, http=args.http, ws="none", lifespan="off", log_level="error")
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
                sys.exit("uvicorn stopped before it started")
            await asyncio.sleep(0.02)
        print(f"listening {port}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
