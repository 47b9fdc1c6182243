"""Bulk route programming: the agent's LinuxDataplane against `ip -batch`, same run, same routes.

In a network namespace it creates (kfn-bench-<random>, deleted on every exit path), with a veth
pair whose address makes the next hop valid, it installs and then removes the same N routes
(/24s, proto 233, via 192.0.2.2):

- `ip -batch`: one file of `route add` lines, then one of `route del` lines;
- the agent: `start()` (opening its sockets and dumping the empty tables) + `apply()` of N static
  routes, then `resync()` (a full re-dump of the N routes) + `apply()` of nothing. Each side
  therefore includes a full dump, which `ip -batch` does not need.

Prints routes/s for both and the ratio agent/ip-batch over install + remove; exits 1 when the
ratio is below --min-ratio (0.5). With --events the agent's event task runs meanwhile, as in the
daemon (it reads the echoes of every route written). Needs root.
Usage: python bench/netlink_routes.py [--routes 100000] [--events] [--min-ratio 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.apply.contract import HardwareReading
from agent.apply.linux.applier import LinuxDataplane
from agent.config import DataplaneConfig
from agent.plan.model import DataplaneDesired, StaticRoute

PROTO = 233
VIA = "192.0.2.2"


class IgnoredFeedback:
    """The benchmark measures applies only: what the data plane reports back is dropped."""

    def replan(self, reason: str) -> None:
        pass

    def hardware(self, reading: HardwareReading) -> None:
        pass

    def offload_failed(self, per_family: Mapping[int, int]) -> None:
        pass


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def namespace() -> Iterator[str]:
    ns = f"kfn-bench-{secrets.token_hex(3)}"
    run("ip", "netns", "add", ns)
    try:
        run("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for dev in ("lo", "v0", "v1"):
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "v0")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def prefixes(count: int) -> list[str]:
    # 10.0.0.0/24, 10.0.1.0/24, ... 11.0.0.0/24 ...: distinct /24s
    return [f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(count)]


def owned_routes(ns: str) -> int:
    return len(json.loads(run("ip", "-n", ns, "-j", "route", "show", "proto", str(PROTO))))


def bench_ip_batch(ns: str, nets: list[str], tmp: Path) -> tuple[float, float]:
    add, rm = tmp / "add.batch", tmp / "del.batch"
    add.write_text("".join(f"route add {p} via {VIA} proto {PROTO}\n" for p in nets))
    rm.write_text("".join(f"route del {p} via {VIA} proto {PROTO}\n" for p in nets))
    t = time.perf_counter()
    run("ip", "-n", ns, "-batch", str(add))
    t_add = time.perf_counter() - t
    assert owned_routes(ns) == len(nets), "ip -batch did not install every route"
    t = time.perf_counter()
    run("ip", "-n", ns, "-batch", str(rm))
    t_del = time.perf_counter() - t
    assert owned_routes(ns) == 0, "ip -batch did not remove every route"
    return t_add, t_del


async def bench_agent(ns: str, nets: list[str], events: bool) -> tuple[float, float, float]:
    desired = DataplaneDesired(PROTO, tuple(StaticRoute("bench", p, VIA) for p in nets))
    dp = LinuxDataplane(DataplaneConfig(route_protocol=PROTO), IgnoredFeedback(), netns=ns)
    watcher: asyncio.Task[None] | None = None
    try:
        t = time.perf_counter()
        await dp.start()
        if events:
            watcher = asyncio.create_task(dp.run_events())
        result = await dp.apply(desired)
        t_add = time.perf_counter() - t
        assert result.ok and result.counts["routes"].added == len(nets), result.error
        assert owned_routes(ns) == len(nets), "the agent did not install every route"
        t = time.perf_counter()
        idle = await dp.resync()
        t_resync = time.perf_counter() - t
        assert idle.ok and idle.changes == 0, idle
        t = time.perf_counter()
        await dp.resync()
        result = await dp.apply(DataplaneDesired(PROTO))
        t_del = time.perf_counter() - t
        assert result.ok and result.counts["routes"].removed == len(nets), result.error
        assert owned_routes(ns) == 0, "the agent did not remove every route"
        return t_add, t_del, t_resync
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await dp.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=100_000)
    parser.add_argument("--events", action="store_true", help="run the event task meanwhile")
    parser.add_argument("--min-ratio", type=float, default=0.5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    nets = prefixes(args.routes)
    n = len(nets)
    with namespace() as ns, tempfile.TemporaryDirectory() as tmp:
        ip_add, ip_del = bench_ip_batch(ns, nets, Path(tmp))
        ag_add, ag_del, ag_resync = asyncio.run(bench_agent(ns, nets, args.events))
    ip_rate = 2 * n / (ip_add + ip_del)
    ag_rate = 2 * n / (ag_add + ag_del)
    ratio = ag_rate / ip_rate
    print(f"{n} routes, proto {PROTO}, events {'on' if args.events else 'off'}")
    print(f"ip -batch   install {ip_add:6.2f}s ({n / ip_add:8.0f}/s)  "
          f"remove {ip_del:6.2f}s ({n / ip_del:8.0f}/s)  overall {ip_rate:8.0f} routes/s")
    print(f"agent       install {ag_add:6.2f}s ({n / ag_add:8.0f}/s)  "
          f"remove {ag_del:6.2f}s ({n / ag_del:8.0f}/s)  overall {ag_rate:8.0f} routes/s")
    print(f"agent idle full resync of {n} routes (dump + diff, no change): {ag_resync:.2f}s")
    print(f"ratio agent/ip-batch: {ratio:.2f} (minimum {args.min_ratio})")
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
