"""`fabric-agent run`: informers -> cluster state -> plan() -> FRR applier, in one event loop.

Reconciliation is single-flight and coalescing: changes set a flag; one loop waits a short
debounce, plans from the latest state and applies. Changes that arrive during an apply cause
exactly one more pass, never a queue, so a flapping object cannot start a reload storm.
Nothing is applied before the first complete Node list: an empty store would mean withdrawing
every session, and the agent never withdraws because the API server is down or slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import sdnotify

from agent.cluster import cluster_state
from agent.config import AgentConfig
from agent.frr_apply import FrrApplier
from agent.frr_render import UnsafeValue, render_frr
from agent.informer import Informer
from agent.kube_client import KubeApi
from agent.lldp import LldpPoller
from agent.plan import plan
from agent.status import Status, write_status_file

log = logging.getLogger(__name__)
STARTUP_GRACE_SECONDS = 20.0


class Agent:
    def __init__(self, config: AgentConfig, api: KubeApi) -> None:
        self.config = config
        self.status = Status()
        self.applier = FrrApplier(config.frr)
        self.nodes = Informer(
            api,
            "/api/v1/nodes",
            label_selector=config.kubernetes.node_selector or None,
            on_change=self.mark_dirty,
            watch_timeout=float(config.kubernetes.watch_timeout_seconds),
        )
        self.lldp = (
            LldpPoller(
                config.fabric.lldp_socket, self.mark_dirty, interval=config.fabric.lldp_poll_seconds
            )
            if config.fabric.lldp
            else None
        )
        self._dirty = asyncio.Event()
        self._dirty_since: float | None = None
        self._apply_lock = asyncio.Lock()
        self._known_refusals: set[str] = set()
        self._notifier = sdnotify.SystemdNotifier()
        self._ready_sent = False

    def mark_dirty(self) -> None:
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        self._dirty.set()

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
        cluster = cluster_state(self.nodes.store.values())
        result_plan = plan(self.config, cluster, self.lldp.neighbors if self.lldp else None)
        self._log_refusals([str(r) for r in result_plan.refusals])
        self.status.record_plan(result_plan)
        try:
            text = render_frr(result_plan.frr)
        except UnsafeValue as exc:  # a validator let something through: refuse, keep running
            log.error("not applying: %s", exc)
            self.status.frr_last_error = str(exc)
            return
        async with self._apply_lock:
            result = await self.applier.apply(text)
        self.status.record_apply(result)
        if since is not None and result.action != "unchanged":
            latency = time.monotonic() - since
            self.status.last_reconcile_latency_seconds = round(latency, 3)
            log.info("change to applied FRR config: %.3fs (%s)", latency, result.action)
        self.publish_status()
        if not self._ready_sent:
            self._notifier.notify("READY=1")
            self._ready_sent = True

    async def resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.frr.resync_seconds)
            async with self._apply_lock:
                result = await self.applier.resync()
            if result is not None:
                self.status.record_apply(result)
                self.publish_status()

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
        tasks = [
            asyncio.create_task(self.nodes.run(), name="node-informer"),
            asyncio.create_task(self.reconcile_loop(), name="reconcile"),
            asyncio.create_task(self.resync_loop(), name="frr-resync"),
            asyncio.create_task(self.status_loop(), name="status"),
        ]
        if self.lldp is not None:
            tasks.append(asyncio.create_task(self.lldp.run(), name="lldp"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a crashed loop is a bug: surface it, systemd restarts us
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_agent(config: AgentConfig) -> None:
    api = KubeApi.from_kubeconfig(config.kubernetes.kubeconfig)
    agent = Agent(config, api)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopping leaves FRR and the kernel exactly as they are: forwarding goes on.
        loop.add_signal_handler(sig, main.cancel)
    log.info("kube-fabric-agent starting on %s (AS%s)", config.switch.hostname, config.switch.asn)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await agent.run()
    finally:
        agent._notifier.notify("STOPPING=1")
        await api.aclose()
        log.info("stopped; FRR keeps running with the last applied configuration")
