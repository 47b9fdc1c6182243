"""The agent's memory after sync with a big cluster in the API, and a churn of Node updates
(issue 15), against a real kube-apiserver + etcd (lab/controlplane.py, built by lab/k8s/build.sh).

As root: the lab (prefix "kfamem") with the agent on leaf1, exactly as the main job runs it.
The baseline is measured first in the same run: the agent's RSS once synced with only the lab's
three Nodes. Then the API gets --nodes Nodes (the lab's three among them, the others cabled to
other leaves' ports, dual-stack-free /24s) and --pods Pods spread evenly over all Nodes, through
parallel clients; the agent's RSS is read once it has synced all of them (its status file) and
printed with the ratio to the baseline. Pods of other leaves' nodes are never sent to the agent
(a field-selected watch per attached node), so they cost it nothing: that is the design.

Then a churn: --rate label updates per second on random Nodes of other leaves for --seconds,
paced by the clock. Printed: updates offered and done, the agent's reconcile passes (its log),
its CPU % over the window (utime + stime from /proc), and the lag when the churn stops: how far
the agent's resourceVersion is behind the API's and how long it takes to catch up (a growing
backlog would show as a long catch-up). Targets (issue 15): RSS <= 150 MB with 5,000 Nodes and
100,000 Pods; the reconcile keeps up with 50 updates/s.
Usage: .venv/bin/python bench/memory_churn.py [--nodes 5000] [--pods 100000] [--rate 50]
       [--seconds 60] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.agent_lab import SERVERS, AgentLab
from lab.kubeapi.client import KubeApiClient, make_node, make_pod

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def other_node(i: int) -> dict[str, Any]:
    """Node i of another leaf: its own /24 in 10.0.0.0/8, an InternalIP in 192.168.0.0/16."""
    return make_node(
        f"node-{i:05d}", pod_cidrs=[f"10.{100 + i // 256}.{i % 256}.0/24"],
        internal_ip=f"192.168.{20 + i // 250}.{i % 250 + 1}",
        annotations={"kube-fabric-agent.io/switch-port": f"leaf{2 + i // 48}/swp{i % 48 + 1}"})


def in_parallel(env: AgentLab, workers: int, jobs: Iterable[Callable[[KubeApiClient], Any]]
                ) -> float:
    """Run every job with one of `workers` admin clients; returns the seconds it took."""
    assert env.control_plane is not None
    local = threading.local()
    clients: list[KubeApiClient] = []

    def run(job: Callable[[KubeApiClient], Any]) -> None:
        if not hasattr(local, "client"):
            local.client = env.control_plane.client()  # type: ignore[union-attr]
            clients.append(local.client)
        job(local.client)

    t0 = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(run, job) for job in jobs]:
            future.result()
    for client in clients:
        client.close()
    return time.monotonic() - t0


def synced_with(env: AgentLab, nodes: int) -> bool:
    k = env.status().get("kubernetes", {})
    return bool(k.get("synced")) and k.get("nodes") == nodes


def caught_up(env: AgentLab, timeout: float) -> tuple[int, float]:
    """Wait until the agent's Node resourceVersion reaches the API's latest; returns how many
    resourceVersions it was behind and how long it took."""
    latest = int(env.api.list_nodes(limit="1")["metadata"]["resourceVersion"])

    def agent_rv() -> int:
        return int(env.status().get("kubernetes", {}).get("resource_version") or 0)

    behind, t0 = latest - agent_rv(), time.monotonic()
    env.wait(lambda: agent_rv() >= latest, timeout, "the agent caught up with the API")
    return behind, time.monotonic() - t0


def bench(args: argparse.Namespace) -> None:
    fabric = {"pod_supernets": ["10.0.0.0/8"], "node_networks": ["192.168.0.0/16"]}
    with AgentLab(prefix="kfamem", api="real", **fabric) as env:
        assert env.agent_proc is not None
        pid = env.agent_proc.pid
        print(env.api_description())
        for name in SERVERS:
            env.add_server_node(name)
        env.wait(lambda: synced_with(env, len(SERVERS)), 60.0, "the agent synced")
        env.wait(lambda: env.status().get("frr_last_apply"), 60.0, "a first FRR apply")
        baseline = rss_mib(pid)

        others = args.nodes - len(SERVERS)
        took = in_parallel(env, args.workers,
                           (lambda c, i=i: c.request("POST", "/api/v1/nodes", other_node(i))
                            for i in range(others)))
        print(f"created {others} Nodes in {took:.0f} s ({others / took:.0f}/s)")
        names = [*SERVERS, *(f"node-{i:05d}" for i in range(others))]
        env.api.ensure_namespace("bench")
        took = in_parallel(env, args.workers, (
            lambda c, i=i: c.request("POST", "/api/v1/namespaces/bench/pods", make_pod(
                f"pod-{i:06d}", "bench", node_name=names[i % len(names)]))
            for i in range(args.pods)))
        print(f"created {args.pods} Pods in {took:.0f} s ({args.pods / took:.0f}/s)")
        t0 = time.monotonic()
        env.wait(lambda: synced_with(env, args.nodes), 600.0, f"the agent knowing {args.nodes}")
        print(f"agent synced {args.nodes} Nodes {time.monotonic() - t0:.1f} s after the last "
              "create")
        caught_up(env, 120.0)
        synced = rss_mib(pid)
        print(f"\nRSS of the agent: {synced:.0f} MiB with {args.nodes} Nodes and {args.pods} "
              f"Pods in the API; {baseline:.0f} MiB with {len(SERVERS)} Nodes "
              f"(ratio {synced / baseline:.2f}x; target <= 150 MB)")

        churn(env, pid, [f"node-{i:05d}" for i in range(others)], args)


def churn(env: AgentLab, pid: int, names: list[str], args: argparse.Namespace) -> None:
    assert env.control_plane is not None
    rng = random.Random(7)
    passes_before = env.agent_log.read_text().count("change to applied state")
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    total = int(args.rate * args.seconds)
    done = 0
    with ThreadPoolExecutor(args.workers) as pool:
        client_of: dict[int, KubeApiClient] = {}

        def patch(i: int) -> None:
            tid = threading.get_ident()
            if tid not in client_of:
                client_of[tid] = env.control_plane.client()  # type: ignore[union-attr]
            client_of[tid].patch_node(rng.choice(names), {"metadata": {"labels": {
                "bench-churn": str(i)}}})

        futures = []
        for i in range(total):
            # Paced by the clock: update i is due at t0 + i / rate, never a burst to catch up.
            delay = t0 + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(patch, i))
        for future in futures:
            future.result()
            done += 1
        for client in client_of.values():
            client.close()
    window = time.monotonic() - t0
    cpu = 100 * (cpu_seconds(pid) - cpu0) / window
    lag_rv, catch_up = caught_up(env, 120.0)
    passes = env.agent_log.read_text().count("change to applied state") - passes_before
    print(f"\nchurn: {done}/{total} Node updates in {window:.1f} s "
          f"({done / window:.1f}/s offered {args.rate}/s); agent CPU {cpu:.0f} % of one core; "
          f"{passes} reconcile passes ({passes / window:.1f}/s, coalesced); at the end "
          f"{lag_rv} resourceVersions behind, caught up in {catch_up:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the lab builds network namespaces and starts FRR")
    bench(args)


if __name__ == "__main__":
    main()
