"""The reconcile loop and the runtime's feedback, without root: real plan(), real informer store,
real headroom monitor, status file and view; the appliers are recording stand-ins.

The stand-ins (RecordingApplier) say at their top what they are: they keep the contract of
agent.apply.contract and remember what they were asked, so a test can prove what the loop did
and did not apply. The real appliers are tested on their own (FRR against real daemons, Linux in
namespaces and with a fake netlink channel, SONiC against a real redis-server) and together in
tests/integration.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from agent.apply.backends import Backend
from agent.apply.contract import ApplyResult, HardwareReading, Held, Outcome
from agent.config import AgentConfig, parse_config
from agent.headroom.resources import Capacity
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.informers.services import ServiceWatch
from agent.runtime.daemon import Agent, handle_signals
from agent.runtime.reconcile import Dirty, Reconciler, RuntimeFeedback
from agent.status.file import write_status_file
from agent.status.headroom import HeadroomMonitor
from agent.status.metrics import Metrics
from agent.status.model import EventLog
from agent.status.state import ObservedState
from agent.status.view import AgentView


class RecordingApplier:
    """A stand-in applier (not a mock of any real one): keeps the contract, records every
    desired state it is given, holds exactly what it was last asked for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: list[Any] = []
        self.resyncs: list[ApplyResult | None] = []  # what resync() returns next, in order
        self.reports: list[Outcome] = []
        self.routes: frozenset[str] = frozenset()

    async def start(self) -> None:
        pass

    async def apply(self, desired: Any) -> ApplyResult:
        self.applied.append(desired)
        if self.name == "dataplane":
            self.routes = frozenset(desired.prefixes)
        return ApplyResult(self.name, True, "applied", time.time(), 0.001)

    async def resync(self) -> ApplyResult | None:
        return self.resyncs.pop(0) if self.resyncs else None

    async def close(self) -> None:
        pass

    def held(self) -> Held:
        return {"routes": self.routes}

    def counts(self) -> Mapping[str, int]:
        return {}

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return ()

    async def report(self, outcome: Outcome) -> None:
        self.reports.append(outcome)


def config(tmp_path: Path, service_pools: tuple[str, ...] = (), **headroom: Any) -> AgentConfig:
    return parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": {"server_ports": ["swp1", "swp2"], "pod_supernets": ["10.244.0.0/16"],
                   "service_pools": list(service_pools)},
        "frr": {"debounce_ms": 0},
        "kubernetes": {"watch_pods": False},
        "headroom": headroom,
        "status": {"state_file": str(tmp_path / "status.json")},
    })


def node(name: str, cidr: str, port: str, created: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"kube-fabric-agent.io/switch-port": f"leaf1/{port}"}},
            "spec": {"podCIDRs": [cidr]}, "status": {}}


class Runtime:
    """The runtime's pieces as daemon.Agent wires them, around two recording appliers."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.config = cfg
        self.events = EventLog(max_events=100, max_age_seconds=3600)
        self.dirty = Dirty()
        self.nodes = Informer(cast(KubeApi, object()), "/api/v1/nodes",
                              on_change=self.dirty.mark)
        self.state = ObservedState(started_at=time.time(), hostname="leaf1", nodes=self.nodes)
        self.view = AgentView(self.state)
        self.headroom = HeadroomMonitor(cfg, self.events)
        self.feedback = RuntimeFeedback(self.dirty, self.headroom, self.state, self.events)
        self.frr = RecordingApplier("frr")
        self.dataplane = RecordingApplier("dataplane")
        self.reconciled = 0
        self.services = (ServiceWatch(cast(KubeApi, object()), on_change=self.dirty.mark,
                                      watch_timeout=300.0)
                         if cfg.fabric.service_pools else None)
        self.reconciler = Reconciler(
            cfg, state=self.state, view=self.view, nodes=self.nodes, lldp=None, pods=None,
            services=self.services, frr=self.frr, dataplane=self.dataplane, dirty=self.dirty,
            headroom=self.headroom, events=self.events, metrics=Metrics(),
            on_reconciled=self._reconciled)

    def _reconciled(self) -> None:
        self.reconciled += 1

    def list_nodes(self, *objects: dict[str, Any]) -> None:
        """What the informer does with a complete list."""
        self.nodes.store = {o["metadata"]["name"]: o for o in objects}
        self.nodes.synced = self.nodes.connected = True
        self.dirty.mark()


    def list_services(self, services: list[dict[str, Any]], slices: list[dict[str, Any]]
                      ) -> None:
        """What the two informers do with their complete lists."""
        assert self.services is not None
        for informer, objects in ((self.services.services, services),
                                  (self.services.slices, slices)):
            informer.store = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o
                              for o in objects}
            informer.synced = informer.connected = True
        self.dirty.mark()


def status_file(rt: Runtime) -> Any:
    write_status_file(rt.config.status.state_file, rt.state)
    return json.loads(Path(rt.config.status.state_file).read_text())


async def until(predicate: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_nothing_is_applied_before_the_first_complete_node_list(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path))
    task = asyncio.create_task(rt.reconciler.run())
    try:
        # On SONiC the first CRM reading arrives before any Node list and changes the capacity:
        # it marks the plan dirty. Planning now would apply an empty plan: every session gone.
        rt.feedback.hardware(HardwareReading("crm", {"ipv4_routes": Capacity(8000, "crm")}))
        assert rt.dirty.pending
        await until(lambda: not rt.dirty.pending, "the loop to take the mark")
        await asyncio.sleep(0.05)  # a pass that went ahead would have applied by now
        assert rt.frr.applied == [] and rt.dataplane.applied == []
        assert rt.reconciled == 0

        rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
        await until(lambda: bool(rt.frr.applied), "the first apply")
        peers = {p.port: p.node for p in rt.frr.applied[0].server_peers}
        assert peers == {"swp1": "n1", "swp2": None}
        assert len(rt.dataplane.applied) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def lb_service(name: str, vip: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": vip}]}}}


async def test_with_service_pools_nothing_is_applied_before_services_are_listed(
    tmp_path: Path,
) -> None:
    """A plan made before the Services are listed has no VIP: applied, it would withdraw
    every VIP the leaf carries (after an agent restart, say) until the list arrives."""
    rt = Runtime(config(tmp_path, service_pools=("203.0.113.0/24",)))
    ready = node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z")
    ready["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    task = asyncio.create_task(rt.reconciler.run())
    try:
        rt.list_nodes(ready)
        await until(lambda: not rt.dirty.pending, "the loop to take the mark")
        await asyncio.sleep(0.05)  # a pass that went ahead would have applied by now
        assert rt.frr.applied == [], "applied before the Services were listed"

        rt.list_services([lb_service("web", "203.0.113.10")], [])
        await until(lambda: bool(rt.frr.applied), "the first apply")
        peer = next(p for p in rt.frr.applied[0].server_peers if p.port == "swp1")
        assert peer.vips_v4 == ("203.0.113.10/32",)
        assert [v.vip for v in rt.reconciler.view.s.plan.services] == ["203.0.113.10"]
        kinds = [(e.kind, e.subject) for e in rt.events.history()]
        assert ("service_vip_added", "203.0.113.10") in kinds, kinds
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_hardware_capacity_change_plans_again(tmp_path: Path) -> None:
    # devlink on Linux, CRM on SONiC: a table resized (devlink resource set + reload) must
    # admit the nodes waiting for room at once, without waiting for a Node change.
    rt = Runtime(config(tmp_path, profile="generic"))
    rt.list_nodes(node("old", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"),
                  node("new", "10.244.2.0/24", "swp2", "2026-01-02T00:00:00Z"))
    small = HardwareReading("devlink", {"ipv4_routes": Capacity(2, "devlink:pci/x:/kvd")})
    rt.feedback.hardware(small)
    rt.dirty.take()
    await rt.reconciler.reconcile()
    admission = rt.frr.applied[-1]
    assert [p.node for p in admission.server_peers if p.accept_v4] == ["old"]

    rt.feedback.hardware(small)  # the same reading again: nothing to plan
    assert not rt.dirty.pending
    rt.feedback.hardware(HardwareReading("devlink", {"ipv4_routes": Capacity(64, "devlink:x")}))
    assert rt.dirty.pending, "a larger table must re-plan admission"
    rt.dirty.take()
    await rt.reconciler.reconcile()
    assert sorted(p.node for p in rt.frr.applied[-1].server_peers if p.accept_v4) == [
        "new", "old"]
    assert [r.source for r in rt.state.headroom if r.resource == "ipv4_routes"] == [
        "devlink:x"]


async def test_changes_during_an_apply_cause_exactly_one_more_pass(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path))
    gate = asyncio.Event()
    applied = rt.dataplane.apply

    async def slow_apply(desired: Any) -> ApplyResult:
        await gate.wait()
        return await applied(desired)

    rt.dataplane.apply = slow_apply  # type: ignore[method-assign]
    task = asyncio.create_task(rt.reconciler.run())
    try:
        rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
        await until(lambda: not rt.dirty.pending, "the first pass to start")
        for _ in range(5):  # a burst while the first pass is applying
            rt.dirty.mark()
        gate.set()
        await until(lambda: len(rt.frr.applied) == 2, "the second pass")
        await asyncio.sleep(0.05)
        assert len(rt.frr.applied) == 2 and not rt.dirty.pending
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_change_after_a_quiet_period_is_applied_at_once_and_the_next_waits_the_gap(
    tmp_path: Path
) -> None:
    # frr.debounce_ms is the minimum gap between passes, not a wait before each one: with the
    # largest allowed (10 s), the first change must still be applied at once.
    cfg = config(tmp_path)
    cfg = cfg.model_copy(update={"frr": cfg.frr.model_copy(update={"debounce_ms": 10_000})})
    rt = Runtime(cfg)
    task = asyncio.create_task(rt.reconciler.run())
    try:
        rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
        await until(lambda: len(rt.frr.applied) == 1, "the first pass, well before 10 s")
        for _ in range(5):  # a burst right after: one more pass, not before the gap
            rt.dirty.mark()
        await asyncio.sleep(0.3)
        assert len(rt.frr.applied) == 1 and rt.dirty.pending
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_resync_asking_for_a_second_look_gets_it_without_holding_the_lock(
    tmp_path: Path
) -> None:
    rt = Runtime(config(tmp_path))
    rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
    rt.dirty.take()
    await rt.reconciler.reconcile()
    rt.frr.resyncs = [
        ApplyResult("frr", True, "drift-suspected", time.time(), 0.0, recheck_after=0.2),
        ApplyResult("frr", True, "repaired", time.time(), 0.1),
    ]
    resync = asyncio.create_task(rt.reconciler.resync(rt.frr))
    await until(lambda: len(rt.frr.resyncs) == 1, "the first look")
    await rt.reconciler.reconcile()  # an apply during the settle time is not held up
    assert len(rt.frr.applied) == 2 and not resync.done()
    result = await resync
    assert result is not None and result.action == "repaired" and rt.frr.resyncs == []


async def test_results_reach_the_status_events_and_the_appliers_report(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path))
    rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
    await rt.reconciler.reconcile()
    assert rt.view.status().health == "ok"
    assert [o.results["frr"].action for o in rt.frr.reports] == ["applied"]
    assert [(e.subject, e.message) for e in rt.events.history() if e.kind == "apply_result"] \
        == [("dataplane", "applied"), ("frr", "applied")]
    doc = status_file(rt)
    assert doc["frr_last_apply"]["action"] == "applied" and doc["frr_last_apply"]["ok"]
    assert doc["attachments"][0]["node"] == "n1"
    assert doc["summary"] == "Kubernetes API connected; 1 attachments, 0 refusals; FRR applied"


def test_offload_failures_degrade_health_and_raise_one_event_each_way(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path))
    rt.nodes.synced = rt.nodes.connected = True
    rt.feedback.offload_failed({4: 0, 6: 0})
    assert rt.view.status().health == "ok"

    rt.feedback.offload_failed({4: 1, 6: 1})
    status = rt.view.status()
    assert status.health == "degraded"
    assert status.health_reasons == (
        "last dataplane apply failed: 2 routes not offloaded to the ASIC (rt_offload_failed): "
        "IPv4 1, IPv6 1",)
    rt.feedback.offload_failed({4: 2, 6: 1})
    assert "3 routes not offloaded" in rt.view.status().health_reasons[0]
    on_disk = status_file(rt)
    assert on_disk["offload_failed_routes"] == {"ipv4": 2, "ipv6": 1}

    rt.feedback.offload_failed({4: 0, 6: 0})
    assert rt.view.status().health == "ok"
    crossed = [e for e in rt.events.history() if e.kind == "threshold_crossed"]
    assert [(e.subject, e.message) for e in crossed] == [
        ("rt_offload_failed",
         "2 routes not offloaded to the ASIC (rt_offload_failed): IPv4 1, IPv6 1"),
        ("rt_offload_failed",
         "every route is offloaded to the ASIC again (no rt_offload_failed)"),
    ]
    rt.events.close()


async def test_a_loop_that_ends_takes_the_agent_down(tmp_path: Path) -> None:
    """No task may die alone: a loop that returns (here the Node informer, as a bug would make
    it) ends the agent with an error naming it, so systemd restarts it; the others stop."""
    cfg = config(tmp_path).model_copy(update={"status": config(tmp_path).status.model_copy(
        update={"socket": str(tmp_path / "agent.sock")})})
    closed: list[str] = []

    async def close() -> None:
        closed.append("backend")

    dataplane = RecordingApplier("dataplane")
    backend = Backend(cfg, RecordingApplier("frr"), lambda feedback: dataplane, close)
    agent = Agent(cast(KubeApi, object()), backend)

    async def informer_that_returns() -> None:
        await asyncio.sleep(0.05)

    agent.nodes.run = informer_that_returns  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="loop informer_that_returns ended"):
        await asyncio.wait_for(agent.run(), 10.0)
    assert not (tmp_path / "agent.sock").exists(), "the status server was stopped"


async def test_a_failed_apply_is_tried_again_without_a_node_change(tmp_path: Path) -> None:
    rt = Runtime(config(tmp_path))
    rt.reconciler.retry_first_seconds = 0.05
    outcomes = [False, False, True]  # the fault clears after two tries
    applied = rt.frr.apply

    async def flaky_apply(desired: Any) -> ApplyResult:
        await applied(desired)
        ok = outcomes.pop(0) if outcomes else True
        return ApplyResult("frr", ok, "applied" if ok else "failed", time.time(), 0.01,
                           error=None if ok else "frr-reload.py --reload failed")

    rt.frr.apply = flaky_apply  # type: ignore[method-assign]
    task = asyncio.create_task(rt.reconciler.run())
    try:
        rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
        await until(lambda: len(rt.frr.applied) == 3, "two retries")
        assert rt.view.status().health == "ok"
        await asyncio.sleep(0.3)  # a success ends the retries
        assert len(rt.frr.applied) == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_sighup_is_logged_and_ignored_and_sigterm_stops(
    caplog: pytest.LogCaptureFixture
) -> None:
    # Real signals to this process: without the handler SIGHUP's default action would end it.
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    handle_signals(loop, stopped.set)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: "SIGHUP ignored" in caplog.text, "the SIGHUP log line")
        assert not stopped.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stopped.wait(), 5.0)
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def test_the_status_file_is_readable_only_by_the_status_group(tmp_path: Path) -> None:
    # It names nodes and prefixes, which the status socket shows only to its group.
    rt = Runtime(config(tmp_path))
    other = next(g.gr_gid for g in grp.getgrall() if g.gr_gid != os.getgid())
    write_status_file(rt.config.status.state_file, rt.state, other)
    st = os.stat(rt.config.status.state_file)
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, other)


async def test_planning_runs_off_the_event_loop(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan of thousands of Nodes takes seconds; while it runs, the loop must keep serving
    status queries and the watchdog. The stand-in plan waits for a callback only the event loop
    can run: on the loop it would wait out its whole timeout, off the loop it is released at
    once. No wall-clock threshold: the result is the flag, not a duration."""
    import threading

    import agent.runtime.reconcile as reconcile_module

    released = threading.Event()
    outcomes: list[bool] = []
    real_plan_cluster = reconcile_module.plan_cluster

    def plan_waiting_for_the_loop(*args: Any, **kwargs: Any) -> Any:
        loop.call_soon_threadsafe(released.set)
        outcomes.append(released.wait(timeout=3.0))
        return real_plan_cluster(*args, **kwargs)

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(reconcile_module, "plan_cluster", plan_waiting_for_the_loop)
    rt = Runtime(config(tmp_path))
    rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
    await rt.reconciler.reconcile()
    assert outcomes == [True], "plan() ran on the event loop and blocked it"
    assert rt.frr.applied, "the plan made off the loop was applied"


async def test_a_node_frr_refused_is_a_refusal_everywhere_until_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """FRR decides after plan(): a node whose lines it refused must show in the status file,
    the log and the events like any refusal, and leave them when its next apply is clean."""
    rt = Runtime(config(tmp_path))
    why = "FRR refused its configuration on swp1; what was programmed stays: % Unknown command"
    refused = {"n1": why}
    applied = rt.frr.apply

    async def narrowing_apply(desired: Any) -> ApplyResult:
        await applied(desired)
        return ApplyResult("frr", True, "applied-narrowed", time.time(), 0.001,
                           refused=dict(refused))

    rt.frr.apply = narrowing_apply  # type: ignore[method-assign]
    rt.list_nodes(node("n1", "10.244.1.0/24", "swp1", "2026-01-01T00:00:00Z"))
    with caplog.at_level("WARNING"):
        await rt.reconciler.reconcile()
    doc = status_file(rt)
    assert f"node n1: {why}" in doc["refusals"]
    assert "1 refusals" in doc["summary"]
    assert [(e.subject, e.message) for e in rt.events.history() if e.kind == "refusal"] == [
        ("n1", f"node: {why}")]
    assert any(why in r.getMessage() for r in caplog.records)

    refused.clear()  # the node's value is fixed: the next apply is clean
    await rt.reconciler.reconcile()
    assert status_file(rt)["refusals"] == []
