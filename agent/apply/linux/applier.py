"""The Linux kernel data plane through rtnetlink: the VTEP, its neighbour and FDB entries, routes.

`LinuxDataplane.apply(desired)` changes only the difference between the desired state and what
the agent observes, table by table (agent.apply.linux.delta.DeltaTracker, Calico felix style):

- links: the one VTEP device (agent.apply.linux.vtep);
- neighbours, fdb, routes: agent.apply.linux.desired says what each holds; all routes with
  protocol `route_protocol`.

Ownership: routes with the agent's protocol in the main table, permanent neighbour/FDB entries on
the VTEP, and the VTEP itself. Nothing else is ever written or deleted: adds are exclusive (a
foreign route at the same key is reported, not replaced) and deletes name the protocol, which
the kernel matches.

The pieces: the command channel (agent.apply.linux.channel) carries batched writes and dumps;
dumps fill the view (agent.apply.linux.observe, agent.apply.linux.view); kernel events are read
and judged by agent.apply.linux.events, and this module's repair loop re-dumps and re-applies
what they contradict; offload flags are counted from both (agent.apply.linux.offload).

Start-up adopts what the kernel holds (nothing is deleted and re-added when it already matches);
closing leaves the data plane as it is.

It talks back through the contract's Feedback only: a repair that changed something asks for a
new plan, devlink's table sizes (at start and every DEVLINK_POLL_SECONDS) are hardware readings,
and the offload-failed route counts are reported whenever they change.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from agent.apply.contract import ApplyResult, Feedback, HardwareReading, Held, Outcome
from agent.apply.linux.channel import (
    GONE_ON_DELETE,
    Channel,
    ChannelError,
    ChannelOpener,
    NetlinkChannel,
    errtext,
)
from agent.apply.linux.codec import (
    encode_fdb_del,
    encode_fdb_set,
    encode_neigh_del,
    encode_neigh_set,
    encode_route_del,
    encode_route_set,
)
from agent.apply.linux.delta import DeltaTracker
from agent.apply.linux.desired import PeerMaps, desired_tables, route_text
from agent.apply.linux.devlink import DEVLINK_POLL_SECONDS, discover_devlink
from agent.apply.linux.events import (
    REPAIR_DEBOUNCE,
    EventOpener,
    EventReader,
    EventSocket,
    judge,
)
from agent.apply.linux.observe import observe
from agent.apply.linux.offload import enable_offload_notifications
from agent.apply.linux.results import ObjectError, Pass, Tally
from agent.apply.linux.route_counts import kernel_route_counts
from agent.apply.linux.view import FDB, LINKS, NEIGHBORS, ROUTES, TABLES, KernelView
from agent.apply.linux.vtep import reconcile_vtep, remove_vtep
from agent.config import DataplaneConfig
from agent.errors import StartupError
from agent.plan.model import DataplaneDesired

if TYPE_CHECKING:
    from agent.headroom.resources import Capacity

log = logging.getLogger(__name__)

DevlinkReader = Callable[[], Awaitable[Mapping[str, "Capacity"]]]
PROCFS = Path("/proc")


class LinuxDataplane:
    """Programs the kernel: see the module docstring. One instance per network namespace.

    `netns`: a named network namespace to program instead of the agent's own (tests, the
    bench). `procfs` is the agent's own namespace's /proc, where the fib_notify sysctl is set at
    start and the kernel's route counts are read; with `netns` it is not that namespace's and is
    not used. `open_channel`, `open_events` and `read_devlink` reach the kernel and the ASIC:
    tests replace them."""

    name = "dataplane"

    def __init__(self, cfg: DataplaneConfig, feedback: Feedback, *, netns: str | None = None,
                 procfs: Path | None = PROCFS,
                 open_channel: ChannelOpener = NetlinkChannel.open,
                 open_events: EventOpener = EventSocket.open,
                 read_devlink: DevlinkReader = discover_devlink) -> None:
        self._netns = netns
        self._feedback = feedback
        self._procfs = procfs if netns is None else None
        self._open_channel = open_channel
        self._read_devlink = read_devlink
        self._proto = cfg.route_protocol
        self._device = cfg.vxlan.device
        self._view = KernelView(self._proto, self._device)
        self._chan: Channel | None = None
        self._events = EventReader(self._view, netns, open_events,
                                   started=lambda: self._chan is not None,
                                   closed=lambda: self._closed,
                                   offload_seen=self._report_offload)
        self._lock = asyncio.Lock()  # one writer at a time: apply, resync or repair
        self._desired: DataplaneDesired | None = None
        self._built: tuple[DataplaneDesired, PeerMaps] | None = None  # what the trackers want
        self._closed = False
        self._last_error: str | None = None
        self._offload_reported: dict[int, int] | None = None
        self.last_repair: ApplyResult | None = None

    # --- life cycle

    async def start(self) -> None:
        """Enable offload notifications, read devlink, open the command and event sockets, then
        adopt what the kernel holds (no writes). Events are subscribed before the dumps, so
        nothing changed in between is missed. Raises StartupError when netlink cannot be used
        (the namespace is missing, the socket cannot be opened or the first dumps fail)."""
        if self._chan is not None:
            return
        self._closed = False
        if self._procfs is not None:
            enable_offload_notifications(self._procfs / "sys")
        await self._report_devlink()
        try:
            self._chan = await self._open_channel(self._netns)
            try:
                await self._events.open()
            except BaseException:
                self._chan.close()
                self._chan = None
                raise
            try:
                async with self._lock:
                    await self._observe(set(TABLES))
            except BaseException:
                await self.close()
                raise
        except (OSError, NetlinkError, ChannelError) as exc:
            where = f" in network namespace {self._netns}" if self._netns else ""
            raise StartupError(f"data plane: netlink{where}: {exc}") from exc
        self._report_offload()

    async def close(self) -> None:
        """Close the sockets. The data plane stays exactly as it is."""
        self._closed = True
        self._events.close()
        if self._chan is not None:
            self._chan.close()
            self._chan = None

    # --- the applier contract

    async def apply(self, desired: DataplaneDesired) -> ApplyResult:
        """Make the kernel hold `desired`, changing only the difference. Never raises for
        netlink trouble: per-object errors are in the result, and everything else is applied."""
        async with self._lock:
            p = Pass(TABLES)
            problem = self._check(desired)
            if problem:
                return p.failed(problem, counts=False)
            self._desired = desired
            return await self._sync(p, set(), "applied", "unchanged")

    async def resync(self) -> ApplyResult:
        """Re-dump every owned table and repair any drift (the runtime's periodic full pass);
        "in-sync" when there was none."""
        async with self._lock:
            return await self._sync(Pass(TABLES), set(TABLES), "repaired", "in-sync")

    def held(self) -> Held:
        """{"routes": pod CIDRs, "fdb": VtepMACs} whose kernel entries, as last observed
        (dumps, events, acknowledged writes), are as desired. A failed or pending write is not
        held."""
        return self._view.held()

    def counts(self) -> dict[str, int]:
        """Observed table usage per headroom resource: what the agent owns in the kernel, and
        for routes the larger of that and every route the kernel holds (FRR's fill the same
        hardware tables)."""
        seen = self.observed_counts()
        if self._procfs is not None:
            for resource, count in kernel_route_counts(self._procfs / "net").items():
                seen[resource] = max(count, seen.get(resource, 0))
        return seen

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.run_events, self.poll_devlink]

    async def report(self, outcome: Outcome) -> None:
        """Nothing to publish on this side: the kernel is the state."""

    # --- what it observes

    def observed_counts(self) -> dict[str, int]:
        """What the agent owns in the kernel now, per headroom resource."""
        return self._view.observed_counts()

    def offload_failed_counts(self) -> dict[int, int]:
        """Routes in the main table the hardware refused (rt_offload_failed), per family
        ({4: n, 6: m}); always zero without a switchdev ASIC. Reported to Feedback.offload_failed
        whenever it changes."""
        return self._view.offload_failed_counts()

    # --- background loops

    async def run_events(self) -> None:
        """Watch the kernel and repair owned objects changed behind the agent's back. Runs until
        cancelled or close(); cancelling it changes nothing in the kernel."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._events.run())
            group.create_task(self._repair_loop())

    async def poll_devlink(self) -> None:
        """Re-read the ASIC's table sizes from devlink now and then; they change when an
        engineer picks another forwarding profile (`devlink resource set` + reload)."""
        while True:
            await asyncio.sleep(DEVLINK_POLL_SECONDS)
            await self._report_devlink()

    async def _repair_loop(self) -> None:
        reader = self._events
        while not self._closed:
            await reader.wake.wait()
            if self._closed:
                return
            await asyncio.sleep(REPAIR_DEBOUNCE)  # let the rest of a burst arrive
            reader.wake.clear()
            async with self._lock:
                backlog = reader.take_backlog()
                try:
                    stale, moved = judge(self._view, backlog)
                except Exception:  # a message the decoders choke on: the dumps will tell
                    log.exception("data plane: cannot judge kernel events; resyncing")
                    stale, moved = set(TABLES), True
                stale |= self._view.stale
                if (not stale and not moved) or self._closed:
                    continue
                result = await self._sync(Pass(TABLES), stale, "repaired", "in-sync")
            self.last_repair = result
            if result.changes:
                self._tell(self._feedback.replan, "the kernel's data plane changed behind the "
                           f"agent's back; repaired {_summary(result)}")

    # --- feedback

    async def _report_devlink(self) -> None:
        capacity = await self._read_devlink()
        self._tell(self._feedback.hardware,
                   HardwareReading(source="devlink", capacity=dict(capacity)))

    def _report_offload(self) -> None:
        """Offload-failed counts to Feedback when they differ from the last ones reported (the
        first time always)."""
        counts = self.offload_failed_counts()
        if counts != self._offload_reported:
            self._offload_reported = counts
            self._tell(self._feedback.offload_failed, counts)

    @staticmethod
    def _tell(call: Callable[[Any], None], arg: Any) -> None:
        # The runtime's side must not take the event reader or a pass down with it.
        try:
            call(arg)
        except Exception:
            log.exception("data plane: feedback %s failed", getattr(call, "__name__", call))

    # --- reconciliation

    def _check(self, desired: DataplaneDesired) -> str | None:
        if self._chan is None and self._closed:
            return "the data plane is closed"
        if desired.route_protocol != self._proto:
            return (f"desired route protocol {desired.route_protocol} is not this data plane's "
                    f"{self._proto} (dataplane.route_protocol)")
        if desired.vtep is not None and desired.vtep.name != self._device:
            return (f"desired VTEP {desired.vtep.name} is not dataplane.vxlan.device "
                    f"{self._device}, the only device the agent may own")
        return None

    async def _observe(self, tables: set[str]) -> None:
        assert self._chan is not None
        await observe(self._chan, self._view, tables)
        self._report_offload()

    async def _sync(self, p: Pass, dump: set[str], done: str, nothing: str) -> ApplyResult:
        view = self._view
        try:
            if self._chan is None:
                if self._closed:
                    raise ChannelError("the data plane is closed")
                self._chan = await self._open_channel(self._netns)
                view.stale = set(TABLES)
            await self._observe(dump | view.stale)
            if self._desired is not None:
                await self._reconcile(self._desired, p)
        except Exception as exc:
            # The socket (not one object) failed, or a bug: never take the agent down for it.
            # Drop the socket and trust nothing until a re-dump.
            if isinstance(exc, (ChannelError, NetlinkError, OSError)):
                log.warning("data plane: netlink failure: %s", exc)
            else:
                log.exception("data plane: unexpected failure")
            if self._chan is not None:
                self._chan.close()
                self._chan = None
            view.stale = set(TABLES)
            return p.failed(f"netlink: {exc}")
        result = p.result(done, nothing)
        # the same failure at every resync is said once, then at debug level
        repeated, self._last_error = result.error == self._last_error, result.error
        if result.changes or p.errors:
            level = (logging.WARNING if p.errors and not repeated
                     else logging.INFO if result.changes else logging.DEBUG)
            log.log(level, "data plane %s in %.3fs: %s%s", result.action, result.duration,
                    _summary(result) or "no change",
                    f"; {result.error}" if result.error else "")
        return result

    async def _reconcile(self, desired: DataplaneDesired, p: Pass) -> None:
        chan, view, counts, errors = self._chan, self._view, p.counts, p.errors
        assert chan is not None
        if self._built is None or self._built[0] != desired:
            # Rebuilding 100,000 keys costs more than comparing the two desired states.
            tables = desired_tables(desired)
            view.routes.replace_desired(tables.routes)
            view.neighbors.replace_desired(tables.neighbors)
            view.fdb.replace_desired(tables.fdb)
            self._built = (desired, tables.peers)
        peers = self._built[1]
        want_vtep = desired.vtep is not None or bool(desired.vxlan_peers)

        if desired.vtep is not None:
            await reconcile_vtep(chan, view, desired.vtep, counts[LINKS], errors)

        # Additions in flannel's order per peer (neighbour, FDB, route), each stage skipping the
        # peers an earlier stage failed for, and undoing what this pass wrote for them.
        failed: set[str] = set()
        written_neigh: dict[str, tuple[str, bool]] = {}  # node -> (key, was it a change)
        written_fdb: dict[str, tuple[str, bool]] = {}
        vtep = view.vtep_ifindex

        neigh_todo = view.neighbors.pending_updates()
        if vtep is None:
            for ip, mac in neigh_todo:
                node = peers.by_neigh.get(ip, "?")
                failed.add(node)
                errors.append(ObjectError(NEIGHBORS, f"{ip} lladdr {mac} (node {node})",
                                          self._no_vtep_reason()))
        else:
            ok = await self._write(
                NEIGHBORS, neigh_todo, view.neighbors,
                lambda s, kv: encode_neigh_set(s, vtep, kv[0], kv[1]),
                lambda kv: f"{kv[0]} lladdr {kv[1]} (node {peers.by_neigh.get(kv[0], '?')})",
                counts[NEIGHBORS], errors,
                on_fail=lambda kv: failed.add(peers.by_neigh.get(kv[0], "?")))
            for ip, was_change in ok:
                written_neigh[peers.by_neigh.get(ip, "?")] = (ip, was_change)

        fdb_todo = [kv for kv in view.fdb.pending_updates()
                    if peers.by_fdb.get(kv[0]) not in failed]
        if vtep is not None and fdb_todo:
            fdb_view = view.fdb.dataplane
            ok = await self._write(
                FDB, fdb_todo, view.fdb,
                lambda s, kv: (encode_fdb_del(s, vtep, kv[0]) if "," in fdb_view.get(kv[0], "")
                               else b"") + encode_fdb_set(s, vtep, kv[0], kv[1]),
                lambda kv: f"{kv[0]} dst {kv[1]} (node {peers.by_fdb.get(kv[0], '?')})",
                counts[FDB], errors,
                on_fail=lambda kv: failed.add(peers.by_fdb.get(kv[0], "?")))
            for mac, was_change in ok:
                written_fdb[peers.by_fdb.get(mac, "?")] = (mac, was_change)
        await self._undo(failed, written_neigh, {}, counts)

        route_todo = []
        for key, value in view.routes.pending_updates():
            node = peers.by_route.get(key)
            if node is not None and node in failed:
                continue
            if value.vtep and vtep is None:
                failed.add(node or "?")
                errors.append(ObjectError(ROUTES, route_text(key, value, node),
                                          self._no_vtep_reason()))
                continue
            route_todo.append((key, value))
        route_view = view.routes.dataplane
        route_failed: set[str] = set()
        await self._write(
            ROUTES, route_todo, view.routes,
            lambda s, kv: encode_route_set(s, kv[0], kv[1], self._proto, kv[0] in route_view,
                                           vtep),
            lambda kv: route_text(kv[0], kv[1], peers.by_route.get(kv[0])),
            counts[ROUTES], errors,
            on_fail=lambda kv: route_failed.add(peers.by_route.get(kv[0], "")))
        route_failed.discard("")
        await self._undo(route_failed, written_neigh, written_fdb, counts)

        # Removals in the reverse order: routes, FDB, neighbours.
        await self._remove(ROUTES, view.routes,
                           lambda s, k: encode_route_del(s, k, self._proto),
                           lambda k: route_text(k, route_view.get(k), None), counts, errors)
        if vtep is not None:
            await self._remove(FDB, view.fdb, lambda s, k: encode_fdb_del(s, vtep, k),
                               lambda k: f"{k} dst {view.fdb.dataplane.get(k)}", counts, errors)
            await self._remove(NEIGHBORS, view.neighbors,
                               lambda s, k: encode_neigh_del(s, vtep, k),
                               lambda k: f"{k} lladdr {view.neighbors.dataplane.get(k)}",
                               counts, errors)
        if not want_vtep:
            await remove_vtep(chan, view, counts[LINKS], errors)

    def _no_vtep_reason(self) -> str:
        return self._view.foreign_link or f"the VTEP device {self._device} is not available"

    async def _write(self, table: str, items: list[tuple[Any, Any]],
                     tracker: DeltaTracker[Any, Any],
                     encode: Callable[[int, tuple[Any, Any]], bytes],
                     describe: Callable[[tuple[Any, Any]], str], counts: Tally,
                     errors: list[ObjectError],
                     on_fail: Callable[[tuple[Any, Any]], None]) -> list[tuple[Any, bool]]:
        """Add or change items; returns (key, was it a change) of those written. The view
        follows each success."""
        if not items:
            return []
        assert self._chan is not None
        view = tracker.dataplane
        existed = [kv[0] in view for kv in items]
        failures = await self._chan.batch(items, encode)
        done = []
        for i, (key, value) in enumerate(items):
            if i in failures:
                code, text = failures[i]
                if code == errno.EEXIST and table == ROUTES:
                    text = "the prefix is held by a route the agent does not own; left alone"
                errors.append(ObjectError(table, describe((key, value)), errtext(code, text)))
                on_fail((key, value))
                continue
            tracker.dataplane_set(key, value)
            done.append((key, existed[i]))
            if existed[i]:
                counts.changed += 1
            else:
                counts.added += 1
        return done

    async def _remove(self, table: str, tracker: DeltaTracker[Any, Any],
                      encode: Callable[[int, Any], bytes], describe: Callable[[Any], str],
                      counts: dict[str, Tally], errors: list[ObjectError]) -> None:
        keys = tracker.pending_deletions()
        if not keys:
            return
        assert self._chan is not None
        failures = await self._chan.batch(keys, encode)
        for i, key in enumerate(keys):
            if i in failures and failures[i][0] not in GONE_ON_DELETE:
                errors.append(ObjectError(table, describe(key), errtext(*failures[i])))
                continue
            tracker.dataplane_delete(key)
            counts[table].removed += 1

    async def _undo(self, nodes: set[str], neigh: dict[str, tuple[str, bool]],
                    fdb: dict[str, tuple[str, bool]], counts: dict[str, Tally]) -> None:
        """Flannel's undo: a peer whose later step failed loses what this pass wrote for it, so
        no half-programmed peer stays. It is retried by the next apply or resync."""
        vtep = self._view.vtep_ifindex
        if vtep is None or self._chan is None:
            return
        for table, written, tracker, encode in (
            (FDB, fdb, self._view.fdb, encode_fdb_del),
            (NEIGHBORS, neigh, self._view.neighbors, encode_neigh_del),
        ):
            undo = [written.pop(n) for n in sorted(nodes) if n in written]
            if not undo:
                continue
            failures = await self._chan.batch(
                [key for key, _ in undo], lambda s, k, enc=encode: enc(s, vtep, k))
            for i, (key, was_change) in enumerate(undo):
                if i not in failures or failures[i][0] in GONE_ON_DELETE:
                    tracker.dataplane_delete(key)
                    # counted as written, but the pass did not leave it there after all
                    if was_change:
                        counts[table].changed -= 1
                    else:
                        counts[table].added -= 1


def _summary(result: ApplyResult) -> str:
    """"routes +1 ~0 -2, fdb +1 ~0 -0": the tables a pass changed."""
    return ", ".join(f"{t} +{c.added} ~{c.changed} -{c.removed}"
                     for t, c in result.counts.items() if c.total)

