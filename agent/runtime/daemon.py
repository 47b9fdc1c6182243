"""`fabric-agent run`: informers -> cluster state -> plan() -> appliers, in one event loop.

Reconciliation is single-flight and coalescing: changes set a flag; one loop waits a short
debounce, plans from the latest state and applies (data plane first, so the routes FRR
redistributes already exist, then FRR). Changes that arrive during an apply cause exactly one
more pass, never a queue, so a flapping object cannot start a reload storm.
Nothing is applied before the first complete Node list: an empty store would mean withdrawing
every session, and the agent never withdraws because the API server is down or slow.

On SONiC (dataplane.backend sonic) the daemon also (agent.apply.sonic.runtime):
- fills the switch's identity from CONFIG_DB before anything starts, and leaves FRR alone
  unless the routing config mode is split (prepare_sonic);
- polls CRM every CRM|Config polling_interval for the headroom's capacity, usage, thresholds;
- writes its attachments and appliers' summary to STATE_DB after each reconcile and resync.
On Linux it asks the kernel to announce routes the ASIC refused (fib_notify_on_flag_change=2)
and reports them as a data plane failure (health degraded) and one threshold_crossed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import sdnotify

from agent.apply.frr.observer import BgpObserver
from agent.apply.frr.reload import FrrApplier
from agent.apply.frr.render import UnsafeValue, render_frr
from agent.cli import EXIT_CONFIG
from agent.cluster.nodes import cluster_state
from agent.config import AgentConfig, ConfigError
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.informers.lldp import LldpPoller
from agent.informers.pods import PodWatcher
from agent.plan.build import FrrDesired, Plan, originated_only, plan
from agent.plan.model import DataplaneDesired
from agent.status.file import Status, write_status_file
from agent.status.headroom import HeadroomMonitor, discover_devlink, kernel_route_counts
from agent.status.metrics import Metrics
from agent.status.model import (
    ApplierResult,
    EventLog,
    attachment_events,
    refusal_events,
)
from agent.status.view import AgentState, AgentView

if TYPE_CHECKING:
    from agent.apply.sonic.applier import SonicDataplane
    from agent.apply.sonic.crm import CrmSnapshot
    from agent.apply.sonic.db import SonicDb
    from agent.apply.sonic.runtime import StateDbPublisher

log = logging.getLogger(__name__)
STARTUP_GRACE_SECONDS = 20.0
DEVLINK_POLL_SECONDS = 300.0
# state.applies key of the pseudo-result that carries offload failures into the health reasons
# (applier "dataplane": the data plane's routes did not all reach the hardware).
OFFLOAD_KEY = "offload"


class DataplaneApplier(Protocol):
    async def start(self) -> None: ...
    async def apply(self, desired: DataplaneDesired) -> Any: ...
    async def resync(self) -> Any: ...
    async def close(self) -> None: ...
    def held(self) -> tuple[set[str], set[str]]: ...


class Agent:
    def __init__(self, config: AgentConfig, api: KubeApi, *, sonic_db: SonicDb | None = None,
                 frr_refusal: str | None = None) -> None:
        """`sonic_db`: the SONiC databases run_agent() opened (else opened on start);
        `frr_refusal`: why FRR must not be managed here (agent.apply.sonic.runtime.frr_refusal), or
        None to manage it."""
        self.config = config
        self.frr_refusal = frr_refusal
        self.status = Status()
        self.events = EventLog(max_events=config.status.event_history,
                               max_age_seconds=config.status.event_history_seconds)
        self.applier = FrrApplier(config.frr)
        self.nodes = Informer(
            api,
            "/api/v1/nodes",
            label_selector=config.kubernetes.node_selector or None,
            on_change=self.mark_dirty,
            watch_timeout=float(config.kubernetes.watch_timeout_seconds),
        )
        self.state = AgentState(started_at=self.status.started, hostname=config.switch.hostname,
                                nodes=self.nodes, pods_watched=config.kubernetes.watch_pods)
        self.view = AgentView(self.state)
        self.pods = (PodWatcher(api, self.state.pods, self.events, lambda: None,
                                float(config.kubernetes.watch_timeout_seconds))
                     if config.kubernetes.watch_pods else None)
        self.lldp = (
            LldpPoller(config.fabric.lldp_socket, self.mark_dirty,
                       interval=config.fabric.lldp_poll_seconds)
            if config.fabric.lldp
            else None
        )
        self.bgp = BgpObserver(config.frr.vtysh, config.frr.pathspace)
        self.headroom = HeadroomMonitor(config, self.events)
        self.metrics = Metrics()
        self.dataplane: DataplaneApplier | None = None
        self._observed_counts: Callable[[], dict[str, int]] = dict
        self._offload_counts: Callable[[], dict[int, int]] = dict
        self._offload_failed = 0
        self._sonic_db = sonic_db
        self._sonic: SonicDataplane | None = None
        self._state_db: StateDbPublisher | None = None
        self._dataplane_tasks: list[Callable[[], Awaitable[None]]] = []
        self._programmed: tuple[str, ...] = ()
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        self._apply_lock = asyncio.Lock()
        self._known_refusals: set[str] = set()
        self._notifier = sdnotify.SystemdNotifier()
        self._ready_sent = False

    @property
    def reconcile_pending(self) -> bool:
        """A change is waiting for the reconcile loop."""
        return self._dirty.is_set()

    def mark_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._dirty.set()

    # -- data plane ----------------------------------------------------------------------------
    async def start_dataplane(self) -> None:
        cfg = self.config.dataplane
        if cfg.backend == "linux":
            from agent.apply.linux.dataplane import LinuxDataplane

            enable_offload_notifications()
            linux = LinuxDataplane(cfg, on_tamper=self.mark_dirty)
            await linux.start()
            self.dataplane = linux
            self._dataplane_tasks.append(linux.run_events)
            self._observed_counts = linux.observed_counts
            self._offload_counts = linux.offload_failed_counts
            self._dataplane_tasks.append(self.devlink_loop)
        else:
            from agent.apply.sonic.applier import SonicDataplane
            from agent.apply.sonic.db import open_sonic_db
            from agent.apply.sonic.runtime import StateDbPublisher
            from agent.apply.sonic.schema import OverlayMapping

            if self._sonic_db is None:
                self._sonic_db = open_sonic_db(cfg.sonic.database_config)
            db = self._sonic_db
            sonic = SonicDataplane(db, self._ifname_for, overlay=OverlayMapping(
                vlan_id=cfg.sonic.overlay_vlan, vtep_name=cfg.sonic.vtep_name,
                nvo_name=cfg.sonic.nvo_name))
            await sonic.start()  # raises SwssZmqEnabled: orchagent would never see our writes
            self.dataplane = self._sonic = sonic
            self._state_db = StateDbPublisher(db)
            self._dataplane_tasks.append(self.crm_loop)

    # -- reconciliation ------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        debounce = self.config.frr.debounce_ms / 1000.0
        while True:
            await self._dirty.wait()
            await asyncio.sleep(debounce)  # let the rest of a burst arrive
            self._dirty.clear()
            since, self._dirty_since = self._dirty_since, None
            if not self.nodes.synced:
                continue  # the first complete list re-marks dirty
            await self.reconcile(since)

    async def reconcile(self, since: float | None = None) -> None:
        started = time.monotonic()
        cluster = cluster_state(self.nodes.store.values())
        # Admission uses the best capacity known (config > CRM > devlink > profile).
        new = plan(self.config, cluster, self.lldp.neighbors if self.lldp else None,
                   capacity=self.headroom.capacity, programmed=self._programmed)
        before_atts = self.view.attachments()
        before_refusals = self.state.plan.refusals if self.state.plan else ()
        self.state.plan, self.state.cluster = new, cluster
        self._log_refusals([str(r) for r in new.refusals])
        self.status.record_plan(new)
        now = time.time()
        for event in (*attachment_events(before_atts, self.view.attachments(), now),
                      *refusal_events(before_refusals, new.refusals, now)):
            self.events.publish(event)

        async with self._apply_lock:
            dataplane_ok = await self._apply_dataplane(new)
            frr_ok = await self._apply_frr(new)
        if dataplane_ok and frr_ok and new.admission is not None:
            self._programmed = new.admission.admitted  # what the hardware holds now
        self._refresh_headroom()
        self._check_offload()
        await self._publish_state_db(new)
        if self.pods is not None:
            self.pods.sync(a.node for a in new.attachments)
        self.metrics.observe_reconcile(time.monotonic() - started)
        if since is not None:
            latency = time.monotonic() - since
            self.state.last_reconcile_latency = self.status.last_reconcile_latency_seconds = (
                round(latency, 3))
            log.info("change to applied state: %.3fs", latency)
        self.publish_status()
        if not self._ready_sent:
            self._notifier.notify("READY=1")
            self._ready_sent = True

    def _observed(self) -> dict[str, int]:
        """What the tables hold: the kernel's route counts (FRR's routes included) and the
        data plane's own neighbour, FDB and VTEP entries."""
        seen = dict(self._observed_counts())
        if self.config.dataplane.backend == "linux":
            for resource, count in kernel_route_counts().items():
                seen[resource] = max(count, seen.get(resource, 0))
        return seen

    async def _apply_dataplane(self, new: Plan) -> bool:
        if self.dataplane is None:
            return True
        result = await self.dataplane.apply(new.dataplane)
        self._record("dataplane", result.ok, result.action, result.duration, result.error,
                     getattr(result, "changes", 0))
        if not result.ok:
            log.error("data plane %s: %s", result.action, result.error)
        routes, fdb = self.dataplane.held()
        self.state.dataplane_observed = {"routes": routes & set(new.dataplane.prefixes),
                                         "fdb": fdb}
        return bool(result.ok)

    def frr_desired(self, new: Plan) -> FrrDesired:
        """The plan's FRR state, originating on SONiC only the pod CIDRs whose APPL_DB routes
        the data plane holds after this reconcile's apply (see originated_only)."""
        if self.config.dataplane.backend != "sonic":
            return new.frr
        return originated_only(new.frr, self.state.dataplane_observed.get("routes", set()))

    async def _apply_frr(self, new: Plan) -> bool:
        if self.frr_refusal is not None:
            # Not managed (see sonic.runtime.frr_refusal): nothing is written. Failed only
            # while a node wants a BGP session it cannot get; recorded when that changes.
            wants_bgp = any(p.node for p in new.frr.server_peers)
            previous = self.state.applies.get("frr")
            if previous is None or previous.ok == wants_bgp:
                self._record("frr", not wants_bgp, "not-managed", 0.0, self.frr_refusal, 0)
            self.status.frr_last_error = self.frr_refusal
            return True  # the data plane's entries are programmed; admission may rely on them
        try:
            text = render_frr(self.frr_desired(new))
        except UnsafeValue as exc:  # a validator let something through: refuse, keep running
            log.error("not applying: %s", exc)
            self.status.frr_last_error = str(exc)
            return False
        result = await self.applier.apply(text)
        self.status.record_apply(result)
        if result.action != "unchanged":
            self._record("frr", result.ok, result.action, result.duration, result.error,
                         len(result.delta.to_add) + len(result.delta.to_delete))
        return result.ok

    def _record(self, name: str, ok: bool, action: str, duration: float, error: str | None,
                changes: int) -> None:
        applied = ApplierResult(applier=name, ok=ok, action=action, at=time.time(),
                                duration_seconds=round(duration, 3), error=error)
        previous = self.state.applies.get(name)
        self.state.applies[name] = applied
        self.metrics.observe_apply(name, ok, action, duration)
        if name == "dataplane":
            self.status.dataplane_last_apply = {"ok": ok, "action": action, "changes": changes,
                                                "duration_seconds": round(duration, 3),
                                                "error": error}
        if previous is None or previous.ok != ok or changes:
            self.events.emit("apply_result", name, f"{action}" + (f": {error}" if error else "")
                             + (f" ({changes} changes)" if changes else ""))

    # -- periodic loops ------------------------------------------------------------------------
    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.frr.resync_seconds)
            result = await self.applier.resync(self._apply_lock)
            if result is not None:
                self.status.record_apply(result)
                self._record("frr", result.ok, result.action, result.duration, result.error,
                             len(result.delta.to_add) + len(result.delta.to_delete))
                self.publish_status()

    async def dataplane_resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.dataplane.resync_seconds)
            if self.dataplane is None or self.state.plan is None:
                continue
            async with self._apply_lock:
                result = await self.dataplane.resync()
            if result.action not in ("in-sync", "unchanged"):
                log.warning("data plane resync: %s (%s)", result.action, result.error or "")
                self._record("dataplane", result.ok, result.action, result.duration,
                             result.error, getattr(result, "changes", 0))
            # Also rewrites STATE_DB's state after a Redis restart emptied it.
            await self._publish_state_db(self.state.plan)

    async def bgp_loop(self) -> None:
        while True:
            for port, kind in await self.bgp.poll():
                peer = self.bgp.peers.get(port)
                self.events.emit(kind, port, peer.state if peer else "removed")
            self.state.peers = self.bgp.peers
            self._refresh_headroom()  # "used" follows the tables, not only reconciles
            self._check_offload()
            self.metrics.update_from(self.view)
            await asyncio.sleep(self.config.status.bgp_poll_seconds)

    def _refresh_headroom(self) -> None:
        if self.state.plan is not None:
            self.headroom.update(self.state.plan, self._observed())
            self.state.headroom = self.headroom.rows

    def _check_offload(self) -> None:
        """Routes the ASIC refused (rt_offload_failed) make the data plane's health fail: their
        traffic goes through the CPU, the silent overflow headroom exists to catch. One
        threshold_crossed event when the count becomes non-zero, one when it is zero again."""
        counts = self._offload_counts()
        self.status.offload_failed_routes = {"ipv4": counts.get(4, 0), "ipv6": counts.get(6, 0)}
        failed = sum(counts.values())
        if failed == self._offload_failed:
            return
        before, self._offload_failed = self._offload_failed, failed
        if failed:
            message = (f"{failed} routes not offloaded to the ASIC (rt_offload_failed): "
                       f"IPv4 {counts.get(4, 0)}, IPv6 {counts.get(6, 0)}")
            self.state.applies[OFFLOAD_KEY] = ApplierResult(
                applier="dataplane", ok=False, action="offload-failed", at=time.time(),
                duration_seconds=0.0, error=message)
            if before:
                log.info("%s", message)
            else:
                log.warning("%s; their traffic goes through the CPU", message)
                self.events.emit("threshold_crossed", "rt_offload_failed", message)
        else:
            self.state.applies.pop(OFFLOAD_KEY, None)
            message = "every route is offloaded to the ASIC again (no rt_offload_failed)"
            log.info("%s", message)
            self.events.emit("threshold_crossed", "rt_offload_failed", message)

    async def devlink_loop(self) -> None:
        """Linux: re-read the ASIC's table sizes from devlink now and then; they change when
        an engineer picks another forwarding profile (`devlink resource set` + reload)."""
        while True:
            await asyncio.sleep(DEVLINK_POLL_SECONDS)
            before = self.headroom.capacity
            self.headroom.set_discovered(await discover_devlink())
            self._refresh_headroom()
            self._replan_if_capacity_changed(before, "devlink")

    def _replan_if_capacity_changed(self, before: Mapping[Any, Any], source: str) -> None:
        """Admission is decided in plan() against the capacity: a larger table must admit the
        nodes waiting for room at once, a smaller one must stop admitting, without waiting for
        the next Node change."""
        after = self.headroom.capacity
        changed = sorted(str(r) for r in {*before, *after} if before.get(r) != after.get(r))
        if changed:
            log.info("%s changed the hardware capacity of %s; planning again", source,
                     ", ".join(changed))
            self.mark_dirty()

    async def status_loop(self) -> None:
        """Keeps the status fresh and pets systemd's watchdog from the event loop itself, so a
        wedged loop stops the pets and systemd restarts the agent."""
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        interval = min(5.0, watchdog_usec / 2e6) if watchdog_usec else 5.0
        started = time.monotonic()
        while True:
            self.publish_status()
            if not self._ready_sent and time.monotonic() - started > STARTUP_GRACE_SECONDS:
                # The API server is down at boot: report ready anyway (with the reason in
                # STATUS) rather than let systemd kill an agent that is waiting correctly.
                self._notifier.notify("READY=1")
                self._ready_sent = True
            if watchdog_usec:
                self._notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def publish_status(self) -> None:
        k = self.status.kubernetes
        k.connected = self.nodes.connected
        k.synced = self.nodes.synced
        k.last_error = self.nodes.last_error
        k.resource_version = self.nodes.resource_version
        k.nodes = len(self.nodes.store)
        if self.nodes.last_contact:
            k.seconds_since_contact = round(time.monotonic() - self.nodes.last_contact, 1)
        if self.lldp is not None:
            self.status.lldp_error = self.lldp.error
        try:
            write_status_file(self.config.status.state_file, self.status)
        except OSError as exc:
            log.debug("cannot write status file: %s", exc)
        self._notifier.notify(f"STATUS={self.status.summary()}")

    def _log_refusals(self, refusals: list[str]) -> None:
        current = set(refusals)
        for line in sorted(current - self._known_refusals):
            log.warning("refused: %s", line)
        for line in sorted(self._known_refusals - current):
            log.info("no longer refused: %s", line)
        self._known_refusals = current

    async def run(self) -> None:
        self.headroom.set_discovered(await discover_devlink())
        await self.start_dataplane()
        server = self._status_server()
        await server.start()
        metrics_http = None
        if self.config.status.metrics_listen:
            host, _, port = self.config.status.metrics_listen.rpartition(":")
            metrics_http = self.metrics.start_http(host.strip("[]"), int(port))
        loops: list[Callable[[], Awaitable[None]]] = [
            self.nodes.run, self.reconcile_loop, self.dataplane_resync_loop,
            self.bgp_loop, self.status_loop, *self._dataplane_tasks,
        ]
        if self.frr_refusal is None:
            loops.append(self.resync_loop)  # FRR's drift repair writes FRR: only when managed
        if self.lldp is not None:
            loops.append(self.lldp.run)
        tasks = [asyncio.create_task(loop(), name=loop.__name__) for loop in loops]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a crashed loop is a bug: surface it, systemd restarts us
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.pods is not None:
                await self.pods.close()
            await server.stop()
            if metrics_http is not None:
                metrics_http.close()
            if self.dataplane is not None:
                await self.dataplane.close()  # closes sockets only: the data plane stays
            self.events.close()

    def _status_server(self) -> Any:
        from agent.status.server import StatusServer

        st = self.config.status
        return StatusServer(self.view, self.events, socket_path=st.socket,
                            socket_group=st.socket_group, tcp_address=st.listen,
                            tls_cert=st.tls_cert, tls_key=st.tls_key,
                            tls_client_ca=st.tls_client_ca)


def enable_offload_notifications() -> None:
    """Linux: ask the kernel to announce routes whose offload to the ASIC failed, and log what
    happened per family once. Absent (kernels before 5.14) is a fact, not an error: such a
    kernel has no offload-failed flag to announce. Refused: failures are then seen only in the
    agent's route dumps."""
    from agent.apply.linux.offload import FIB_NOTIFY_OFFLOAD_FAILED, enable_fib_notify

    for outcome in enable_fib_notify(FIB_NOTIFY_OFFLOAD_FAILED):
        name = f"net.ipv{outcome.family}.fib_notify_on_flag_change"
        if outcome.status == "failed":
            log.warning("%s: %s; offload failures are seen only in the agent's route dumps "
                        "(set it to %d in sysctl.d: the unit's ProtectKernelTunables keeps "
                        "/proc/sys read-only)", name, outcome.detail, FIB_NOTIFY_OFFLOAD_FAILED)
        else:
            log.info("%s: %s", name, outcome.detail)


async def run_agent(config: AgentConfig) -> None:
    sonic_db: SonicDb | None = None
    refusal: str | None = None
    if config.dataplane.backend == "sonic":
        config, sonic_db, refusal = await prepare_sonic(config)
    api = KubeApi.from_kubeconfig(config.kubernetes.kubeconfig)
    agent = Agent(config, api, sonic_db=sonic_db, frr_refusal=refusal)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopping leaves FRR and the kernel exactly as they are: forwarding goes on.
        loop.add_signal_handler(sig, main.cancel)
    log.info("kube-fabric-agent starting on %s (AS%s)", config.switch.hostname,
             config.switch.asn)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await agent.run()
    finally:
        agent._notifier.notify("STOPPING=1")
        await api.aclose()
        if sonic_db is not None:
            await sonic_db.close()
        log.info("stopped; FRR and the data plane keep the last applied state")
