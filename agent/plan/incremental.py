"""PlanCache: plan() change by change, with work proportional to what changed.

Every Node event re-plans the whole cluster; with thousands of Nodes parsing them all and
deciding address ownership from scratch cost seconds per change. The cache keeps, between two
plans of the same config: each Node object's parse, the ownership indexes (agent.plan.ownership),
the annotation claims on this switch, the names LLDP is matched against and the overlay nodes;
and each Service and EndpointSlice object's parse. A plan then parses only the objects it has
not seen, updates those structures with the Nodes
that differ, and hands the resulting ClusterView to the same assembly plan() uses
(build.plan_view). The result equals plan(config, cluster_state(objects), ...) for the same
inputs: tests/test_incremental_plan.py checks it after every step of random churn.

Parses are keyed by the identity of the object, not by resourceVersion: the Node informer keeps
slimmed objects without resourceVersion (so a heartbeat-only update compares equal and costs no
re-plan) and replaces a stored object on change, never mutates it. An object seen before is
therefore the same content, and a changed Node is a new object. Callers must not mutate the
objects they pass in. Services and EndpointSlices are kept the same way; what plan() reads of
them (agent.cluster.services.ServiceState) is assembled again from the parses when any object
came or went (O(Services + slices), no endpoint is read again), and reused when none did.
"""

from __future__ import annotations

import ipaddress
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from agent.cluster.attachments import NameIndex, annotation_claim, decide
from agent.cluster.nodes import ClusterState, Node, Refusal, duplicate, parse_checked
from agent.cluster.services import (
    NO_SERVICES,
    ServiceState,
    assemble,
    parse_service_checked,
    parse_slice_checked,
)
from agent.config import AgentConfig
from agent.headroom.resources import Capacity
from agent.plan.build import ClusterView, plan_view
from agent.plan.model import Plan
from agent.plan.ownership import HostRouteRules, Ownership

_Parsed = tuple[Any, Node | None, tuple[Refusal, ...]]
_P = TypeVar("_P")


class _Parses(Generic[_P]):
    """Parses of the objects of one kind, by object identity (each entry holds its object, so
    an id is not reused while it is here), and what was assembled from the last list."""

    def __init__(self, parse: Callable[[Any], _P]) -> None:
        self.parse = parse
        self.by_id: dict[int, tuple[Any, _P]] = {}
        self.order: tuple[int, ...] = ()
        self.parses: list[_P] = []  # of the last list, in its order (an object twice: twice)

    def update(self, objects: tuple[Any, ...]) -> bool:
        """Parse the objects not seen before; False when the list is the very same objects in
        the same order as last time (nothing to assemble again)."""
        order = tuple(map(id, objects))
        if order == self.order:
            return False
        by_id: dict[int, tuple[Any, _P]] = {}
        for obj in objects:
            entry = self.by_id.get(id(obj))
            if entry is None or entry[0] is not obj:
                entry = (obj, self.parse(obj))
            by_id[id(obj)] = entry
        self.by_id, self.order = by_id, order
        self.parses = [by_id[i][1] for i in order]
        return True


class PlanCache:
    """Owned by the one caller that plans (the Reconciler); a lock makes concurrent calls
    safe but serial. Any error drops everything, so the next plan starts from scratch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, config: AgentConfig | None) -> None:
        self._config = config
        self._parsed: dict[int, _Parsed] = {}  # id(object) -> (object, its parse)
        self._dupes = False  # some object or Node name appears twice: walk every object
        self._refused = 0  # parses with refusals: their input order orders the refusals
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
        self._service_parses = _Parses(parse_service_checked)
        self._slice_parses = _Parses(parse_slice_checked)
        self._services: ServiceState = NO_SERVICES

    def plan(
        self,
        config: AgentConfig,
        node_objects: Iterable[Any],
        lldp_neighbors: Mapping[str, str] | None = None,
        *,
        capacity: Mapping[str, Capacity] | None = None,
        programmed: Collection[str] = (),
        services: Iterable[Any] = (),
        endpoint_slices: Iterable[Any] = (),
    ) -> tuple[ClusterState, Plan]:
        """(cluster_state(node_objects), plan(config, that, lldp_neighbors, ...,
        services=service_state(services, endpoint_slices)))."""
        with self._lock:
            try:
                if config is not self._config and config != self._config:
                    self._reset(config)  # every derived structure depends on the config
                cluster = self._cluster(node_objects)
                view = replace(self._view(config, cluster, lldp_neighbors),
                               services=self._service_state(config, services, endpoint_slices))
                return cluster, plan_view(config, view, capacity=capacity,
                                          programmed=programmed)
            except BaseException:
                self._reset(None)
                raise

    def _service_state(self, config: AgentConfig, services: Iterable[Any],
                       endpoint_slices: Iterable[Any]) -> ServiceState:
        if not config.fabric.service_pools:
            return NO_SERVICES  # plan() reads nothing of them: no parse, no memory
        changed = self._service_parses.update(tuple(services))
        changed = self._slice_parses.update(tuple(endpoint_slices)) or changed
        if changed:
            self._services = assemble(self._service_parses.parses, self._slice_parses.parses)
        return self._services

    def _cluster(self, node_objects: Iterable[Any]) -> ClusterState:
        objects = tuple(node_objects)
        fast = self._fast_changes(objects)
        if fast is not None:
            changed, refusals = fast
        else:
            changed, refusals = self._all_changes(objects)
        before = self._by_name
        renamed = False  # a name came or went: positions in the name order moved
        for name, node in changed.items():  # unchanged names keep their equal Node objects
            if node is None:
                del before[name]
                del self._names[bisect_left(self._names, name)]
                renamed = True
                continue
            if name not in before:
                insort(self._names, name)
                renamed = True
            before[name] = node
        self._apply(changed)
        if renamed:
            self._nodes = tuple(before[name] for name in self._names)
        elif changed:  # same names: swap the changed Nodes in place, no walk in Python
            nodes = list(self._nodes)
            for name in changed:
                nodes[bisect_left(self._names, name)] = before[name]
            self._nodes = tuple(nodes)
        return ClusterState(self._nodes, refusals)

    def _fast_changes(self, objects: tuple[Any, ...]
                      ) -> tuple[dict[str, Node | None], tuple[Refusal, ...]] | None:
        """The changed Nodes from the objects not seen before and the ones gone, without a walk
        over every object in Python; None when that cannot be exact (an object or a name
        twice, objects with refusals, whose order in the input orders the refusals)."""
        by_id = dict(zip(map(id, objects), objects, strict=True))  # in C, no Python loop
        if len(by_id) != len(objects) or self._dupes or self._refused:
            return None
        gone = [self._parsed.pop(i) for i in self._parsed.keys() - by_id.keys()]
        fresh = [by_id[i] for i in by_id.keys() - self._parsed.keys()]
        changed: dict[str, Node | None] = {}
        for _, node, _ in gone:
            if node is not None:
                changed[node.name] = None
        for obj in fresh:
            node, why = parse_checked(obj)
            self._parsed[id(obj)] = (obj, node, why)
            if why:
                self._refused += 1
            if node is None:
                continue
            if (node.name in changed and changed[node.name] is not None) or (
                    node.name in self._by_name and node.name not in changed):
                self._dupes = True  # a second object for a name still present
            changed[node.name] = node
        if self._dupes or self._refused:
            return self._all_changes(objects)
        for name, node in list(changed.items()):
            old = self._by_name.get(name)
            if node is not None and old is not None and old == node:
                del changed[name]  # an equal re-parse: nothing to do
        return changed, ()

    def _all_changes(self, objects: tuple[Any, ...]
                     ) -> tuple[dict[str, Node | None], tuple[Refusal, ...]]:
        """As cluster_state, over every object, reusing the parses of objects seen before."""
        parsed: dict[int, _Parsed] = {}
        by_name: dict[str, Node] = {}
        refusals: list[Refusal] = []
        dupes = False
        for obj in objects:
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
                dupes = True
                continue
            by_name[node.name] = node
        self._parsed = parsed
        self._dupes = dupes or len(parsed) != len(objects)
        self._refused = sum(1 for e in parsed.values() if e[2])

        before = self._by_name
        changed: dict[str, Node | None] = {
            name: node for name, node in by_name.items()
            if (old := before.get(name)) is not node and old != node}
        changed.update((name, None) for name in before.keys() - by_name.keys())
        return changed, tuple(refusals)

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
