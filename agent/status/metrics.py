"""Prometheus metrics of the agent, on a registry of its own.

Not the prometheus_client default registry: a module-level registry is global mutable state
that two Agents in one process (tests) would share and fight over, and that would also export
whatever any imported library registers there. Each `Metrics` owns its `CollectorRegistry`.

The daemon pushes values in (observe_* after a reconcile or an apply, update_from(provider)
from its status loop); nothing here calls back into the daemon, because the HTTP listener
answers scrapes from its own thread while the agent's state lives on the event loop.

The HTTP listener is off unless the daemon starts it: a switch's management plane decides who
may scrape it (bind it to the management address or 127.0.0.1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

from agent.status.model import AttachmentInfo, HeadroomInfo, ServiceInfo, StatusProvider
from agent.status.services import state_counts
from agent.vocabulary import BGP_STATES

log = logging.getLogger(__name__)

PREFIX = "kube_fabric_agent"
# From a debounced 200 ms reconcile up to a frr-reload.py run near its timeout.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsHttpServer:
    """A running /metrics listener (prometheus_client's WSGI server in a daemon thread)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_latency = Histogram(
            f"{PREFIX}_reconcile_latency_seconds",
            "From the first change seen to that change applied (debounce included).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.apply_duration = Histogram(
            f"{PREFIX}_apply_duration_seconds",
            "Duration of one apply, per applier.",
            ["applier"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.apply_results = Counter(
            f"{PREFIX}_apply_results",
            "Applies by applier, action and result (ok / error).",
            ["applier", "action", "result"],
            registry=r,
        )
        self.bgp_sessions = Gauge(
            f"{PREFIX}_bgp_sessions",
            "Server-port BGP sessions by state.",
            ["state"],
            registry=r,
        )
        self.bgp_session_up = Gauge(
            f"{PREFIX}_bgp_session_established",
            "1 when the session of an attached node is Established, else 0.",
            ["port", "node"],
            registry=r,
        )
        self.attachments = Gauge(
            f"{PREFIX}_attachments", "Attached nodes by routing mode.", ["routing"], registry=r
        )
        self.refusals = Gauge(f"{PREFIX}_refusals", "Current refusals.", registry=r)
        self.kubernetes_connected = Gauge(
            f"{PREFIX}_kubernetes_connected", "1 while the API server answers.", registry=r
        )
        self.kubernetes_synced = Gauge(
            f"{PREFIX}_kubernetes_synced", "1 once the first Node list arrived.", registry=r
        )
        self.headroom_used = Gauge(
            f"{PREFIX}_headroom_used", "Entries programmed now.", ["resource"], registry=r
        )
        self.headroom_desired = Gauge(
            f"{PREFIX}_headroom_desired", "Entries the desired state needs.", ["resource"],
            registry=r,
        )
        self.headroom_capacity = Gauge(
            f"{PREFIX}_headroom_capacity", "Capacity of the table.", ["resource", "source"],
            registry=r,
        )
        self.headroom_nodes_left = Gauge(
            f"{PREFIX}_headroom_nodes_left",
            "More nodes like the most expensive attached one that fit (absent: no limit known).",
            ["resource"],
            registry=r,
        )

        self.offload_failed_routes = Gauge(
            f"{PREFIX}_offload_failed_routes",
            "Routes in the kernel that the ASIC refused (rt_offload_failed, all protocols): "
            "forwarded by the CPU, if at all.",
            ["family"],
            registry=r,
        )
        # Service VIPs as counts only: a series per VIP would be 5,000 series on a large
        # cluster, churning with every Service; `fabricctl services` names them.
        self.service_vips = Gauge(
            f"{PREFIX}_service_vips",
            "Service VIPs by state: ok, no-announcer (no permitted node's route in the FIB), "
            "refused, unknown (the FIB was not read).",
            ["state"],
            registry=r,
        )
        self.service_vip_nodes = Gauge(
            f"{PREFIX}_service_vip_nodes",
            "Summed over the Service VIPs in state ok or no-announcer: the nodes permitted to "
            "announce them, and the permitted nodes the FIB forwards them to (kind permitted / "
            "announcing). Less announcing than permitted: nodes down, sessions without the VIP, "
            "or more nodes than maximum-paths.",
            ["kind"],
            registry=r,
        )
        self.update_offload({})
        self.update_services(())

    # ---- pushed by the daemon ----

    def update_offload(self, per_family: Mapping[int, int]) -> None:
        """Routes the ASIC refused, by IP version; a family absent counts 0 (none seen)."""
        for version, family in ((4, "ipv4"), (6, "ipv6")):
            self.offload_failed_routes.labels(family).set(per_family.get(version, 0))

    def observe_reconcile(self, seconds: float) -> None:
        self.reconcile_latency.observe(seconds)

    def observe_apply(self, applier: str, ok: bool, action: str, duration_seconds: float) -> None:
        self.apply_duration.labels(applier).observe(duration_seconds)
        self.apply_results.labels(applier, action, "ok" if ok else "error").inc()

    def update_sessions(self, attachments: Iterable[AttachmentInfo]) -> None:
        # Gauges with port/node labels are rebuilt, not updated: a detached node's series must
        # disappear, not stay frozen at its last value.
        counts = dict.fromkeys(BGP_STATES, 0)
        routing: dict[str, int] = {}
        self.bgp_session_up.clear()
        for att in attachments:
            counts[att.bgp_state] = counts.get(att.bgp_state, 0) + 1
            routing[att.routing] = routing.get(att.routing, 0) + 1
            if att.bgp_state != "not_configured":
                self.bgp_session_up.labels(att.port, att.node).set(
                    1 if att.bgp_state == "established" else 0
                )
        for state, n in counts.items():
            self.bgp_sessions.labels(state).set(n)
        self.attachments.clear()
        for mode, n in routing.items():
            self.attachments.labels(mode).set(n)

    def update_headroom(self, rows: Iterable[HeadroomInfo]) -> None:
        for gauge in (self.headroom_used, self.headroom_desired, self.headroom_capacity,
                      self.headroom_nodes_left):
            gauge.clear()
        for row in rows:
            # Unknown values are absent series, never a 0 that would read as "full" or "empty".
            if row.used is not None:
                self.headroom_used.labels(row.resource).set(row.used)
            self.headroom_desired.labels(row.resource).set(row.desired)
            if row.capacity is not None:
                self.headroom_capacity.labels(row.resource, row.source).set(row.capacity)
            if row.nodes_left is not None:
                self.headroom_nodes_left.labels(row.resource).set(row.nodes_left)

    def update_services(self, rows: Iterable[ServiceInfo]) -> None:
        rows = list(rows)
        for state, n in state_counts(rows).items():
            self.service_vips.labels(state).set(n)
        permitted = announcing = 0
        for row in rows:
            if row.nodes_announcing is None or row.state == "refused":
                continue  # nothing known to compare with, or nobody may announce it
            permitted += len(row.nodes_permitted)
            announcing += len(set(row.nodes_announcing or ()) & set(row.nodes_permitted))
        self.service_vip_nodes.labels("permitted").set(permitted)
        self.service_vip_nodes.labels("announcing").set(announcing)

    def update_from(self, provider: StatusProvider) -> None:
        """Refresh every gauge from the provider (call it from the event loop, e.g. with each
        status publication)."""
        status = provider.status()
        self.kubernetes_connected.set(1 if status.kubernetes.connected else 0)
        self.kubernetes_synced.set(1 if status.kubernetes.synced else 0)
        self.refusals.set(len(status.refusals))
        self.update_sessions(provider.attachments())
        self.update_headroom(provider.headroom())
        self.update_services(provider.services())

    # ---- exposition ----

    def render(self) -> bytes:
        """The text exposition format of this registry."""
        return generate_latest(self.registry)

    def start_http(self, address: str = "127.0.0.1", port: int = 9469) -> MetricsHttpServer:
        """Serve /metrics on address:port (port 0 picks a free one; see .port)."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)
        listener = MetricsHttpServer(server, thread)
        log.info("metrics on http://%s:%d/metrics", address, listener.port)
        return listener
