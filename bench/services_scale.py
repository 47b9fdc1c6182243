"""Service VIPs at scale (issue 12): memory and plan time with 5,000 Services and 100,000
endpoints in the API, on a 48-port leaf of a 5,000-Node cluster.

Services are LoadBalancers with one VIP each from the pool (every other one Local), each with one
EndpointSlice of 20 endpoints spread over the cluster's Nodes (Local ones keep some on this
leaf's nodes). Memory: the informer stores' slim objects plus what the plan cache keeps, measured
with tracemalloc, against the raw objects as the API sends them (what a store without slimming
would hold), in the same run. Plan time per change: one EndpointSlice replaced (a Local
Service's endpoint moving between two of this leaf's nodes, or a slice elsewhere changing), then
plan + render through the PlanCache as the daemon does, against cluster_state + service_state +
plan() from scratch, in the same run; the two plans must be equal. No root.
Usage: python bench/services_scale.py [--services 5000] [--endpoints 20] [--changes 30]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.apply.frr.render import render_frr
from agent.cluster.nodes import cluster_state
from agent.cluster.services import service_state
from agent.informers.services import slim_endpoint_slice, slim_service
from agent.plan.build import plan
from agent.plan.incremental import PlanCache
from bench.scale import PORTS, node
from bench.scale import config as leaf_config

POOL = ipaddress.ip_network("198.18.0.0/15")
NODES = 5000


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return obj


def service(i: int) -> dict[str, Any]:
    """As the API sends it (managed fields and annotations included: what slimming drops)."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i:05d}", "namespace": "bench", "uid": f"{i:032x}",
                         "resourceVersion": str(10_000 + i),
                         "creationTimestamp": f"2026-02-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                         "annotations": {"metallb.universe.tf/ip-allocated-from-pool": "pool",
                                         "kubectl.kubernetes.io/last-applied-configuration":
                                             "{" + "x" * 600 + "}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Update",
                                            "fieldsV1": {"f:spec": {"f:ports": {}}}}] * 3},
            "spec": {"type": "LoadBalancer", "clusterIP": f"10.96.{i >> 8}.{i & 255}",
                     "externalTrafficPolicy": "Local" if i % 2 else "Cluster",
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP",
                                "nodePort": 30000 + i % 2000}],
                     "selector": {"app": f"svc-{i:05d}"}, "sessionAffinity": "None"},
            "status": {"loadBalancer": {"ingress": [{"ip": str(POOL[i + 1]),
                                                     "ipMode": "VIP"}]}}}


def endpoint_slice(i: int, endpoints: int, shift: int = 0) -> dict[str, Any]:
    """Local Services keep two endpoints on this leaf's nodes (node-00000..00047)."""
    nodes = [(i * 7 + k * 251 + shift) % NODES for k in range(endpoints)]
    if i % 2:
        nodes[:2] = [(i + shift) % PORTS, (i + shift + 1) % PORTS]
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"svc-{i:05d}-abcde", "namespace": "bench",
                         "resourceVersion": str(20_000 + i + shift),
                         "labels": {"kubernetes.io/service-name": f"svc-{i:05d}",
                                    "endpointslice.kubernetes.io/managed-by":
                                        "endpointslice-controller.k8s.io"}},
            "endpoints": [{"addresses": [f"10.{n >> 8}.{n & 255}.{k + 2}"],
                           "conditions": {"ready": True, "serving": True, "terminating": False},
                           "nodeName": f"node-{n:05d}",
                           "targetRef": {"kind": "Pod", "namespace": "bench",
                                         "name": f"svc-{i:05d}-{k}", "uid": f"{i:016x}{k:016x}"}}
                          for k, n in enumerate(nodes)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def size_of(build: Any) -> tuple[Any, float]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    value = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return value, (after - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--baseline-changes", type=int, default=3)
    args = parser.parse_args()
    n, e = args.services, args.endpoints
    cfg = leaf_config(service_pools=[str(POOL)])
    nodes = tuple(ready(node(i)) for i in range(NODES))

    raw, raw_mib = size_of(lambda: ([service(i) for i in range(n)],
                                    [endpoint_slice(i, e) for i in range(n)]))
    raw_services, raw_slices = raw
    (services, slices), slim_mib = size_of(lambda: (
        [slim_service(o) for o in raw_services], [slim_endpoint_slice(o) for o in raw_slices]))
    raw_services.clear()  # the raw objects are only measured, never stored
    raw_slices.clear()
    cache = PlanCache()
    t0 = time.perf_counter()
    (_, first), plan_mib = size_of(lambda: cache.plan(cfg, nodes, services=tuple(services),
                                                      endpoint_slices=tuple(slices)))
    first_s = time.perf_counter() - t0
    text = render_frr(first.frr)
    admitted = sum(1 for v in first.services if v.refused is None)
    print(f"{n} Services, {n * e} endpoints, {NODES} Nodes, {PORTS} ports: {admitted} VIPs "
          f"admitted, first plan {first_s:.2f} s, frr.conf {len(text.splitlines())} lines")
    print(f"memory: slim stores {slim_mib:.1f} MiB + plan cache {plan_mib:.1f} MiB; raw objects "
          f"{raw_mib:.1f} MiB (slim/raw {slim_mib / raw_mib:.2f}x)")

    def change(k: int) -> None:
        # Even k: a Local Service of this leaf moves its endpoints; odd: a slice elsewhere.
        i = (2 * k + 1) % n if k % 2 == 0 else (2 * k) % n
        slices[i] = slim_endpoint_slice(endpoint_slice(i, e, shift=k + 1))

    agent_ms = []
    for k in range(args.changes):
        change(k)
        start = time.perf_counter()
        _, result = cache.plan(cfg, nodes, services=tuple(services),
                               endpoint_slices=tuple(slices))
        render_frr(result.frr)
        agent_ms.append((time.perf_counter() - start) * 1000)
    base_ms = []
    for k in range(args.changes, args.changes + args.baseline_changes):
        change(k)
        start = time.perf_counter()
        scratch = plan(cfg, cluster_state(nodes), services=service_state(services, slices))
        render_frr(scratch.frr)
        base_ms.append((time.perf_counter() - start) * 1000)
    assert cache.plan(cfg, nodes, services=tuple(services),
                      endpoint_slices=tuple(slices))[1] == scratch, "cache and scratch differ"
    a, b = statistics.median(agent_ms), statistics.median(base_ms)
    print(f"per EndpointSlice change: agent {a:.0f} ms (max {max(agent_ms):.0f}, "
          f"{len(agent_ms)} changes) | from scratch {b:.0f} ms (max {max(base_ms):.0f}, "
          f"{len(base_ms)} changes) | ratio {b / a:.1f}x")


if __name__ == "__main__":
    main()
