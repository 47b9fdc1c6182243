"""`fabric-agent render` honours kubernetes.node_selector exactly as the daemon's watch does (the
API server applies it there): the matcher against the API test server's apimachinery-modelled
one, and render against the daemon's path (a real informer on the API test server)."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from agent.apply.frr.render import render_frr
from agent.cli import main
from agent.cluster.nodes import cluster_state
from agent.cluster.selector import selector_matches
from agent.config import load_config
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi, load_kube_config, make_http_client
from agent.plan.build import plan
from lab.kubeapi import KubeApiServer
from lab.kubeapi.client import make_node, wait_for
from lab.kubeapi.selectors import parse_label_selector
from tests.test_informer import write_kubeconfig

SELECTORS = ["", "rack", "!rack", "rack=r1", "rack==r1", "rack!=r1", "rack in (r1,r3)",
             "rack notin (r1, r3)", "rack=r1,role", "rack in (r1),role!=spine",
             "example.com/zone=a", "rack=", "rack!="]
LABELS = [{}, {"rack": "r1"}, {"rack": "r2"}, {"rack": "r3", "role": "spine"},
          {"rack": "r1", "role": "leaf"}, {"role": "spine"}, {"example.com/zone": "a"},
          {"rack": ""}]


@pytest.mark.parametrize("selector", SELECTORS)
def test_matches_like_the_api_server(selector: str) -> None:
    server = parse_label_selector(selector)
    for labels in LABELS:
        assert selector_matches(selector, labels) == server.matches(labels), labels


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


NODES = [
    make_node("r1-a", labels={"rack": "r1"}, pod_cidrs=["10.244.1.0/24"],
              internal_ip="192.168.10.1",
              annotations={"kube-fabric-agent.io/switch-port": "leaf1/swp1"}),
    make_node("r2-b", labels={"rack": "r2"}, pod_cidrs=["10.244.2.0/24"],
              internal_ip="192.168.10.2"),
    make_node("r1-c", labels={"rack": "r1"}, pod_cidrs=["10.244.3.0/24"],
              internal_ip="192.168.10.3"),
]


def config_file(tmp_path: Path, kubeconfig: str | None = None) -> Path:
    kubernetes: dict[str, object] = {"node_selector": "rack=r1"}
    if kubeconfig:
        kubernetes["kubeconfig"] = kubeconfig
    return write(tmp_path / "config.yaml", {
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "kubernetes": kubernetes,
        "fabric": {"server_ports": ["swp1", "swp2", "swp3"], "pod_supernets": ["10.244.0.0/16"],
                   # r2-b is in the static map, but this leaf serves rack r1 only.
                   "attachments": {"swp2": "r2-b", "swp3": "r1-c"}},
    })


def render(config: Path, cluster: Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["render", "--config", str(config), "--cluster", str(cluster)]) == 0
    return out.getvalue()


def test_render_leaves_out_nodes_the_selector_does_not_select(tmp_path: Path) -> None:
    text = render(config_file(tmp_path),
                  write(tmp_path / "cluster.yaml", {"kind": "NodeList", "items": NODES}))
    assert "10.244.1.0/24" in text and "10.244.3.0/24" in text
    assert "10.244.2.0/24" not in text and "192.168.10.2" not in text


async def test_render_and_run_plan_the_same_cluster_identically(tmp_path: Path) -> None:
    cluster = write(tmp_path / "cluster.yaml", {"kind": "NodeList", "items": NODES})
    async with KubeApiServer(bookmark_interval=0.2) as server:
        for node in NODES:
            server.create("nodes", json.loads(json.dumps(node)))
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        config = load_config(config_file(tmp_path, str(kubeconfig)))
        api = KubeApi(make_http_client(load_kube_config(str(kubeconfig)), timeout=2.0))
        # What the daemon does: the informer asks the API server for the selected Nodes.
        informer = Informer(api, "/api/v1/nodes", label_selector=config.kubernetes.node_selector,
                            on_change=lambda: None)
        task = asyncio.create_task(informer.run())
        try:
            await wait_for(lambda: informer.synced)
            daemon = render_frr(plan(config, cluster_state(informer.store.values())).frr)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.aclose()
    assert sorted(informer.store) == ["r1-a", "r1-c"]
    offline = await asyncio.to_thread(render, tmp_path / "config.yaml", cluster)
    assert offline == daemon
