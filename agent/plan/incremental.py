"""PlanCache: plan() change by change, with work proportional to what changed.

Every Node event re-plans the whole cluster; with thousands of Nodes parsing them all and
deciding address ownership from scratch cost seconds per change. The cache keeps, between two
plans of the same config: each Node object's parse, the ownership indexes (agent.plan.ownership),
the annotation claims on this switch, the names LLDP is matched against and the overlay nodes.
A plan then parses only the objects it has not seen, updates those structures with the Nodes
that differ, and hands the resulting ClusterView to the same assembly plan() uses
(build.plan_view). The result equals plan(config, cluster_state(objects), ...) for the same
inputs: tests/test_incremental_plan.py checks it after every step of random churn.

Parses are keyed by the identity of the object, not by resourceVersion: the Node informer keeps
slimmed objects without resourceVersion (so a heartbeat-only update compares equal and costs no
re-plan) and replaces a stored object on change, never mutates it. An object seen before is
therefore the same content, and a changed Node is a new object. Callers must not mutate the
objects they pass in.
"""

from __future__ import annotations

import ipaddress
import threading
from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from agent.cluster.attachments import NameIndex, annotation_claim, decide
from agent.cluster.nodes import ClusterState, Node, Refusal, duplicate, parse_checked
from agent.config import AgentConfig
from agent.headroom.resources import Capacity
from agent.plan.build import ClusterView, plan_view
from agent.plan.model import Plan
from agent.plan.ownership import HostRouteRules, Ownership

_Parsed = tuple[Any, Node | None, tuple[Refusal, ...]]


class PlanCache:
    """Owned by the one caller that plans (the Reconciler); a lock makes concurrent calls
    safe but serial. Any error drops everything, so the next plan starts from scratch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, config: AgentConfig | None) -> None:
        self._config = config
        self._parsed: dict[int, _Parsed] = {}
        self._by_name: dict[str, Node] = {}
        self._names: list[str] = []  # sorted: ClusterState lists Nodes by name
        self._nodes: tuple[Node, ...] = ()
        self._ownership: Ownership | None = None
        if config is not None:
            fabric = config.fabric
            self._ownership = Ownership([ipaddress.ip_network(s) for s in fabric.pod_supernets],
                                        fabric.advertise_node_ips,
                                        HostRouteRules.from_config(config))
        self._claims: dict[str, str] = {}  # node -> server port its annotation claims here
        self._claim_refusals: dict[str, Refusal] = {}
        self._lldp_names = NameIndex()
        self._overlay: dict[str, Node] = {}  # nodes in vxlan mode

    def plan(
        self,
        config: AgentConfig,
        node_objects: Iterable[Any],
        lldp_neighbors: Mapping[str, str] | None = None,
        *,
        capacity: Mapping[str, Capacity] | None = None,
        programmed: Collection[str] = (),
    ) -> tuple[ClusterState, Plan]:
        """(cluster_state(node_objects), plan(config, that, lldp_neighbors, ...))."""
        with self._lock:
            try:
                if config is not self._config and config != self._config:
                    self._reset(config)  # every derived structure depends on the config
                cluster = self._cluster(node_objects)
                return cluster, plan_view(config, self._view(config, cluster, lldp_neighbors),
                                          capacity=capacity, programmed=programmed)
            except BaseException:
                self._reset(None)
                raise

    def _cluster(self, node_objects: Iterable[Any]) -> ClusterState:
        parsed: dict[int, _Parsed] = {}
        by_name: dict[str, Node] = {}
        refusals: list[Refusal] = []
        for obj in node_objects:
            entry = self._parsed.get(id(obj))
            if entry is None or entry[0] is not obj:
                entry = (obj, *parse_checked(obj))
            parsed[id(obj)] = entry  # the entry holds obj, so its id is not reused meanwhile
            node, why = entry[1], entry[2]
            refusals.extend(why)
            if node is None:
                continue
            if node.name in by_name:  # as cluster_state: a file may list a Node twice
                refusals.append(duplicate(node.name))
                continue
            by_name[node.name] = node
        self._parsed = parsed

        before = self._by_name
        changed: dict[str, Node | None] = {
            name: node for name, node in by_name.items()
            if (old := before.get(name)) is not node and old != node}
        changed.update((name, None) for name in before.keys() - by_name.keys())
        for name, node in changed.items():  # unchanged names keep their equal Node objects
            if node is None:
                del before[name]
                del self._names[bisect_left(self._names, name)]
                continue
            if name not in before:
                insort(self._names, name)
            before[name] = node
        self._apply(changed)
        if changed:
            self._nodes = tuple(before[name] for name in self._names)
        return ClusterState(self._nodes, tuple(refusals))

    def _apply(self, changed: Mapping[str, Node | None]) -> None:
        config, ownership = self._config, self._ownership
        assert config is not None and ownership is not None
        ownership.update(changed)
        ports = set(config.fabric.server_ports)
        for name, node in changed.items():
            self._claims.pop(name, None)
            self._claim_refusals.pop(name, None)
            self._overlay.pop(name, None)
            if node is None:
                self._lldp_names.discard(name)
                continue
            self._lldp_names.add(name)
            port, why = annotation_claim(node, config.switch.hostname, ports)
            if why is not None:
                self._claim_refusals[name] = why
            elif port is not None:
                self._claims[name] = port
            if (node.routing or config.fabric.default_routing) == "vxlan":
                self._overlay[name] = node

    def _view(self, config: AgentConfig, cluster: ClusterState,
              lldp_neighbors: Mapping[str, str] | None) -> ClusterView:
        ownership = self._ownership
        assert ownership is not None
        fabric, by_name = config.fabric, self._by_name

        def age(name: str) -> tuple[str, str]:
            node = by_name.get(name)
            return (node.created, name) if node is not None else ("", name)

        attachments, att_refusals = decide(
            ports=set(fabric.server_ports),
            static=fabric.attachments,
            annotated=sorted(self._claims.items()),
            refusals=[self._claim_refusals[n] for n in sorted(self._claim_refusals)],
            lldp_neighbors=(lldp_neighbors or {}) if fabric.lldp else {},
            match=self._lldp_names.match,
            age=age,
        )
        return ClusterView(cluster, by_name, attachments, att_refusals, ownership.prefixes,
                           ownership.refusals(), tuple(self._overlay.values()))
