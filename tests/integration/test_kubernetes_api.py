"""The agent's Kubernetes client and informer against a real kube-apiserver + etcd.

What the agent believes about list/watch (resourceVersions, bookmarks, 410 Gone, selectors,
ServiceAccount tokens and RBAC) is checked here against the real thing, built from the pinned
release by lab/k8s/build.sh. The API test server (tests/test_informer.py) stays for what a real
server cannot be made to do on demand: 5xx, stalls, garbage, truncated streams.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.informers.informer import Informer
from agent.informers.kubeapi import ApiError, ApiGone, KubeApi, load_kube_config, make_http_client
from lab.agent_lab import AGENT_SA, RBAC_FILE
from lab.controlplane import ControlPlane
from lab.kubeapi.client import KubeApiClient, wait_for
from lab.kubeapi.store import ApiStatusError
from tests.integration.measurements import record

FAST = {"backoff_initial": 0.05, "backoff_max": 0.5}


class CountingKubeApi(KubeApi):
    """The agent's client, counting the requests it makes and the bookmarks it receives (the
    server is real; only the counting is ours)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists = 0
        self.watches = 0
        self.bookmarks: list[str] = []

    async def list(self, path: str, **kwargs: Any) -> tuple[str, list[dict]]:
        self.lists += 1
        return await super().list(path, **kwargs)

    async def watch(self, path: str, **kwargs: Any) -> AsyncIterator[tuple[str, dict]]:
        self.watches += 1
        async with aclosing(super().watch(path, **kwargs)) as events:
            async for kind, obj in events:
                if kind == "BOOKMARK":
                    self.bookmarks.append(obj.get("metadata", {}).get("resourceVersion", ""))
                yield kind, obj


@pytest.fixture(scope="module")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("k8s")) as cp:
        cp.apply_file(RBAC_FILE)
        record(request.config, cp.summary())
        yield cp


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[KubeApiClient]:
    """The tests' writes; every Node and Pod a test made is deleted after it."""
    client = control_plane.client()
    yield client
    for node in client.list_nodes()["items"]:
        client.delete_node(node["metadata"]["name"])
    for pod in client.request("GET", "/api/v1/pods")["items"]:
        client.delete_pod(pod["metadata"]["name"], pod["metadata"]["namespace"])
    client.close()


def agent_kubeconfig(cp: ControlPlane, folder: Path, token: str) -> Path:
    token_file = folder / "token"
    token_file.write_text(token)
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(cp.kubeconfig(cp.url, token_file)))
    return path


@pytest.fixture
async def api(control_plane: ControlPlane, tmp_path: Path) -> AsyncIterator[CountingKubeApi]:
    """The agent's client with the agent's own ServiceAccount token (examples/rbac.yaml)."""
    token = control_plane.issue_token(*AGENT_SA)
    config = load_kube_config(str(agent_kubeconfig(control_plane, tmp_path, token)))
    kube = CountingKubeApi(make_http_client(config, timeout=5.0), watch_read_grace=10.0)
    yield kube
    await kube.aclose()


@asynccontextmanager
async def running(api: KubeApi, path: str = "/api/v1/nodes", **kwargs: Any
                  ) -> AsyncIterator[Informer]:
    informer = Informer(api, path, on_change=lambda: None,
                        **{**FAST, "rng": random.Random(7), **kwargs})
    task = asyncio.create_task(informer.run())
    try:
        yield informer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def keys(informer: Informer) -> set[str]:
    return set(informer.store)


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The tests' own writes are blocking HTTP calls: keep them off the informer's loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_lists_then_follows_the_watch(admin: KubeApiClient, api: CountingKubeApi) -> None:
    await in_thread(admin.create_node, "n1", pod_cidrs=["10.244.1.0/24"])
    await in_thread(admin.create_node, "n2")
    async with running(api) as informer:
        await wait_for(lambda: informer.synced and informer.connected, 10)
        assert keys(informer) == {"n1", "n2"}
        assert informer.store["n1"]["spec"]["podCIDRs"] == ["10.244.1.0/24"]
        await in_thread(admin.create_node, "n3")
        await in_thread(admin.patch_node, "n1", {"metadata": {"labels": {"rack": "r9"}}})
        await in_thread(admin.delete_node, "n2")
        await wait_for(lambda: keys(informer) == {"n1", "n3"}, 10)
        await wait_for(lambda: informer.store["n1"]["metadata"]["labels"].get("rack") == "r9", 10)
        node = await in_thread(admin.get_node, "n1")
        await wait_for(lambda: int(informer.resource_version)
                       >= int(node["metadata"]["resourceVersion"]), 10)
        assert api.lists == 1 and informer.last_error is None


async def test_a_node_written_by_its_kubelet_keeps_its_status(admin: KubeApiClient) -> None:
    """The real server ignores status in a Node's create or update (only the status
    subresource writes it); the lab's helpers write it there as a kubelet does."""
    created = await in_thread(admin.create_node, "kubelet-like", internal_ip="192.168.10.9")
    addresses = created["status"]["addresses"]
    assert {"type": "InternalIP", "address": "192.168.10.9"} in addresses
    pod = await in_thread(admin.create_pod, "p1", "shop", node_name="kubelet-like",
                          pod_ip="10.244.9.9")
    assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"] == "10.244.9.9"


async def test_bookmarks_arrive_before_the_watch_times_out(
    admin: KubeApiClient, api: CountingKubeApi
) -> None:
    """The agent asks for bookmarks (allowWatchBookmarks). The real server sends one 2 s before
    a watch's timeout (and about every minute) carrying the rv of the last event of *that*
    resource it processed: Pods moving etcd's revision do not move a Node watch's bookmark
    (only etcd's progress notifications would). The API test server's bookmarks carry the
    global rv; the informer handles both: a bookmark moves its rv, and is not a change."""
    async with running(api, watch_timeout=6.0, watch_timeout_jitter=0.0) as informer:
        await wait_for(lambda: informer.synced, 10)
        patched = await in_thread(admin.create_node, "b1")  # an event in the Node cache
        for i in range(3):
            await in_thread(admin.create_pod, f"bm{i}")
        await wait_for(lambda: api.bookmarks, 20)
        assert api.bookmarks[0] == patched["metadata"]["resourceVersion"]
        assert informer.resource_version == api.bookmarks[-1] or api.watches > 1
        assert api.lists == 1


async def test_a_compacted_resource_version_is_410_and_the_informer_relists(
    control_plane: ControlPlane, admin: KubeApiClient, api: CountingKubeApi
) -> None:
    """Real 410: after an API server restart its watch cache starts at etcd's current
    revision, and etcd compacted the history the informer's rv needs."""
    await in_thread(admin.create_node, "c1")
    async with running(api) as informer:
        await wait_for(lambda: informer.synced and "c1" in informer.store, 10)
        old_rv = informer.resource_version
        await in_thread(control_plane.stop_apiserver)
        await wait_for(lambda: not informer.connected, 20)
        with control_plane.replica() as replica:  # the other replica takes the writes
            await in_thread(replica.delete_node, "c1")
            await in_thread(replica.create_node, "c2")
        await in_thread(control_plane.compact_etcd)
        await in_thread(control_plane.start_apiserver)
        await wait_for(lambda: keys(informer) == {"c2"}, 30)
        assert api.lists == 2, "one relist after 410"

    with pytest.raises(ApiGone):  # the same answer, seen by the client itself
        async with aclosing(api.watch("/api/v1/nodes", resource_version=old_rv,
                                      timeout_seconds=5)) as events:
            async for _ in events:
                pass


async def test_field_selector_spec_node_name_for_pods(admin: KubeApiClient,
                                                      api: CountingKubeApi) -> None:
    await in_thread(admin.create_pod, "on-a", node_name="node-a", pod_ip="10.244.1.5")
    await in_thread(admin.create_pod, "on-b", node_name="node-b", pod_ip="10.244.2.5")
    async with running(api, "/api/v1/pods", field_selector="spec.nodeName=node-a") as informer:
        await wait_for(lambda: informer.synced, 10)
        assert keys(informer) == {"default/on-a"}
        await in_thread(admin.create_pod, "on-a-2", node_name="node-a")
        await in_thread(admin.create_pod, "on-b-2", node_name="node-b")
        await wait_for(lambda: "default/on-a-2" in informer.store, 10)
        await in_thread(admin.delete_pod, "on-a")
        await wait_for(lambda: keys(informer) == {"default/on-a-2"}, 10)


async def test_label_selector_for_nodes_follows_label_changes(
    admin: KubeApiClient, api: CountingKubeApi
) -> None:
    """A Node that gains the label arrives as ADDED, one that loses it leaves as DELETED: the
    real watch cache turns label changes into add/delete for a selector."""
    await in_thread(admin.create_node, "r1-a", labels={"rack": "r1"})
    await in_thread(admin.create_node, "r2-a", labels={"rack": "r2"})
    async with running(api, label_selector="rack=r1") as informer:
        await wait_for(lambda: informer.synced, 10)
        assert keys(informer) == {"r1-a"}
        await in_thread(admin.patch_node, "r2-a", {"metadata": {"labels": {"rack": "r1"}}})
        await wait_for(lambda: keys(informer) == {"r1-a", "r2-a"}, 10)
        await in_thread(admin.patch_node, "r1-a", {"metadata": {"labels": {"rack": "r3"}}})
        await wait_for(lambda: keys(informer) == {"r2-a"}, 10)
        assert api.lists == 1


async def test_the_agents_token_is_least_privilege(control_plane: ControlPlane) -> None:
    """examples/rbac.yaml grants get/list/watch on Nodes, Pods, Services and EndpointSlices,
    nothing else."""
    agent = control_plane.client(token=control_plane.issue_token(*AGENT_SA))
    try:
        assert (await in_thread(agent.list_nodes))["kind"] == "NodeList"
        for path in ("/api/v1/pods", "/api/v1/services",
                     "/apis/discovery.k8s.io/v1/endpointslices"):
            await in_thread(agent.request, "GET", path)
        denied = [
            ("POST", "/api/v1/namespaces/default/services",
             {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "agent-made"},
              "spec": {"ports": [{"port": 80}]}}, "application/json"),
            ("GET", "/api/v1/configmaps", None, "application/json"),
            ("GET", "/api/v1/secrets", None, "application/json"),
            ("GET", "/api/v1/namespaces/kube-system/secrets", None, "application/json"),
            ("PATCH", "/api/v1/nodes/any", {"metadata": {"labels": {"x": "y"}}},
             "application/merge-patch+json"),
            ("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                       "metadata": {"name": "agent-made"}}, "application/json"),
            ("DELETE", "/api/v1/namespaces/default/pods/any", None, "application/json"),
        ]
        for method, path, body, ctype in denied:
            with pytest.raises(ApiStatusError) as err:
                await in_thread(agent.request, method, path, body, ctype)
            assert err.value.code == 403, (method, path, err.value)
    finally:
        agent.close()


async def test_a_rotated_token_is_picked_up_on_401(
    control_plane: ControlPlane, admin: KubeApiClient, tmp_path: Path
) -> None:
    """The kubelet re-issues a projected token through TokenRequest and rewrites the file; the
    old one stops working when its Pod goes. The informer gets a 401 on its next request,
    re-reads the file (lightkube) and carries on without a relist."""
    namespace, account = AGENT_SA
    owners = {}
    for name in ("holder-old", "holder-new"):
        pod = await in_thread(admin.create_pod, name, namespace, service_account=account)
        owners[name] = (name, pod["metadata"]["uid"])
    old = control_plane.issue_token(namespace, account, bound_pod=owners["holder-old"])
    kubeconfig = agent_kubeconfig(control_plane, tmp_path, old)
    api = CountingKubeApi(make_http_client(load_kube_config(str(kubeconfig)), timeout=5.0),
                          watch_read_grace=10.0)
    try:
        async with running(api, watch_timeout=2.0, watch_timeout_jitter=0.0) as informer:
            await wait_for(lambda: informer.synced, 10)
            (tmp_path / "token").write_text(
                control_plane.issue_token(namespace, account, bound_pod=owners["holder-new"]))
            await in_thread(admin.delete_pod, "holder-old", namespace)
            with control_plane.client(token=old) as stale:
                # The server caches a token's authentication for up to 10 s.
                await wait_for(lambda: in_thread(refused_401, stale), 30, interval=0.5)
            await in_thread(admin.create_node, "after-rotation")
            await wait_for(lambda: "after-rotation" in informer.store, 20)
            assert api.lists == 1 and informer.connected
    finally:
        await api.aclose()


def refused_401(client: KubeApiClient) -> bool:
    try:
        client.list_nodes()
    except ApiStatusError as err:
        assert err.code == 401, err
        return True
    return False


async def test_errors_from_the_real_server_are_typed(control_plane: ControlPlane,
                                                     api: CountingKubeApi) -> None:
    with pytest.raises(ApiError) as err:
        await api.list("/api/v1/nodes", label_selector="a in (b")
    assert err.value.status == 400 and not isinstance(err.value, ApiGone)
    with pytest.raises(ApiError) as err:
        await api.list("/api/v1/nodes", field_selector="spec.nodeName=x")
    assert err.value.status == 400, "Nodes cannot be selected by spec.nodeName"
