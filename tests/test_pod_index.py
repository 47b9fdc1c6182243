"""Pod visibility: validation of hostile Pods, the index, the per-node watch selector, locate()."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.cluster.pod_index import (
    PODS_PATH,
    PodIndex,
    parse_pod,
    pod_field_selector,
    slim_pod,
    watched_nodes_diff,
)
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi, load_kube_config, make_http_client
from agent.status.locate import locate
from agent.status.model import AttachmentInfo, InvalidQuery, NotFound, RouteInfo
from lab.kubeapi import KubeApiServer
from lab.kubeapi.client import make_pod, wait_for
from tests.fake_status import ATTACHMENTS, ROUTES, FakeProvider, pod
from tests.test_informer import write_kubeconfig

# ---- parse_pod: hostile input ----


def reasons(refusals: Any) -> str:
    return " | ".join(f"{r.name}: {r.reason}" for r in refusals)


def test_a_plain_dual_stack_pod() -> None:
    info, refusals = parse_pod(pod("web-1", "shop", "node-a", ["10.244.1.17", "FD00::17"]))
    assert refusals == []
    assert info is not None
    assert (info.key, info.node, info.phase) == ("shop/web-1", "node-a", "Running")
    assert info.ips == ("10.244.1.17", "fd00::17")  # canonical form


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("shop", "web-1\n"),  # `$` would accept this trailing newline
        ("shop", "web\nrouter bgp 65000"),
        ("Shop", "web-1"),  # capitals
        ("shop", "web 1"),
        ("shop", ""),
        ("shop", None),
        ("shop\n", "web-1"),
        ("a" * 64, "web-1"),  # namespace longer than a DNS label
        ("shop", "x" * 254),
        ("shop", "-web"),
        (None, "web-1"),
    ],
)
def test_pods_with_bad_names_are_refused_whole(namespace: Any, name: Any) -> None:
    obj = pod("web-1", "shop", "node-a", ["10.244.1.17"])
    obj["metadata"]["namespace"] = namespace
    obj["metadata"]["name"] = name
    info, refusals = parse_pod(obj)
    assert info is None
    assert len(refusals) == 1 and refusals[0].kind == "pod"
    assert "\n" not in refusals[0].name and "\n" not in refusals[0].reason


@pytest.mark.parametrize(
    "node", ["node-a\n", "node-a\nrouter bgp 1", "NODE-A", "node_a", 7, ["node-a"]]
)
def test_pods_with_a_bad_node_name_are_refused(node: Any) -> None:
    obj = pod("web-1", "shop", "node-a", ["10.244.1.17"])
    obj["spec"]["nodeName"] = node
    info, refusals = parse_pod(obj)
    assert info is None
    assert "spec.nodeName" in reasons(refusals)


@pytest.mark.parametrize(
    "bad_ip",
    [
        "10.244.1.300",
        "10.244.1.7\n",
        " 10.244.1.7",
        "010.244.1.7",
        "fe80::1%eth0",
        "fe80::1",
        "127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::",
        "10.244.1.0/24",
        "",
        17,
        None,
    ],
)
def test_a_bad_pod_ip_is_refused_and_the_pod_kept(bad_ip: Any) -> None:
    obj = pod("web-1", "shop", "node-a")
    obj["status"]["podIPs"] = [{"ip": bad_ip}, {"ip": "fd00::17"}]
    info, refusals = parse_pod(obj)
    assert info is not None and info.ips == ("fd00::17",)
    assert len(refusals) == 1 and "pod IP" in refusals[0].reason
    assert "\n" not in refusals[0].reason


def test_pod_ip_is_used_when_pod_ips_is_absent_and_garbage_is_survived() -> None:
    obj = pod("web-1", "shop", "node-a")
    obj["status"]["podIP"] = "10.244.1.17"
    assert parse_pod(obj)[0].ips == ("10.244.1.17",)  # type: ignore[union-attr]
    obj["status"]["podIPs"] = "10.244.1.18"  # not a list
    info, refusals = parse_pod(obj)
    assert info is not None and info.ips == ("10.244.1.17",)
    assert "not a list" in reasons(refusals)
    for garbage in (None, 3, "x", [], {"metadata": "x"}, {"metadata": {"name": 1}}):
        assert parse_pod(garbage)[0] is None


def test_unscheduled_pods_are_skipped_silently_and_odd_phases_become_unknown() -> None:
    obj = pod("web-1", "shop", "node-a")
    del obj["spec"]["nodeName"]
    assert parse_pod(obj) == (None, [])
    obj = pod("web-1", "shop", "node-a", ["10.244.1.17"], phase="Running\x1b[2J")
    info, refusals = parse_pod(obj)
    assert info is not None and info.phase == "Unknown"
    assert "\x1b" not in reasons(refusals)


def test_more_than_two_ips_are_cut() -> None:
    obj = pod("web-1", "shop", "node-a", ["10.244.1.1", "fd00::1", "10.244.1.2"])
    info, refusals = parse_pod(obj)
    assert info is not None and info.ips == ("10.244.1.1", "fd00::1")
    assert "only the first 2" in reasons(refusals)


# ---- the index ----


def test_host_network_pods_are_found_by_name_never_by_ip() -> None:
    index = PodIndex()
    index.replace_node("node-a", [
        pod("kube-proxy-1", "kube-system", "node-a", ["192.168.10.11"], host_network=True),
        pod("web-1", "shop", "node-a", ["10.244.1.17"]),
    ])
    assert index.by_ip("192.168.10.11") is None
    assert index.get("kube-system", "kube-proxy-1") is not None
    assert index.by_ip("10.244.1.17").key == "shop/web-1"  # type: ignore[union-attr]
    assert index.count("node-a") == 2


def test_an_ordinary_pod_claiming_a_node_ip_is_not_indexed_by_it() -> None:
    index = PodIndex()
    index.set_node_ips(["192.168.10.11", "garbage"])
    index.replace_node("node-a", [pod("liar", "shop", "node-a", ["192.168.10.11"])])
    assert index.by_ip("192.168.10.11") is None
    assert "is a node's InternalIP" in reasons(index.refusals())


def test_a_pod_from_another_nodes_watch_is_refused() -> None:
    index = PodIndex()
    diff = index.replace_node("node-a", [pod("web-1", "shop", "node-b", ["10.244.2.5"])])
    assert diff.added == () and len(index) == 0
    assert "arrived on the watch of node node-a" in reasons(index.refusals())


def test_terminal_pods_are_not_indexed() -> None:
    index = PodIndex()
    index.replace_node("node-a", [
        pod("job-1", "jobs", "node-a", ["10.244.1.30"], phase="Succeeded"),
        pod("job-2", "jobs", "node-a", ["10.244.1.31"], phase="Failed"),
    ])
    assert len(index) == 0 and index.by_ip("10.244.1.30") is None


def test_replace_node_reports_what_changed_and_keeps_indexes_consistent() -> None:
    index = PodIndex()
    first = index.replace_node("node-a", [
        pod("web-1", "shop", "node-a", ["10.244.1.17"]),
        pod("web-2", "shop", "node-a", [], phase="Pending"),
    ])
    assert [p.key for p in first.added] == ["shop/web-1", "shop/web-2"] and first.removed == ()
    second = index.replace_node("node-a", [
        pod("web-2", "shop", "node-a", ["10.244.1.18"]),  # got its IP
    ])
    assert [p.key for p in second.added] == ["shop/web-2"]
    assert [p.key for p in second.removed] == ["shop/web-1"]
    assert index.by_ip("10.244.1.17") is None
    assert index.by_ip("10.244.1.18").name == "web-2"  # type: ignore[union-attr]
    assert index.replace_node("node-a", [pod("web-2", "shop", "node-a", ["10.244.1.18"])]) == (
        type(second)()
    )  # nothing changed: no events
    assert [(e.kind, e.subject, e.message) for e in second.events(7.0)] == [
        ("pod_removed", "shop/web-1", "from node-a"),
        ("pod_added", "shop/web-2", "on node-a, 10.244.1.18 (Running)"),
    ]
    dropped = index.drop_node("node-a")
    assert [p.key for p in dropped.removed] == ["shop/web-2"]
    assert len(index) == 0 and index.by_ip("10.244.1.18") is None and index.nodes() == []


def test_an_ip_claimed_twice_goes_to_the_running_pod_and_is_reported() -> None:
    index = PodIndex()
    index.replace_node("node-a", [
        pod("old", "shop", "node-a", ["10.244.1.50"], phase="Pending",
            created="2026-11-20T11:00:00Z"),
        pod("new", "shop", "node-a", ["10.244.1.50"], created="2026-11-20T10:00:00Z"),
    ])
    assert index.by_ip("10.244.1.50").name == "new"  # type: ignore[union-attr]
    assert "also claimed by shop/old" in reasons(index.refusals())


def test_a_pod_recreated_on_another_node_before_the_first_watch_caught_up() -> None:
    index = PodIndex()
    index.replace_node("node-a", [pod("web-1", "shop", "node-a", ["10.244.1.17"],
                                      created="2026-11-20T10:00:00Z")])
    index.replace_node("node-b", [pod("web-1", "shop", "node-b", ["10.244.2.17"],
                                      created="2026-11-20T12:00:00Z")])
    assert index.get("shop", "web-1").node == "node-b"  # type: ignore[union-attr]  # newest
    assert "reported on several nodes" in reasons(index.refusals())
    index.replace_node("node-a", [])  # node-a's watch sees the deletion
    assert index.get("shop", "web-1").node == "node-b"  # type: ignore[union-attr]
    assert index.by_ip("10.244.1.17") is None
    assert index.refusals() == ()


def test_pods_per_node_are_bounded() -> None:
    index = PodIndex(max_pods_per_node=3)
    index.replace_node("node-a", [pod(f"p{i}", "shop", "node-a", [f"10.244.1.{i + 10}"])
                                  for i in range(5)])
    assert index.count("node-a") == 3
    assert "5 pods; only the first 3" in reasons(index.refusals())


def test_pod_field_selector_and_watch_diff() -> None:
    assert pod_field_selector("node-a") == (
        "spec.nodeName=node-a,status.phase!=Succeeded,status.phase!=Failed"
    )
    assert pod_field_selector("node-a.rack1", include_terminal=True) == (
        "spec.nodeName=node-a.rack1"
    )
    for hostile in ("node-a,status.phase=Running", "node-a\n", "", "node=a", "a\\,b"):
        with pytest.raises(ValueError):
            pod_field_selector(hostile)
    assert watched_nodes_diff(["node-a", "node-b"], ["node-b", "node-c"]) == (
        ["node-c"], ["node-a"]
    )


# ---- the per-node watch against the API test server ----


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[KubeApiServer, KubeApi]]:
    async with KubeApiServer(bookmark_interval=0.2) as server:
        config = load_kube_config(str(write_kubeconfig(tmp_path / "kubeconfig", server.url)))
        kube = KubeApi(make_http_client(config, timeout=2.0), watch_read_grace=5.0)
        try:
            yield server, kube
        finally:
            await kube.aclose()


async def test_per_node_pod_watch_caches_only_that_nodes_live_pods(
    api: tuple[KubeApiServer, KubeApi],
) -> None:
    server, kube = api
    server.create("pods", make_pod("web", "shop", node_name="node-a", pod_ip="10.244.1.5"))
    server.create("pods", make_pod("db", "shop", node_name="node-b", pod_ip="10.244.2.5"))
    server.create("pods", make_pod("done", "jobs", node_name="node-a", phase="Succeeded"))
    index = PodIndex()
    informer: Informer

    def changed() -> None:
        index.replace_node("node-a", informer.store.values())

    informer = Informer(kube, PODS_PATH, field_selector=pod_field_selector("node-a"),
                        on_change=changed, backoff_initial=0.02, backoff_max=0.1,
                        rng=random.Random(3))
    task = asyncio.create_task(informer.run())
    try:
        await wait_for(lambda: informer.synced)
        assert set(informer.store) == {"shop/web"}  # node-b's and the finished pod: not cached
        assert index.by_ip("10.244.1.5").key == "shop/web"  # type: ignore[union-attr]
        server.create("pods", make_pod("api", "shop", node_name="node-a", pod_ip="10.244.1.6"))
        await wait_for(lambda: index.by_ip("10.244.1.6") is not None)
        # Finishing leaves the selector: the watch says DELETED and the IP is released.
        server.patch("pods", "web", {"status": {"phase": "Succeeded"}}, namespace="shop")
        await wait_for(lambda: index.by_ip("10.244.1.5") is None)
        assert set(informer.store) == {"shop/api"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- locate ----


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


def attachments(provider: FakeProvider) -> list[AttachmentInfo]:
    return list(provider.attachments())


@pytest.mark.parametrize(
    ("query", "matched", "node", "port", "prefix", "next_hop"),
    [
        ("10.244.1.17", "pod_ip", "node-a", "swp1", "10.244.1.0/24", "fe80::a8c1:abff:fe12:3401"),
        ("fd00:10:244:1::17", "pod_ip", "node-a", "swp1", "fd00:10:244:1::/64",
         "fe80::a8c1:abff:fe12:3401"),
        ("FD00:10:244:1:0::17", "pod_ip", "node-a", "swp1", "fd00:10:244:1::/64",
         "fe80::a8c1:abff:fe12:3401"),
        ("shop/db-0", "pod", "node-b", "swp2", "10.244.2.0/24", "fe80::a8c1:abff:fe12:3402"),
        ("batch-7", "pod", "node-c", "swp3", "10.244.3.0/24", "192.168.10.13"),
        ("node-d", "node", "node-d", "swp4", "", ""),
        ("192.168.10.13", "node_ip", "node-c", "swp3", "", ""),
        ("192.168.10.11", "node_ip", "node-a", "swp1", "192.168.10.11/32", "swp1"),
        ("10.244.3.200", "pod_prefix", "node-c", "swp3", "10.244.3.0/24", "192.168.10.13"),
    ],
)
def test_locate_answers(
    provider: FakeProvider, query: str, matched: str, node: str, port: str, prefix: str,
    next_hop: str,
) -> None:
    result = locate(query, provider.index, attachments(provider), ROUTES)
    assert (result.matched, result.node, result.port) == (matched, node, port)
    assert (result.route_prefix, result.next_hop) == (prefix, next_hop)


def test_locate_vxlan_pod_gives_the_vtep(provider: FakeProvider) -> None:
    result = locate("10.244.4.5", provider.index, attachments(provider), ROUTES)
    assert result.vtep == "192.168.10.14" and result.routing == "vxlan"
    assert result.pod is not None and result.pod.key == "shop/cache-0"


def test_locate_a_host_network_pod_and_its_ip(provider: FakeProvider) -> None:
    by_name = locate("kube-system/kube-proxy-7kq2p", provider.index, attachments(provider))
    assert by_name.pod is not None and by_name.pod.host_network and by_name.port == "swp1"
    # Its IP is the node's: the answer is the node, not the pod.
    by_ip = locate("192.168.10.11", provider.index, attachments(provider))
    assert by_ip.matched == "node_ip" and by_ip.pod is None


@pytest.mark.parametrize(
    "query",
    [
        "node-a\n",
        "shop/db-0\n",
        "shop/db-0/x",
        "Shop/db-0",
        "/db-0",
        "shop/",
        "",
        "x" * 400,
        "swp1; rm -rf /",
        "10.244.1.0/24",
        "\x1b[2J",
    ],
)
def test_locate_refuses_malformed_queries(provider: FakeProvider, query: str) -> None:
    with pytest.raises(InvalidQuery):
        locate(query, provider.index, attachments(provider), ROUTES)


@pytest.mark.parametrize(
    "query", ["10.99.0.1", "shop/nope", "node-z", "2001:db8::1", "fe80::1%swp1"]
)
def test_locate_not_found(provider: FakeProvider, query: str) -> None:
    with pytest.raises((NotFound, InvalidQuery)) as info:
        locate(query, provider.index, attachments(provider), ROUTES)
    if query != "fe80::1%swp1":
        assert info.type is NotFound


def test_locate_ambiguous_name_and_pod_on_unattached_node(provider: FakeProvider) -> None:
    provider.index.replace_node("node-b", [pod("db-0", "shop", "node-b", ["10.244.2.9"]),
                                           pod("web-1", "test", "node-b", ["10.244.2.10"])])
    with pytest.raises(InvalidQuery, match="several namespaces"):
        locate("web-1", provider.index, attachments(provider), ROUTES)
    provider.index.replace_node("node-z", [pod("lost", "shop", "node-z", ["10.244.9.9"])])
    with pytest.raises(NotFound, match="not attached"):
        locate("shop/lost", provider.index, attachments(provider), ROUTES)


def test_locate_prefers_the_longest_route() -> None:
    att = ATTACHMENTS[2]  # node-c, static
    routes = [RouteInfo("10.244.3.0/24", "node-c", "static", "192.168.10.13"),
              RouteInfo("10.244.3.128/25", "node-c", "static", "192.168.10.113")]
    result = locate("10.244.3.200", PodIndex(), [att], routes)
    assert (result.route_prefix, result.next_hop) == ("10.244.3.128/25", "192.168.10.113")


def test_slim_pod_keeps_what_the_index_reads() -> None:
    full = pod("web-1", "shop", "node-a", ["10.244.1.17", "fd00::17"])
    full["metadata"].update(resourceVersion="812", uid="5f0c", labels={"app": "web"},
                            managedFields=[{"manager": "kubelet", "fieldsV1": {"f:status": {}}}])
    full["spec"]["volumes"] = [{"name": "token", "projected": {"sources": []}}]
    full["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    slim = slim_pod(full)
    assert parse_pod(slim) == parse_pod(full)
    assert slim["metadata"] == {"name": "web-1", "namespace": "shop",
                                "creationTimestamp": "2026-11-20T10:00:00Z",
                                "resourceVersion": "812", "uid": "5f0c"}
    assert slim["spec"] == {"nodeName": "node-a"}
    assert set(slim["status"]) == {"phase", "podIP", "podIPs"}
    assert len(json.dumps(slim)) < len(json.dumps(full))
    host = pod("kube-proxy", "kube-system", "node-a", ["192.168.10.11"], host_network=True)
    assert parse_pod(slim_pod(host)) == parse_pod(host)
    for hostile in (None, "x", {"metadata": "x", "spec": 3}, {"status": {"podIPs": "a"}}):
        assert parse_pod(slim_pod(hostile)) == parse_pod(hostile)
