"""APPL_DB write throughput: batched ProducerStateTable vs one script call per key.

Writes N ROUTE_TABLE entries (default 100,000) into a redis-server this script starts on a unix
socket in a temp dir (no TCP), exactly as the SONiC backend does:
- batched: set_many(), 1000 keys per script call and per publish, all calls in one pipeline
  (what the applier does for a bulk resync);
- per key: one set() per key, each awaited (swss-common's unbuffered ProducerStateTable: one
  EVALSHA round trip per entry, what a naive producer does);
- per key, pipelined: one script call per key but all in one round trip, to separate the cost of
  the round trips from the cost of the scripts.
Each mode starts from an empty database and is checked (N keys in ROUTE_TABLE_KEY_SET, N
staging hashes). Median of --repeat runs; the server is stopped and the temp dir removed always.
Usage: python bench/sonic_appl_db.py [--routes 100000] [--repeat 3] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from agent.apply.sonic.producer import ProducerStateTable
from lab.redis_server import RedisServer

Entries = list[tuple[str, dict[str, str]]]


def routes(n: int) -> Entries:
    base = int(ipaddress.ip_address("10.0.0.0"))
    return [
        (f"{ipaddress.ip_address(base + i)}/32",
         {"nexthop": f"192.168.{i % 4}.1", "ifname": f"Ethernet{(i % 4) * 4}", "protocol": "233"})
        for i in range(n)
    ]


async def batched(table: ProducerStateTable, entries: Entries) -> None:
    await table.set_many(entries)


async def per_key(table: ProducerStateTable, entries: Entries) -> None:
    for key, fields in entries:
        await table.set(key, fields)


async def per_key_pipelined(table: ProducerStateTable, entries: Entries) -> None:
    async with table.client.pipeline(transaction=False) as pipe:
        for key, fields in entries:
            await table.set(key, fields, pipe)
        await pipe.execute()


MODES: dict[str, Callable[[ProducerStateTable, Entries], Awaitable[None]]] = {
    "batched": batched,
    "per key": per_key,
    "per key, pipelined": per_key_pipelined,
}


async def run(socket: str, n: int, repeat: int, batch: int) -> dict[str, float]:
    client = aioredis.Redis(unix_socket_path=socket, db=0, decode_responses=True)
    try:
        table = ProducerStateTable(client, "ROUTE_TABLE", 0, ":", batch_size=batch)
        entries = routes(n)
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(repeat):
            for mode, write in MODES.items():
                await client.flushdb()
                t0 = time.perf_counter()
                await write(table, entries)
                elapsed = time.perf_counter() - t0
                got = await client.scard("ROUTE_TABLE_KEY_SET")
                staged = await client.dbsize() - 1  # every staging hash + the key set
                if got != n or staged != n:
                    raise SystemExit(f"{mode}: {got} keys in the key set, {staged} staged, "
                                     f"expected {n}")
                rates[mode].append(n / elapsed)
        return {mode: statistics.median(r) for mode, r in rates.items()}
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kfa-bench-redis-"))
    server = RedisServer(workdir)
    try:
        server.start()
        result = asyncio.run(run(str(server.socket), args.routes, args.repeat, args.batch))
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"APPL_DB ROUTE_TABLE, {args.routes} entries, median of {args.repeat} "
          f"(redis-server on a unix socket, batch {args.batch}):")
    for mode, rate in result.items():
        print(f"  {mode:<20} {rate:>10,.0f} keys/s  ({args.routes / rate:6.2f} s)")
    print(f"  batched / per key: {result['batched'] / result['per key']:.1f}x; "
          f"batched / per key pipelined: {result['batched'] / result['per key, pipelined']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
