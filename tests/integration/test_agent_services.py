"""Service VIPs on the lab's leaf, against the real kube-apiserver: srv1..srv3 announce VIPs as
MetalLB speakers do (each VIP on its loopback, a `network` /32 in its BGP), and the leaf accepts a
VIP only from the nodes Kubernetes says serve it. The Services' status and the EndpointSlices are
written the way MetalLB and the endpointslice controller write them (the lab runs neither)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import LEAF, SERVERS, AgentLab
from tests.integration.expect import bgp_summary, expect_json, expected

POOL = "203.0.113.0/24"
CLUSTER_VIP, LOCAL_VIP, ROGUE_VIP = "203.0.113.10", "203.0.113.20", "203.0.113.99"
STATIC_VIP = "203.0.113.30"  # a Local Service whose only endpoint is on st1 (no BGP speaker)
ASN = {"srv1": 65201, "srv2": 65202, "srv3": 65203}
PORT_OF = {name: s["port"] for name, s in SERVERS.items()}
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


@pytest.fixture(scope="module")
def env() -> Iterator[AgentLab]:
    with AgentLab(prefix="kfat", api="real", service_pools=[POOL]) as lab_env:
        for name in SERVERS:
            lab_env.add_server_node(name)
        lab_env.add_static_node("st1")
        expect_json(lab_env, lambda: bgp_summary(lab_env), expected("leaf1-sessions"), 60.0,
                    "sessions with srv1..srv3 and the spine Established")
        for name in SERVERS:
            # The way back to host1's subnet, through the leaf (RFC 5549 next hop, as zebra
            # installs BGP routes learnt over an unnumbered session).
            lab_env.lab.exec(name, ["ip", "route", "replace", "172.16.0.0/24", "via",
                                    "169.254.0.1", "dev", "eth1", "onlink"])
        yield lab_env


def announce(env: AgentLab, server: str, vip: str, *, withdraw: bool = False) -> None:
    """What a MetalLB speaker does for a VIP it announces from this node."""
    no = "no " if withdraw else ""
    env.lab.exec(server, ["ip", "addr", "del" if withdraw else "add", f"{vip}/32", "dev", "lo"],
                 check=not withdraw)
    env.lab.vtysh(server, "configure terminal", f"router bgp {ASN[server]}",
                  "address-family ipv4 unicast", f"{no}network {vip}/32")


def serve(env: AgentLab, server: str, vip: str) -> None:
    """A listener on the VIP that answers with the server's name."""
    env.lab.spawn(server, ["socat", f"TCP-LISTEN:8080,bind={vip},fork,reuseaddr",
                           f"SYSTEM:echo {server}"])


def nexthop_ports(env: AgentLab, vip: str) -> set[str]:
    """The server ports of the leaf's kernel route to the VIP (its ECMP members)."""
    route = env.kernel_routes(LEAF).get(vip)
    if route is None:
        return set()
    hops = route.get("nexthops") or [route]
    return {h.get("dev") for h in hops}


def fetch(env: AgentLab, vip: str) -> str:
    res = env.lab.exec("host1", ["socat", "-T2", "-u", f"TCP:{vip}:8080,connect-timeout=2",
                                 "-"], check=False)
    return res.stdout.strip()


def ports(*servers: str) -> set[str]:
    return {PORT_OF[s] for s in servers}


@pytest.fixture(scope="module", autouse=True)
def speakers(env: AgentLab) -> Iterator[None]:
    for name in SERVERS:
        for vip in (CLUSTER_VIP, LOCAL_VIP):
            announce(env, name, vip)
            serve(env, name, vip)
    announce(env, "srv1", ROGUE_VIP)
    env.api.create_service("web", "shop", ingress=[CLUSTER_VIP], policy="Cluster")
    env.api.create_service("api", "shop", ingress=[LOCAL_VIP], policy="Local")
    env.api.put_endpoint_slice("api-1", "shop", "api", {"srv2": True})
    env.lab.exec("st1", ["ip", "addr", "add", f"{STATIC_VIP}/32", "dev", "lo"])
    serve(env, "st1", STATIC_VIP)
    env.api.create_service("shell", "shop", ingress=[STATIC_VIP], policy="Local")
    env.api.put_endpoint_slice("shell-1", "shop", "shell", {"st1": True})
    yield


def test_a_cluster_vip_is_ecmp_over_every_ready_node_and_reachable(env: AgentLab) -> None:
    env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv1", "srv2", "srv3"), 30.0,
             f"{CLUSTER_VIP} in leaf1's kernel over swp1, swp2 and swp3")
    env.wait(lambda: fetch(env, CLUSTER_VIP) in SERVERS, 20.0,
             f"host1 reaching a listener on {CLUSTER_VIP}")


def test_a_local_vip_is_accepted_only_from_the_node_with_the_endpoint_and_follows_it(
    env: AgentLab,
) -> None:
    env.wait(lambda: nexthop_ports(env, LOCAL_VIP) == ports("srv2"), 30.0,
             f"{LOCAL_VIP} only via srv2, the node with the ready endpoint")
    assert fetch(env, LOCAL_VIP) == "srv2"
    env.api.put_endpoint_slice("api-1", "shop", "api", {"srv2": False, "srv3": True})
    env.wait(lambda: nexthop_ports(env, LOCAL_VIP) == ports("srv3"), 30.0,
             f"{LOCAL_VIP} moved to srv3 with its endpoint")
    env.wait(lambda: fetch(env, LOCAL_VIP) == "srv3", 20.0, "host1 served by srv3")
    env.api.put_endpoint_slice("api-1", "shop", "api", {"srv2": True})
    env.wait(lambda: nexthop_ports(env, LOCAL_VIP) == ports("srv2"), 30.0, "back on srv2")


def test_a_not_ready_node_stops_attracting_the_vip(env: AgentLab) -> None:
    env.api.set_node_ready("srv1", False)
    try:
        env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv2", "srv3"), 30.0,
                 f"{CLUSTER_VIP} no longer via NotReady srv1")
    finally:
        env.api.set_node_ready("srv1", True)
    env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv1", "srv2", "srv3"), 30.0,
             "srv1 back once Ready")


def test_an_excluded_node_is_refused_the_vip(env: AgentLab) -> None:
    env.api.patch_node("srv3", {"metadata": {"labels": {EXCLUDE: ""}}})
    try:
        env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv1", "srv2"), 30.0,
                 f"{CLUSTER_VIP} no longer via excluded srv3")
    finally:
        env.api.patch_node("srv3", {"metadata": {"labels": {EXCLUDE: None}}})
    env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv1", "srv2", "srv3"), 30.0,
             "srv3 back once not excluded")


def test_a_vip_no_service_names_is_not_installed(env: AgentLab) -> None:
    env.wait(lambda: CLUSTER_VIP in env.kernel_routes(LEAF), 30.0, "the leaf converged")
    assert ROGUE_VIP not in env.kernel_routes(LEAF)
    table = env.lab.vtysh_json(LEAF, "show bgp ipv4 unicast json").get("routes", {})
    assert f"{ROGUE_VIP}/32" not in table, "filtered inbound, not only kept out of the FIB"


def test_a_vip_change_is_a_soft_refresh_not_a_session_reset(env: AgentLab) -> None:
    def established_since() -> dict[str, Any]:
        peers = env.bgp_peers()
        return {p: peers[p].get("connectionsEstablished") for p in ports(*SERVERS)}

    before = established_since()
    env.api.put_endpoint_slice("api-1", "shop", "api", {"srv1": True})
    env.wait(lambda: nexthop_ports(env, LOCAL_VIP) == ports("srv1"), 30.0, "moved to srv1")
    env.api.put_endpoint_slice("api-1", "shop", "api", {"srv2": True})
    env.wait(lambda: nexthop_ports(env, LOCAL_VIP) == ports("srv2"), 30.0, "back on srv2")
    assert established_since() == before


def test_the_spine_receives_the_admitted_vips_only(env: AgentLab) -> None:
    def spine_routes() -> set[str]:
        return set(env.lab.vtysh_json("spine1", "show bgp ipv4 unicast json").get("routes", {}))

    env.wait(lambda: {f"{CLUSTER_VIP}/32", f"{LOCAL_VIP}/32"} <= spine_routes(), 30.0,
             "the spine receiving both VIPs from the leaf")
    assert f"{ROGUE_VIP}/32" not in spine_routes()


def test_a_static_node_gets_the_vip_route_installed_by_the_leaf(env: AgentLab) -> None:
    """st1 speaks no BGP: the leaf itself routes its VIP to st1's InternalIP (the agent's own
    route protocol), announces it upstream, and host1 reaches the listener behind it."""
    st1_ip = "192.168.10.5"

    def leaf_route() -> dict[str, Any]:
        return env.kernel_routes(LEAF).get(STATIC_VIP, {})

    env.wait(lambda: leaf_route().get("gateway") == st1_ip, 30.0,
             f"{STATIC_VIP} via st1's InternalIP in leaf1's kernel")
    assert leaf_route().get("protocol") not in ("bgp", None), leaf_route()
    env.wait(lambda: fetch(env, STATIC_VIP) == "st1", 20.0, "host1 served by st1")
    env.wait(lambda: f"{STATIC_VIP}/32" in env.lab.vtysh_json(
        "spine1", "show bgp ipv4 unicast json").get("routes", {}), 30.0,
        "the spine receiving the VIP the leaf routes itself")


def test_fabricctl_services_shows_who_may_and_who_does_announce(env: AgentLab) -> None:
    env.wait(lambda: nexthop_ports(env, CLUSTER_VIP) == ports("srv1", "srv2", "srv3"), 30.0,
             "converged")

    def by_vip() -> dict[str, Any]:
        res = env.fabricctl_run("services", "--json")
        assert res.returncode == 0, res.stderr
        return {v["vip"]: v for v in json.loads(res.stdout)}

    env.wait(lambda: by_vip().get(CLUSTER_VIP, {}).get("nodes_announcing")
             == ["srv1", "srv2", "srv3"], 15.0, "fabricctl services seeing the three announce")
    vips = by_vip()
    web = vips[CLUSTER_VIP]
    assert (web["service"], web["policy"], web["state"]) == ("shop/web", "Cluster", "ok")
    assert web["nodes_permitted"] == ["srv1", "srv2", "srv3", "st1"], web  # st1: static
    api = vips[LOCAL_VIP]
    assert api["nodes_permitted"] == ["srv2"] and api["nodes_announcing"] == ["srv2"], api
    assert ROGUE_VIP not in vips, "no Service names it"
    print(env.fabricctl("services"))
