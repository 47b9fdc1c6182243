"""Planning at scale (issue 15): plan + render per Node change on a 48-port leaf, with the
incremental core (PlanCache, as the daemon plans) against the baseline measured in the same run:
cluster_state + plan() from scratch, which is what every change cost before the cache (with the
ownership indexes; the pairwise rule before them is not run: minutes per change at 5,000).

Each change replaces one Node object (as the informer does): alternately an attached node is
cordoned/uncordoned (its peer's route map changes) and a node on another leaf has a label
changed. Nodes are dual-stack (/24 + /64), one InternalIP each, annotated onto leaf1..leafN ports.
Prints per size the median and max ms per change of both, and the ratio baseline/agent.
No root, no network. Usage: python bench/scale.py [--nodes 500,5000,20000] [--changes 50]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.apply.frr.render import render_frr
from agent.cluster.nodes import cluster_state
from agent.config import AgentConfig, parse_config
from agent.plan.build import plan
from agent.plan.incremental import PlanCache
from agent.vocabulary import SWITCH_PORT_ANNOTATION

PORTS = 48


def config(**fabric: Any) -> AgentConfig:
    """The 48-port leaf; `fabric` adds keys (bench/services_scale.py: service_pools)."""
    return parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.255.0.1"},
        "fabric": {"server_ports": [f"swp{i}" for i in range(1, PORTS + 1)],
                   "uplinks": ["swp49", "swp50", "swp51", "swp52"],
                   "pod_supernets": ["10.0.0.0/8", "fd00:10:244::/48"],
                   "node_networks": ["192.168.0.0/16", "fd00:192:168::/48"], **fabric}})


def node(i: int, gen: int = 0, cordoned: bool = False) -> dict[str, Any]:
    leaf, port = divmod(i, PORTS)
    v6 = ipaddress.ip_network(f"fd00:10:244:{i:x}::/64")
    return {"metadata": {"name": f"node-{i:05d}",
                         "creationTimestamp": f"2026-01-01T{i // 3600 % 24:02d}:"
                                              f"{i // 60 % 60:02d}:{i % 60:02d}Z",
                         "labels": {"kubernetes.io/hostname": f"node-{i:05d}", "gen": str(gen)},
                         "annotations": {SWITCH_PORT_ANNOTATION: f"leaf{leaf + 1}/swp{port + 1}"}},
            "spec": {"podCIDRs": [f"10.{i >> 8}.{i & 255}.0/24", str(v6)],
                     "unschedulable": cordoned},
            "status": {"addresses": [{"type": "InternalIP",
                                      "address": f"192.168.{(i + 1) >> 8}.{(i + 1) & 255}"}]}}


def changes(n: int, count: int) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for k in range(count):
        if k % 2 == 0:
            i = (k // 2) % PORTS
            out.append((i, node(i, cordoned=(k // 2 // PORTS) % 2 == 0)))
        else:
            i = PORTS + (k * 7919) % (n - PORTS)
            out.append((i, node(i, gen=k)))
    return out


def measure(n: int, count: int, baseline_count: int) -> None:
    cfg = config()
    store = [node(i) for i in range(n)]
    cache = PlanCache()
    render_frr(cache.plan(cfg, store)[1].frr)  # the first plan, after sync: from scratch
    agent_ms = []
    for i, obj in changes(n, count):
        store[i] = obj
        start = time.perf_counter()
        _, result = cache.plan(cfg, tuple(store))
        render_frr(result.frr)
        agent_ms.append((time.perf_counter() - start) * 1000)
    base_ms = []
    for i, obj in changes(n, baseline_count):
        store[i] = obj
        start = time.perf_counter()
        scratch = plan(cfg, cluster_state(tuple(store)))
        render_frr(scratch.frr)
        base_ms.append((time.perf_counter() - start) * 1000)
    # Same inputs, same result: the speed is not bought with a different plan.
    assert cache.plan(cfg, tuple(store))[1] == scratch
    a, b = statistics.median(agent_ms), statistics.median(base_ms)
    print(f"{n:>6} nodes: agent {a:8.1f} ms/change (max {max(agent_ms):.1f}, {count} changes)"
          f" | baseline from scratch {b:9.1f} ms/change (max {max(base_ms):.1f},"
          f" {baseline_count} changes) | ratio {b / a:7.1f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="500,5000,20000")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--baseline-changes", type=int, default=3)
    args = parser.parse_args()
    for n in (int(x) for x in args.nodes.split(",")):
        measure(n, args.changes, args.baseline_changes)


if __name__ == "__main__":
    main()
