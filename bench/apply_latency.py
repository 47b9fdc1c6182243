"""Node change -> confirmed in FRR: the agent's fast apply path against frr-reload.py's path.

Runs as root: brings up the lab's leaf (real FRR 8.4 in a network namespace, lab prefix
"kfabench") and drives the agent's own reconcile loop (agent.runtime.reconcile.Reconciler.run:
leading-edge coalescing, frr.debounce_ms 200) with the real plan(), render and FrrApplier; the
data plane is a stand-in that holds what it is asked (this measures FRR). A change is one Node's
pod CIDR replaced in the informer's store and the store marked dirty, as the informer does; its
latency runs from that mark to the end of the pass whose FRR apply was confirmed (FRR's running
config diffed against the candidate: `show running-config` on the fast path, `frr-reload.py
--test` on the other), i.e. the agent's own `change to applied state`. Changes come after a
random pause of 0-400 ms, so some land inside the 200 ms gap after a pass and wait for it
(coalescing is in the numbers).

Two leaves: lab-sized (3 nodes on 5 server ports, 1 uplink) and 48-port (48 nodes, 2 uplinks).
For each, the frr-reload.py path (FrrApplier(fast=False): vtysh -C, --test, --reload, --test)
is measured in the same run as the baseline, and the ratio printed. Targets (issue 15): lab
p50 <= 100 ms, p99 <= 300 ms; 48-port p50 <= 150 ms; >= 5x faster than frr-reload.py's path.
Usage: sudo .venv/bin/python bench/apply_latency.py [--changes 50] [--baseline-changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.apply.contract import ApplyResult, Held, Outcome
from agent.apply.frr.reload import FrrApplier
from agent.config import AgentConfig, parse_config
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.runtime.reconcile import Dirty, Reconciler
from agent.status.headroom import HeadroomMonitor
from agent.status.metrics import Metrics
from agent.status.model import EventLog
from agent.status.state import ObservedState
from agent.status.view import AgentView
from lab.agent_lab import CLAB_FILE, LEAF
from lab.netns import Lab

PAUSE_SECONDS = (0.0, 0.4)


class HeldDataplane:
    """Stand-in data plane: applies nothing, holds what it is asked (so FRR originates it)."""

    name = "dataplane"

    def __init__(self) -> None:
        self.routes: frozenset[str] = frozenset()

    async def start(self) -> None:
        pass

    async def apply(self, desired: Any) -> ApplyResult:
        self.routes = frozenset(desired.prefixes)
        return ApplyResult(self.name, True, "applied", time.time(), 0.0)

    async def resync(self) -> ApplyResult | None:
        return None

    async def close(self) -> None:
        pass

    def held(self) -> Held:
        return {"routes": self.routes}

    def counts(self) -> Mapping[str, int]:
        return {}

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return ()

    async def report(self, outcome: Outcome) -> None:
        pass


def leaf_config(lab: Lab, ports: int, uplinks: int, workdir: Path) -> AgentConfig:
    return parse_config({
        "switch": {"hostname": LEAF, "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": {"server_ports": [f"swp{i}" for i in range(1, ports + 1)],
                   "uplinks": [f"swp{51 + i}" for i in range(uplinks)],
                   "pod_supernets": ["10.244.0.0/16"]},
        "frr": {"pathspace": lab.pathspace(LEAF), "config_file": str(lab.frr_conf_path(LEAF))},
        "kubernetes": {"watch_pods": False},
        "status": {"state_file": str(workdir / "status.json")},
    })


def node(i: int, cidr: str) -> dict[str, Any]:
    return {"metadata": {"name": f"srv{i}", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"kube-fabric-agent.io/switch-port": f"{LEAF}/swp{i}"}},
            "spec": {"podCIDRs": [cidr], "podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.10.{i}"}]}}


async def measure(cfg: AgentConfig, nodes: int, changes: int, fast: bool) -> list[float]:
    """Latency of `changes` Node changes through the agent's reconcile loop, in seconds."""
    dirty = Dirty()
    informer = Informer(cast(KubeApi, object()), "/api/v1/nodes", on_change=dirty.mark)
    state = ObservedState(started_at=time.time(), hostname=LEAF, nodes=informer)
    events = EventLog(max_events=100, max_age_seconds=3600)
    frr = FrrApplier(cfg.frr, fast=fast)
    await frr.start()
    passes: asyncio.Queue[float | None] = asyncio.Queue()
    reconciler = Reconciler(
        cfg, state=state, view=AgentView(state), nodes=informer, lldp=None, pods=None,
        services=None,
        frr=frr, dataplane=HeldDataplane(), dirty=dirty, headroom=HeadroomMonitor(cfg, events),
        events=events, metrics=Metrics(),
        on_reconciled=lambda: passes.put_nowait(state.last_reconcile_latency))
    informer.store = {f"srv{i}": node(i, f"10.244.{i}.0/24") for i in range(1, nodes + 1)}
    informer.synced = informer.connected = True
    loop = asyncio.create_task(reconciler.run())
    rng = random.Random(15)
    samples = []
    try:
        dirty.mark()
        await passes.get()  # the first apply: the full path on both (nothing confirmed yet)
        for n in range(changes):
            await asyncio.sleep(rng.uniform(*PAUSE_SECONDS))
            i = rng.randint(1, nodes)
            cidr = f"10.244.{100 + n % 100}.0/24"
            informer.store = {**informer.store, f"srv{i}": node(i, cidr)}
            dirty.mark()
            latency = await passes.get()
            result = state.results.get("frr")
            if result is None or not result.ok or latency is None:
                raise SystemExit(f"FRR apply failed: {result}")
            samples.append(latency)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    return samples


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def line(name: str, samples: list[float]) -> str:
    return (f"{name:<28} p50 {p(samples, 0.5) * 1000:7.1f} ms  p99 {p(samples, 0.99) * 1000:7.1f}"
            f" ms  max {max(samples) * 1000:7.1f} ms  (n={len(samples)})")


async def bench(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    with Lab.from_file(CLAB_FILE, prefix="kfabench") as lab:
        workdir = lab.state_dir
        for title, ports, nodes, uplinks in (("lab leaf", 5, 3, 1), ("48-port leaf", 48, 48, 2)):
            cfg = leaf_config(lab, ports, uplinks, workdir)
            agent = await measure(cfg, nodes, args.changes, fast=True)
            base = await measure(cfg, nodes, args.baseline_changes, fast=False)
            print(f"{title} ({nodes} nodes, {ports} server ports):")
            print("  " + line("agent (fast path)", agent))
            print("  " + line("frr-reload.py path", base))
            ratio = statistics.median(base) / statistics.median(agent)
            print(f"  ratio frr-reload.py / agent: p50 {ratio:.1f}x, "
                  f"p99 {p(base, 0.99) / p(agent, 0.99):.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--baseline-changes", type=int, default=50)
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
