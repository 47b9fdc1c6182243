"""The status service during a burst of Nodes: does the agent still answer while it ingests and
plans a big cluster? Run by hand, as root (it builds the namespace lab under its own prefix):

    .venv/bin/python bench/status_under_burst.py [--nodes 10000] [--seconds 90]

The agent runs on leaf1 of the lab (lab/agent_lab.py) with the lab's Nodes; then `--nodes` more
Nodes (other racks' servers, as in a big cluster: each with a pod CIDR, an InternalIP and an
attachment to another leaf) are created through the API test server as fast as it takes them.
Throughout, a client calls GetStatus on the agent's socket every 100 ms, as `fabricctl status`
does. Printed: GetStatus latency idle (the baseline, same run) and during the burst and the
planning that follows (p50, p99, max), with the ratio; how many calls took over 1 s (the
issue's bound) and whether the agent noticed every Node.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.status.grpc_gen import status_pb2 as pb
from agent.status.grpc_gen import status_pb2_grpc as pb_grpc
from lab.agent_lab import SERVERS, AgentLab
from lab.kubeapi.client import KubeApiClient

BOUND_SECONDS = 1.0


def sample(stub: pb_grpc.FabricStatusStub, stop: threading.Event, out: list[float],
           nodes_seen: list[int]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            reply = stub.GetStatus(pb.GetStatusRequest(), timeout=30)
            nodes_seen.append(reply.kubernetes.nodes)
        except grpc.RpcError as exc:
            print(f"GetStatus failed: {exc.code()}", flush=True)
            out.append(30.0)
            continue
        out.append(time.perf_counter() - start)
        stop.wait(0.1)


def create_nodes(base_url: str, count: int, workers: int = 8) -> float:
    start = time.monotonic()
    local = threading.local()  # one connection per worker, not one per Node

    def make(i: int) -> None:
        if not hasattr(local, "api"):
            local.api = KubeApiClient(base_url)
        api = local.api
        cidr = ipaddress.ip_network("10.244.128.0/31")
        cidr = ipaddress.ip_network(f"{cidr.network_address + 2 * i}/31")  # pod space
        api.create_node(f"burst-{i}", pod_cidrs=[str(cidr)],
                        internal_ip=f"192.168.{100 + i // 256}.{i % 256}",
                        annotations={"kube-fabric-agent.io/switch-port":
                                     f"leaf{2 + i // 48}/swp{1 + i % 48}"})

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for chunk in range(0, count, 500):
            list(pool.map(make, range(chunk, min(count, chunk + 500))))
    return time.monotonic() - start


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"max {ordered[-1] * 1000:7.1f} ms  ({len(ordered)} calls)")


def run(nodes: int, seconds: float) -> int:
    # Every Node's InternalIP in fabric.node_networks, as in a cluster configured for it.
    with AgentLab(prefix="burst", node_networks=["192.168.0.0/16"]) as env:
        for name in SERVERS:
            env.add_server_node(name)
        env.wait(lambda: env.status().get("frr_last_apply"), 60.0, "the agent's first apply")
        channel = grpc.insecure_channel(f"unix:{env.workdir / 'agent.sock'}")
        stub = pb_grpc.FabricStatusStub(channel)
        idle: list[float] = []
        seen: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(stub, stop, idle, seen))
        sampler.start()
        time.sleep(10)  # the baseline: 10 s of an idle agent
        stop.set()
        sampler.join()

        busy: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(stub, stop, busy, seen))
        sampler.start()
        took = create_nodes(f"http://127.0.0.1:{env.api_port}", nodes)
        print(f"created {nodes} Nodes in {took:.1f} s", flush=True)
        deadline = time.monotonic() + seconds
        total = nodes + len(SERVERS)
        while time.monotonic() < deadline and (not seen or seen[-1] < total):
            time.sleep(0.5)
        time.sleep(5)  # and the planning that the last Node triggers
        stop.set()
        sampler.join()
        channel.close()
        print(f"GetStatus idle:   {quantiles(idle)}")
        print(f"GetStatus burst:  {quantiles(busy)}")
        print(f"ratio burst/idle (p99): "
              f"{sorted(busy)[int(len(busy) * 0.99)] / sorted(idle)[int(len(idle) * 0.99)]:.1f}")
        over = sum(v > BOUND_SECONDS for v in busy)
        print(f"calls over {BOUND_SECONDS:.0f} s: {over}; Nodes the agent knew at the end: "
              f"{seen[-1] if seen else 0} of {total}")
        return 1 if over else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=90.0,
                        help="how long to wait for the agent to know every Node")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the lab builds network namespaces", file=sys.stderr)
        return 1
    return run(args.nodes, args.seconds)


if __name__ == "__main__":
    sys.exit(main())
