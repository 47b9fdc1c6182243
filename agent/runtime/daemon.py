"""`fabric-agent run`: the wiring. Informers -> cluster state -> plan() -> appliers -> observed
state -> status outputs, in one event loop.

Which backend runs the data plane (Linux netlink, SONiC Redis) and who owns FRR is decided by
agent.apply.backends; from here on every applier is the same contract (agent.apply.contract).
Every loop runs until cancelled: one that ends, by returning or raising, takes the agent down
loudly so systemd restarts it. Stopping the agent (SIGTERM, crash) leaves FRR and the data plane
exactly as they are: forwarding goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agent.apply.backends import Backend, open_backend
from agent.apply.frr.observer import BgpObserver
from agent.config import AgentConfig, config_warnings
from agent.informers.kubeapi import KubeApi
from agent.informers.lldp import LldpPoller
from agent.informers.node_fields import node_informer
from agent.informers.pods import PodWatcher
from agent.informers.services import ServiceWatch
from agent.runtime.reconcile import Dirty, Reconciler, RuntimeFeedback
from agent.runtime.systemd import Systemd
from agent.status.announcers import VipRouteObserver
from agent.status.file import group_id, summary_line, write_status_file
from agent.status.headroom import HeadroomMonitor
from agent.status.metrics import Metrics
from agent.status.model import EventLog
from agent.status.state import ObservedState
from agent.status.view import AgentView

log = logging.getLogger(__name__)
STOP_SECONDS = 5.0


class Agent:
    def __init__(self, api: KubeApi, backend: Backend) -> None:
        self.config = config = backend.config
        self.backend = backend
        self.events = EventLog(max_events=config.status.event_history,
                               max_age_seconds=config.status.event_history_seconds)
        self.dirty = Dirty()
        watch_timeout = float(config.kubernetes.watch_timeout_seconds)
        self.nodes = node_informer(api, label_selector=config.kubernetes.node_selector or None,
                                   on_change=self.dirty.mark, watch_timeout=watch_timeout)
        self.state = ObservedState(started_at=time.time(), hostname=config.switch.hostname,
                                   nodes=self.nodes, pods_watched=config.kubernetes.watch_pods)
        self.view = AgentView(self.state)
        self.pods = (PodWatcher(api, self.state.pods, self.events, lambda: None, watch_timeout)
                     if config.kubernetes.watch_pods else None)
        # Services and EndpointSlices only when VIPs may be accepted: a cluster's Services are
        # not this leaf's business otherwise (and RBAC need not grant them).
        self.services = (ServiceWatch(api, on_change=self.dirty.mark,
                                      watch_timeout=watch_timeout)
                         if config.fabric.service_pools else None)
        self.lldp = (LldpPoller(config.fabric.lldp_socket, self.dirty.mark,
                                interval=config.fabric.lldp_poll_seconds)
                     if config.fabric.lldp else None)
        self.bgp = BgpObserver(config.frr.vtysh, config.frr.pathspace)
        # Which nodes the leaf forwards each Service VIP to, read from its FIB (status only).
        self.vip_routes = VipRouteObserver(config.dataplane.route_protocol)
        self.headroom = HeadroomMonitor(config, self.events)
        self.metrics = Metrics()
        self.systemd = Systemd()
        self.status_gid = group_id(config.status.socket_group)  # ValueError: no such group
        self.feedback = RuntimeFeedback(self.dirty, self.headroom, self.state, self.events)
        self.frr = backend.frr
        self.dataplane = backend.make_dataplane(self.feedback)
        self.reconciler = Reconciler(
            config, state=self.state, view=self.view, nodes=self.nodes, lldp=self.lldp,
            pods=self.pods, services=self.services, frr=self.frr, dataplane=self.dataplane,
            dirty=self.dirty,
            headroom=self.headroom, events=self.events, metrics=self.metrics,
            on_reconciled=self.on_reconciled)

    def on_reconciled(self) -> None:
        self.publish_status()
        self.systemd.ready()

    def publish_status(self) -> None:
        """The status file and systemd's STATUS line, from the observed state."""
        if self.lldp is not None:
            self.state.lldp_error = self.lldp.error
        try:
            write_status_file(self.config.status.state_file, self.state, self.status_gid)
        except OSError as exc:
            log.debug("cannot write status file: %s", exc)
        self.systemd.status(summary_line(self.state))

    async def bgp_loop(self) -> None:
        """FRR's sessions, polled so that status answers never wait on vtysh."""
        while True:
            for port, kind in await self.bgp.poll():
                peer = self.bgp.peers.get(port)
                self.events.emit(kind, port, peer.state if peer else "removed")
            self.state.peers = self.bgp.peers
            await self.vip_routes.poll(self.state)
            self.reconciler.refresh_headroom()  # "used" follows the tables, not only reconciles
            self.metrics.update_from(self.view)
            self.metrics.update_offload(self.state.offload_failed)
            await asyncio.sleep(self.config.status.bgp_poll_seconds)

    def loops(self) -> list[Callable[[], Awaitable[None]]]:
        resync_seconds = {self.frr: self.config.frr.resync_seconds,
                          self.dataplane: self.config.dataplane.resync_seconds}
        loops: list[Callable[[], Awaitable[None]]] = [
            self.nodes.run, self.reconciler.run, self.bgp_loop,
            _named("status", lambda: self.systemd.status_loop(self.publish_status)),
        ]
        for applier, seconds in resync_seconds.items():
            loops.append(_named(f"resync {applier.name}",
                                lambda a=applier, s=seconds: self.reconciler.resync_loop(a, s)))
            loops.extend(applier.loops())
        if self.lldp is not None:
            loops.append(self.lldp.run)
        if self.services is not None:
            watch = self.services
            loops += [_named("services", lambda: watch.services.run()),
                      _named("endpointslices", lambda: watch.slices.run())]
        return loops

    async def run(self) -> None:
        await self.dataplane.start()
        await self.frr.start()
        server = self._status_server()
        await server.start()
        metrics_http = None
        if self.config.status.metrics_listen:
            host, _, port = self.config.status.metrics_listen.rpartition(":")
            metrics_http = self.metrics.start_http(host.strip("[]"), int(port))
        tasks = [asyncio.create_task(loop(), name=loop.__name__) for loop in self.loops()]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a crashed loop is a bug: surface it, systemd restarts us
                raise RuntimeError(f"loop {task.get_name()} ended")
        finally:
            for task in tasks:
                task.cancel()
            # A loop that swallows its cancellation (redis-py does, mid-command) must not keep
            # the agent from stopping: systemd would kill it after TimeoutStopSec anyway.
            _, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for task in stuck:
                log.error("loop %s did not stop within %.0f s", task.get_name(), STOP_SECONDS)
            if self.pods is not None:
                await self.pods.close()
            await server.stop()
            if metrics_http is not None:
                metrics_http.close()
            await self.dataplane.close()  # closes sockets only: the data plane stays
            await self.frr.close()
            self.events.close()

    def _status_server(self) -> Any:
        from agent.status.server import StatusServer  # grpc only where the daemon runs

        st = self.config.status
        return StatusServer(self.view, self.events, socket_path=st.socket,
                            socket_group=st.socket_group, tcp_address=st.listen,
                            tls_cert=st.tls_cert, tls_key=st.tls_key,
                            tls_client_ca=st.tls_client_ca)


def _named(name: str, loop: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    loop.__name__ = name  # type: ignore[attr-defined]  # task names in tracebacks and logs
    return loop


def handle_signals(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT stop the agent; stopping leaves FRR and the kernel exactly as they
    are, forwarding goes on. SIGHUP is logged and ignored: the agent does not re-read its
    configuration in place. Without a handler SIGHUP's default action ended the agent silently,
    leaving a stale socket, and systemd took that for a clean exit."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
        "SIGHUP ignored: the configuration is not re-read in place; restart the agent "
        "(systemctl restart kube-fabric-agent) to apply a changed file"))


async def run_agent(config: AgentConfig) -> None:
    """Raises agent.errors.StartupError when the backend cannot start (agent.cli exits)."""
    backend = await open_backend(config)
    api = KubeApi.from_kubeconfig(backend.config.kubernetes.kubeconfig)
    agent = Agent(api, backend)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    handle_signals(loop, main.cancel)
    log.info("kube-fabric-agent starting on %s (AS%s)", agent.config.switch.hostname,
             agent.config.switch.asn)
    for warning in config_warnings(agent.config):
        log.warning("%s", warning)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await agent.run()
    finally:
        agent.systemd.stopping()
        await api.aclose()
        await backend.close()
        log.info("stopped; FRR and the data plane keep the last applied state")
