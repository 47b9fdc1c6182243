"""The Node informer's store keeps Nodes slimmed to what the agent reads (case 14: raw Nodes made
memory follow the cluster): parse_node answers the same on the slim Node as on the full one,
hostile values stay bounded and are refused with a reason, and 2,000 Nodes carrying 256 KiB of
annotations each cost the store a few MB, measured through the real informer and API test
server."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.cluster.nodes import parse_node
from agent.cluster.selector import selector_matches
from agent.informers.kubeapi import KubeApi, load_kube_config, make_http_client
from agent.informers.node_fields import MAX_LABELS, node_informer, slim_node
from agent.vocabulary import FLANNEL_PREFIX, ROUTING_ANNOTATION, SWITCH_PORT_ANNOTATION
from lab.kubeapi import KubeApiServer
from lab.kubeapi.client import make_node, wait_for
from tests.test_informer import write_kubeconfig

BACKEND_DATA = '{"VNI":1,"VtepMAC":"0e:8a:1c:2b:3d:4e"}'


def kubelet_node(name: str = "worker-1") -> dict[str, Any]:
    """A Node as a real cluster serves it (kubelet, flannel, Calico, kubectl all wrote to it),
    with the fields the agent does not read: the slim Node must lose none the agent does."""
    return {
        "kind": "Node", "apiVersion": "v1",
        "metadata": {
            "name": name, "uid": "6f1c1f5e-3b7a-4c55-9d39-3f0a4b2f8e11",
            "resourceVersion": "918273", "creationTimestamp": "2024-03-01T10:00:00Z",
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "node-role.kubernetes.io/worker": "", "rack": "r1",
                       "node.kubernetes.io/exclude-from-external-load-balancers": "true",
                       "feature.node.kubernetes.io/cpu-cpuid.AVX512F": "true"},
            "annotations": {
                SWITCH_PORT_ANNOTATION: "leaf1/swp3",
                ROUTING_ANNOTATION: "vxlan",
                FLANNEL_PREFIX + "backend-type": "vxlan",
                FLANNEL_PREFIX + "backend-data": BACKEND_DATA,
                FLANNEL_PREFIX + "public-ip": "192.0.2.13",
                FLANNEL_PREFIX + "kube-subnet-manager": "true",
                FLANNEL_PREFIX + "backend-v6-data": '{"VNI":1,"VtepMAC":"0e:8a:1c:2b:3d:4f"}',
                FLANNEL_PREFIX + "public-ipv6": "2001:db8::13",
                "projectcalico.org/IPv4Address": "192.0.2.13/24",
                "projectcalico.org/IPv4VXLANTunnelAddr": "10.244.3.0",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000 + "}",
            },
            "managedFields": [{"manager": "kubelet", "operation": "Update",
                               "fieldsV1": {"f:status": {"f:images": {}}}}] * 5,
        },
        "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24", "fd00:10:244:3::/64"],
                 "providerID": "kind://docker/kind/" + name,
                 "taints": [{"key": "node-role.kubernetes.io/control-plane",
                             "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "Hostname", "address": name},
                          {"type": "InternalIP", "address": "192.0.2.13"},
                          {"type": "ExternalIP", "address": "198.51.100.13"},
                          {"type": "InternalIP", "address": "2001:db8::13"}],
            "conditions": [{"type": t, "status": s, "reason": "KubeletReady",
                            "lastHeartbeatTime": "2024-03-02T10:00:00Z",
                            "message": "kubelet is posting ready status"}
                           for t, s in (("MemoryPressure", "False"), ("DiskPressure", "False"),
                                        ("PIDPressure", "False"), ("Ready", "True"))],
            "capacity": {"cpu": "64", "memory": "263921512Ki", "pods": "110"},
            "allocatable": {"cpu": "63", "memory": "261722984Ki", "pods": "110"},
            "images": [{"names": [f"registry.example/image-{i}@sha256:{'ab' * 32}"],
                        "sizeBytes": 123456789} for i in range(50)],
            "nodeInfo": {"kubeletVersion": "v1.30.2", "kernelVersion": "6.1.0-18-amd64"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


def with_(node: dict[str, Any], *path_value: Any) -> dict[str, Any]:
    """A deep copy of `node` with path_value[:-1] set to path_value[-1]."""
    out = copy.deepcopy(node)
    *path, value = path_value
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


BASE = kubelet_node()
ANN = ("metadata", "annotations")

# Everything parse_node reads, with values a hostile or broken cluster (or a proxy) produces that
# still fit the slim Node's bounds: parse_node must give exactly the same Node and refusals.
SAME = {
    "kubelet node": BASE,
    "lab node": make_node("n1", pod_cidrs=["10.0.1.0/24"], internal_ip="10.0.0.1",
                          unschedulable=True, annotations={SWITCH_PORT_ANNOTATION: "leaf1/swp1"}),
    "no metadata": {"spec": {}},
    "metadata not a dict": with_(BASE, "metadata", ["x"]),
    "name with newline": with_(BASE, "metadata", "name", "evil\nnode"),
    "name not a string": with_(BASE, "metadata", "name", 42),
    "annotations not a dict": with_(BASE, *ANN, "switch-port"),
    "annotation not a string": with_(BASE, *ANN, {SWITCH_PORT_ANNOTATION: {"a": 1},
                                                  ROUTING_ANNOTATION: 7}),
    "bad routing": with_(BASE, *ANN, ROUTING_ANNOTATION, "ospf; rm -rf /"),
    "bad switch-port": with_(BASE, *ANN, SWITCH_PORT_ANNOTATION, "leaf1/swp3\nrouter bgp 1"),
    "backend-data nested": with_(BASE, *ANN, FLANNEL_PREFIX + "backend-data", "[" * 1000),
    "public-ip-overwrite": with_(BASE, *ANN, FLANNEL_PREFIX + "public-ip-overwrite",
                                 "203.0.113.7"),
    "labels with non-strings": with_(BASE, "metadata", "labels", {"a": 1, "b": "x", "c": None}),
    "podCIDRs not a list": with_(BASE, "spec", "podCIDRs", "10.244.3.0/24"),
    "podCIDRs null": with_(BASE, "spec", "podCIDRs", None),
    "podCIDRs of 9": with_(BASE, "spec", "podCIDRs", [f"10.244.{i}.0/24" for i in range(9)]),
    "podCIDR only": with_(BASE, "spec", {"podCIDR": "10.244.7.0/24"}),
    "bad CIDRs": with_(BASE, "spec", "podCIDRs", ["10.244.3.1/24", None, 5, "fe80::/64"]),
    "unschedulable true": with_(BASE, "spec", "unschedulable", True),
    "unschedulable string": with_(BASE, "spec", "unschedulable", "true"),
    "spec not a dict": with_(BASE, "spec", "x"),
    "addresses not a list": with_(BASE, "status", "addresses", {"type": "InternalIP"}),
    "bad addresses": with_(BASE, "status", "addresses",
                           ["x", {"type": "InternalIP", "address": "fe80::1%swp4"},
                            {"type": "InternalIP"}, {"type": "InternalIP", "address": "10.0.0.9"}]),
    "status not a dict": with_(BASE, "status", []),
    "creationTimestamp not a string": with_(BASE, "metadata", "creationTimestamp", 17),
    "not a dict": ["a", "list"],
}

BIG = "y" * (256 * 1024)
# Values over the bounds: the slim Node keeps a marker, so parse_node gives the same Node and the
# same refusals by kind and subject; only the reasons' wording may differ (it names the size).
BOUNDED = {
    "name of 256 KiB": with_(BASE, "metadata", "name", BIG),
    "switch-port of 256 KiB": with_(BASE, *ANN, SWITCH_PORT_ANNOTATION, BIG),
    "routing of 256 KiB": with_(BASE, *ANN, ROUTING_ANNOTATION, BIG),
    "backend-data of 1025 bytes": with_(BASE, *ANN, FLANNEL_PREFIX + "backend-data",
                                        "[" * 1025),
    "backend-data of 256 KiB": with_(BASE, *ANN, FLANNEL_PREFIX + "backend-data", BIG),
    "public-ip of 256 KiB": with_(BASE, *ANN, FLANNEL_PREFIX + "public-ip", BIG),
    "podCIDRs of 100,000": with_(BASE, "spec", "podCIDRs", ["10.244.3.0/24"] * 100_000),
    "podCIDR as an object": with_(BASE, "spec", {"podCIDR": {"x": BIG}}),
    "address of 256 KiB": with_(BASE, "status", "addresses",
                                [{"type": "InternalIP", "address": BIG}]),
    "labels not a dict": with_(BASE, "metadata", "labels", BIG),
}


@pytest.mark.parametrize("name", SAME)
def test_parse_node_reads_the_same_from_the_slim_node(name: str) -> None:
    node = SAME[name]
    assert parse_node(slim_node(node)) == parse_node(node)


@pytest.mark.parametrize("name", BOUNDED)
def test_oversized_values_are_bounded_and_still_refused(name: str) -> None:
    node = BOUNDED[name]
    slim = slim_node(node)
    assert len(json.dumps(slim)) < 4096
    parsed, refusals = parse_node(slim)
    want_parsed, want_refusals = parse_node(node)
    assert parsed == want_parsed
    assert [r.kind for r in refusals] == [r.kind for r in want_refusals]


def test_an_oversized_annotation_is_refused_naming_its_size() -> None:
    _, refusals = parse_node(slim_node(with_(BASE, *ANN, SWITCH_PORT_ANNOTATION, BIG)))
    assert any(str(len(BIG)) in r.reason and SWITCH_PORT_ANNOTATION in r.reason
               for r in refusals), refusals


def test_the_slim_node_drops_what_nobody_reads() -> None:
    slim = slim_node(BASE)
    assert set(slim["metadata"]["annotations"]) == {
        SWITCH_PORT_ANNOTATION, ROUTING_ANNOTATION, FLANNEL_PREFIX + "backend-type",
        FLANNEL_PREFIX + "backend-data", FLANNEL_PREFIX + "public-ip"}
    assert "managedFields" not in slim["metadata"]
    assert set(slim["spec"]) == {"podCIDR", "podCIDRs"}
    assert set(slim["status"]) == {"addresses", "conditions"}
    assert slim["status"]["conditions"][-1] == {"type": "Ready", "status": "True"}
    assert len(json.dumps(slim)) < len(json.dumps(BASE)) / 10
    assert slim_node(BASE) == slim  # pure: same answer, input untouched
    assert BASE == kubelet_node()


def test_a_heartbeat_alone_is_no_change() -> None:
    """The informer notifies only when the stored object changes: a kubelet status update that
    moves only resourceVersion and timestamps must cost no reconcile."""
    beat = with_(BASE, "metadata", "resourceVersion", "918274")
    beat["status"]["conditions"][-1]["lastHeartbeatTime"] = "2024-03-02T10:05:00Z"
    assert slim_node(beat) == slim_node(BASE)
    assert slim_node(with_(BASE, "spec", "unschedulable", True)) != slim_node(BASE)


def test_labels_are_bounded_keeping_the_well_known_ones() -> None:
    labels = {f"feature.example.com/f{i:04}": "true" for i in range(2 * MAX_LABELS)}
    labels |= {"zz.kubernetes.io/hostname": "x", "kubernetes.io/hostname": "worker-1",
               "node.kubernetes.io/exclude-from-external-load-balancers": "true",
               "rack": "r" * 64}  # a value over the API's 63 characters
    kept = slim_node(with_(BASE, "metadata", "labels", labels))["metadata"]["labels"]
    assert len(kept) == MAX_LABELS
    assert selector_matches("kubernetes.io/hostname=worker-1", kept)
    assert selector_matches("node.kubernetes.io/exclude-from-external-load-balancers", kept)
    assert "rack" not in kept


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
async def api(server: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:
    config = load_kube_config(str(write_kubeconfig(tmp_path / "kubeconfig", server.url)))
    kube = KubeApi(make_http_client(config, timeout=5.0), watch_read_grace=5.0)
    yield kube
    await kube.aclose()


async def test_the_daemons_node_informer_stores_slim_nodes(
    server: KubeApiServer, api: KubeApi
) -> None:
    informer = node_informer(api, label_selector=None, on_change=lambda: None,
                             watch_timeout=300.0)
    task = asyncio.create_task(informer.run())
    try:
        await wait_for(lambda: informer.synced and informer.connected)
        server.create("nodes", kubelet_node())
        await wait_for(lambda: "worker-1" in informer.store)
        assert informer.store["worker-1"] == slim_node(server.get("nodes", "worker-1"))
        assert "managedFields" not in informer.store["worker-1"]["metadata"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_2000_nodes_with_256_kib_annotations_cost_the_store_a_few_mb(api: KubeApi) -> None:
    """Memory, measured with tracemalloc: the daemon's Node informer fed 2,000 ADDED events, each
    decoded from its own JSON line (fresh strings, as from the API server) and handed to the
    informer as its watch loop does (_apply). Each Node carries 256 KiB of annotations nobody
    reads. Raw (before slimming), the store held ~530 MB; the switch's MemoryMax is 256 MB. (The
    same over HTTP is covered above for one Node; 512 MB through the test server under
    tracemalloc takes minutes.)"""
    informer = node_informer(api, label_selector=None, on_change=lambda: None,
                             watch_timeout=300.0)
    # 4 x 64 KiB, encoded once and spliced into each line (json.dumps of 512 MB takes seconds).
    junk = json.dumps({f"example.com/blob-{i}": "z" * (64 * 1024) for i in range(4)})[1:-1]
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            node = make_node(f"node-{i:04}", pod_cidrs=[f"10.{i // 256}.{i % 256}.0/24"],
                             annotations={SWITCH_PORT_ANNOTATION: f"leaf1/swp{i % 48 + 1}",
                                          "junk": ""})
            line = json.dumps({"type": "ADDED", "object": node}).replace('"junk": ""', junk)
            del node
            event = json.loads(line)
            assert len(line) > 256 * 1024
            del line
            informer._apply(event["type"], event["object"])
            del event
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(informer.store) == 2000
    assert used < 10 * 1024 * 1024, f"store holds {used / 2**20:.1f} MiB for 2,000 Nodes"
    node, _ = parse_node(informer.store["node-0042"])
    assert node is not None and node.switch_port is not None
    assert node.switch_port.port == "swp43"
