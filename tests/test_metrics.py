"""Prometheus metrics: own registry, the values the daemon pushes, the optional HTTP listener."""

from __future__ import annotations

import dataclasses
import urllib.request

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.status.metrics import PREFIX, Metrics
from agent.status.model import AttachmentInfo, ServiceInfo
from tests.fake_status import FakeProvider


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse the exposition text, as Prometheus would."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_registries_are_private() -> None:
    a, b = Metrics(), Metrics()  # two agents in one process do not collide
    a.observe_apply("frr", True, "reloaded", 0.7)
    assert samples(a)[(f"{PREFIX}_apply_results_total",
                       (("action", "reloaded"), ("applier", "frr"), ("result", "ok")))] == 1
    assert (f"{PREFIX}_apply_results_total",
            (("action", "reloaded"), ("applier", "frr"), ("result", "ok"))) not in samples(b)
    assert REGISTRY.get_sample_value(f"{PREFIX}_apply_results_total",
                                     {"applier": "frr", "action": "reloaded",
                                      "result": "ok"}) is None


def test_latency_histograms_and_results() -> None:
    m = Metrics()
    for seconds in (0.3, 0.9, 0.95):
        m.observe_reconcile(seconds)
    m.observe_apply("frr", False, "rejected", 0.2)
    s = samples(m)
    assert s[(f"{PREFIX}_reconcile_latency_seconds_count", ())] == 3
    assert s[(f"{PREFIX}_reconcile_latency_seconds_bucket", (("le", "1.0"),))] == 3
    assert s[(f"{PREFIX}_reconcile_latency_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[(f"{PREFIX}_apply_duration_seconds_count", (("applier", "frr"),))] == 1
    assert s[(f"{PREFIX}_apply_results_total",
              (("action", "rejected"), ("applier", "frr"), ("result", "error")))] == 1


def test_gauges_from_the_provider_follow_detaches() -> None:
    provider = FakeProvider()
    m = Metrics()
    m.update_from(provider)
    s = samples(m)
    assert s[(f"{PREFIX}_bgp_sessions", (("state", "established"),))] == 2
    assert s[(f"{PREFIX}_bgp_sessions", (("state", "not_configured"),))] == 2
    assert s[(f"{PREFIX}_bgp_session_established", (("node", "node-a"), ("port", "swp1")))] == 1
    assert (f"{PREFIX}_bgp_session_established",
            (("node", "node-c"), ("port", "swp3"))) not in s  # static: no session to report
    assert s[(f"{PREFIX}_headroom_used", (("resource", "ipv4_routes"),))] == 1204
    assert s[(f"{PREFIX}_headroom_desired", (("resource", "ipv4_routes"),))] == 1206
    assert s[(f"{PREFIX}_headroom_nodes_left", (("resource", "ipv4_routes"),))] == 26900
    capacity = [k for k in s if k[0] == f"{PREFIX}_headroom_capacity"]
    assert len(capacity) == 5  # fdb_entries has no known capacity: no series, not a 0
    assert (f"{PREFIX}_headroom_used", (("resource", "neighbors"),)) not in s
    assert s[(f"{PREFIX}_kubernetes_connected", ())] == 1
    assert s[(f"{PREFIX}_refusals", ())] == 2

    # node-a goes down, node-d is detached: its series disappears rather than freezing.
    atts = list(provider.attachments())
    atts[0] = dataclasses.replace(atts[0], bgp_state="idle")
    m.update_sessions(a for a in atts if a.node != "node-d")
    s = samples(m)
    assert s[(f"{PREFIX}_bgp_session_established", (("node", "node-a"), ("port", "swp1")))] == 0
    assert s[(f"{PREFIX}_bgp_sessions", (("state", "idle"),))] == 1
    assert (f"{PREFIX}_attachments", (("routing", "vxlan"),)) not in s


def test_http_listener_serves_the_registry() -> None:
    m = Metrics()
    m.update_sessions([AttachmentInfo("swp1", "node-a", "static", "bgp", "established")])
    listener = m.start_http("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{listener.port}/metrics"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy env
        with direct.open(url, timeout=5) as response:
            body = response.read().decode()
        assert f'{PREFIX}_bgp_session_established{{node="node-a",port="swp1"}} 1.0' in body
        assert "python_gc_objects_collected_total" not in body  # not the default registry
    finally:
        listener.close()


def test_offload_failures_by_family_are_zero_until_seen_and_follow_the_kernel() -> None:
    m = Metrics()
    name = f"{PREFIX}_offload_failed_routes"

    def offload() -> dict[str, float]:
        return {dict(labels)["family"]: v for (n, labels), v in samples(m).items() if n == name}

    assert offload() == {"ipv4": 0.0, "ipv6": 0.0}  # exported from the start
    m.update_offload({4: 3, 6: 1})
    assert offload() == {"ipv4": 3.0, "ipv6": 1.0}
    m.update_offload({6: 2})  # ipv4 routes offloaded again: back to 0, not frozen at 3
    assert offload() == {"ipv4": 0.0, "ipv6": 2.0}


def test_service_vips_are_counted_by_state_with_bounded_series() -> None:
    m = Metrics()

    def services() -> dict[tuple[str, str], float]:
        return {(n, dict(labels).get("state") or dict(labels)["kind"]): v
                for (n, labels), v in samples(m).items() if "_service_vip" in n}

    assert services() == {  # exported from the start, every state at 0
        (f"{PREFIX}_service_vips", "ok"): 0, (f"{PREFIX}_service_vips", "no-announcer"): 0,
        (f"{PREFIX}_service_vips", "refused"): 0, (f"{PREFIX}_service_vips", "unknown"): 0,
        (f"{PREFIX}_service_vip_nodes", "permitted"): 0,
        (f"{PREFIX}_service_vip_nodes", "announcing"): 0}
    m.update_from(FakeProvider())
    got = services()
    # The fake: web (ok, 2 of 2), db (no announcer, 0 of 1), shared api (ok, 1 of 2), a
    # refused one (not summed), an IPv6 one (ok, 1 of 1).
    assert (got[(f"{PREFIX}_service_vips", "ok")], got[(f"{PREFIX}_service_vips", "no-announcer")],
            got[(f"{PREFIX}_service_vips", "refused")],
            got[(f"{PREFIX}_service_vips", "unknown")]) == (3, 1, 1, 0)
    assert got[(f"{PREFIX}_service_vip_nodes", "permitted")] == 6
    assert got[(f"{PREFIX}_service_vip_nodes", "announcing")] == 4

    # 5,000 VIPs, the FIB not read: still six series, and nothing counted as announcing.
    many = [ServiceInfo(vip=f"10.{i // 256}.{i % 256}.1", services=(f"ns/s{i}",),
                        policy="Cluster", nodes_permitted=("n1", "n2"),
                        prefix=f"10.{i // 256}.{i % 256}.1/32") for i in range(5000)]
    m.update_services(many)
    got = services()
    assert len(got) == 6
    assert got[(f"{PREFIX}_service_vips", "unknown")] == 5000
    assert got[(f"{PREFIX}_service_vips", "ok")] == 0  # not frozen at its last value
    assert got[(f"{PREFIX}_service_vip_nodes", "announcing")] == 0
    assert got[(f"{PREFIX}_service_vip_nodes", "permitted")] == 0  # unknown: not compared
