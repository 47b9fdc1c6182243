"""Standalone test apiserver: `python -m lab.kubeapi --listen 127.0.0.1:0 --port-file F`.

The lab runs the agent in a network namespace and forwards a unix socket into it, hence
`--unix`; restart tests kill this process and start a new one on the same `--state` file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from lab.kubeapi.server import KubeApiServer


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.kubeapi", description=__doc__)
    parser.add_argument(
        "--listen",
        type=_parse_listen,
        default=("127.0.0.1", 0),
        help="HOST:PORT (port 0 = any free)",
    )
    parser.add_argument("--unix", help="also listen on this unix socket path")
    parser.add_argument(
        "--state", help="load objects and the rv counter from this JSON file, save on each change"
    )
    parser.add_argument("--port-file", help="write the TCP port here once listening")
    parser.add_argument(
        "--bookmark-interval", type=float, default=1.0, help="seconds between BOOKMARK events"
    )
    parser.add_argument(
        "--token-file", help="require 'Authorization: Bearer <file contents>' (re-read per request)"
    )
    parser.add_argument(
        "--history", type=int, default=1000, help="events retained for watch resumption"
    )
    parser.add_argument(
        "--min-request-timeout",
        type=float,
        default=1800.0,
        help="watch length without timeoutSeconds (x1..2)",
    )
    parser.add_argument(
        "--max-watch-timeout", type=float, help="cap every watch at this many seconds"
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def _write_port_file(path: str, port: int) -> None:
    # Write then rename: a test polling for the file never reads a partial port.
    tmp = Path(f"{path}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def serve(args: argparse.Namespace) -> None:
    host, port = args.listen
    server = KubeApiServer(
        host=host,
        port=port,
        unix_path=args.unix,
        state_file=args.state,
        token_file=args.token_file,
        bookmark_interval=args.bookmark_interval,
        history_size=args.history,
        min_request_timeout=args.min_request_timeout,
        max_watch_timeout=args.max_watch_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        if args.port_file:
            _write_port_file(args.port_file, server.port)
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
