"""Listeners that are not MCP servers, for the scan tests.

--http PORT: a plain HTTP server (http.server): HTML on GET, 501 on POST/DELETE.
--banner PORT: a TCP server that is not HTTP: it greets like ssh and reads nothing.
--silent PORT: accepts connections and never sends a byte.
--bound ADDR:PORT: another plain HTTP server, on that (non-loopback) address.
All but --bound on 127.0.0.1. Prints `listening` on stdout once all accept connections.
"""

import argparse
import http.server
import socket
import threading
import time


def banner(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)

    def loop() -> None:
        while True:
            conn, _ = s.accept()
            try:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 fake\r\n")
            finally:
                conn.close()

    threading.Thread(target=loop, daemon=True).start()


def silent(port: int) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    held = []

    def loop() -> None:
        while True:
            conn, _ = s.accept()
            held.append(conn)  # kept open, never answered

    threading.Thread(target=loop, daemon=True).start()


def plain_http(port: int, host: str = "127.0.0.1") -> None:
    server = http.server.ThreadingHTTPServer((host, port), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, required=True)
    parser.add_argument("--banner", type=int, required=True)
    parser.add_argument("--silent", type=int, required=True)
    parser.add_argument("--bound")
    args = parser.parse_args()
    if args.bound:
        host, port = args.bound.rsplit(":", 1)
        plain_http(int(port), host)
    plain_http(args.http)
    banner(args.banner)
    silent(args.silent)
    print("listening", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
