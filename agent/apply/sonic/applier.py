"""SonicDataplane: the desired data plane written into APPL_DB as a good SONiC citizen, keeping
the applier contract (agent.apply.contract).

Ownership. APPL_DB has no notion of who wrote a key (fpmsyncd, neighsyncd, vxlanmgrd and the
agent share ROUTE_TABLE and friends), so the agent keeps its own record in STATE_DB:
`KFA_OWNED|<APPL_DB table>`, a hash of key -> the fields it wrote (JSON). Rules:
- it writes a key only when it is absent from APPL_DB, or already its own;
- a key another producer holds with different fields is refused and reported (never
  overwritten); with identical fields it is used as is ("shared": not owned, never deleted);
- it deletes exactly its own keys when they leave the desired state, unless another producer
  has rewritten them meanwhile (then they are theirs: released, reported, left alone);
- a key is recorded before it is written and forgotten after it is deleted, so a crash at any
  point leaves at worst a record of a key that does not exist (harmless), never an orphan.

Redis restarts. SONiC's database restarts empty (or from a dump); either way what orchagent holds
no longer matches what the agent wrote. The agent notices a restart by the server's run_id
(checked before and after every pass, and every `probe_interval` seconds by the Redis watcher,
one of loops(), which also notices a lost connection), then replays: every owned key, and the
ownership record, is written again from memory, batched. A lost connection without a restart
leads to a verify pass instead (missing keys rewritten, nothing else), so a blip does not cost
orchagent a full rewrite.

Beside the data plane, the backend owns SONiC's other duties: loops() also runs the CRM poller
(agent.apply.sonic.crm: headroom readings through Feedback.hardware), and report() writes the
agent's state to STATE_DB (agent.apply.sonic.state).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from agent.apply.contract import ApplyResult, Feedback, Held, Outcome, TableCounts
from agent.apply.sonic.crm import CrmPoller
from agent.apply.sonic.db import APPL_DB, CONFIG_DB, STATE_DB, SonicDb, raise_if_cancelled
from agent.apply.sonic.device import refuse_if_swss_zmq, swss_zmq_enabled
from agent.apply.sonic.producer import DEFAULT_BATCH_SIZE, ProducerStateTable, needs_replace
from agent.apply.sonic.schema import (
    NEIGH_TABLE,
    ROUTE_TABLE,
    TABLE_ORDER,
    VXLAN_EVPN_NVO_TABLE,
    VXLAN_FDB_TABLE,
    VXLAN_REMOTE_VNI_TABLE,
    VXLAN_TUNNEL_MAP_TABLE,
    VXLAN_TUNNEL_TABLE,
    Entries,
    Fields,
    OverlayMapping,
    empty_entries,
    prefix_of,
    render,
)
from agent.apply.sonic.startup import SonicStart
from agent.apply.sonic.state import ApplierSummary, StateDbPublisher
from agent.apply.sonic.table import Table
from agent.errors import EXIT_FAILURE, StartupError
from agent.plan.model import DataplaneDesired

log = logging.getLogger(__name__)

OWNED_TABLE = "KFA_OWNED"
_ZMQ_REFUSAL = (
    "CONFIG_DB SYSTEM_DEFAULTS|swss_zmq has status=enabled: orchagent reads ROUTE_TABLE over ZMQ, "
    "APPL_DB writes would not reach it; nothing written"
)
_PROBE_CHUNK = 500

# Read-only: for each key, what the consumer holds (T:key), what is staged (_T:key), and whether
# a set / delete is pending. KEYS[1] key set, KEYS[2] delete set, then per key T:key, _T:key;
# ARGV the keys.
_PROBE = """
local out = {}
for i = 1, #ARGV do
    out[i] = {
        redis.call('HGETALL', KEYS[1 + 2 * i]),
        redis.call('HGETALL', KEYS[2 + 2 * i]),
        redis.call('SISMEMBER', KEYS[1], ARGV[i]),
        redis.call('SISMEMBER', KEYS[2], ARGV[i]),
    }
end
return out
"""

# What results, the status and the STATE_DB summary call each table's objects (the Linux
# applier's names where the object is the same: routes, neighbors, fdb).
OBJECT_NAMES: dict[str, str] = {
    ROUTE_TABLE: "routes",
    NEIGH_TABLE: "neighbors",
    VXLAN_FDB_TABLE: "fdb",
    VXLAN_REMOTE_VNI_TABLE: "remote_vteps",
    VXLAN_TUNNEL_TABLE: "vteps",
    VXLAN_EVPN_NVO_TABLE: "evpn_nvos",
    VXLAN_TUNNEL_MAP_TABLE: "vni_maps",
}

APPLIER = "dataplane"  # ApplyResult.applier, and the key of its results in the status
# The name of the data plane's entries in STATE_DB's summary (`sonic_routes`, `sonic_last_action`).
SUMMARY_NAME = "sonic"
# What the STATE_DB summary names FRR's entries (`frr_sessions`, `frr_last_action`), and the key
# of its results in Outcome.results.
FRR = "frr"


def _plus(a: TableCounts, b: TableCounts) -> TableCounts:
    return TableCounts(a.added + b.added, a.changed + b.changed, a.removed + b.removed,
                       a.repaired + b.repaired)


def _details(**lines: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """ApplyResult.details: only the kinds that have lines."""
    return {kind: tuple(items) for kind, items in lines.items() if items}


@dataclass(frozen=True)
class _Probe:
    pending: bool  # a producer's write is waiting for the consumer
    # The effective entry: the consumer's, with a pending write applied. None = absent.
    fields: Fields | None


def _pairs(flat: list[str]) -> Fields:
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass
class _Pass:
    mode: str  # apply | verify | replay
    counts: dict[str, TableCounts] = field(
        default_factory=lambda: {t: TableCounts() for t in OBJECT_NAMES.values()})
    conflicts: list[str] = field(default_factory=list)

    def count(self, table: str, **changes: int) -> None:
        name = OBJECT_NAMES[table]
        self.counts[name] = _plus(self.counts[name], TableCounts(**changes))

    def merge(self, other: _Pass) -> None:
        for name, c in other.counts.items():
            self.counts[name] = _plus(self.counts[name], c)
        self.conflicts += other.conflicts


class SonicDataplane:
    """The SONiC backend's applier (agent.apply.contract.Applier[DataplaneDesired]).

    The runtime calls apply() and resync() one at a time; the Redis watcher (one of loops())
    repairs and replays on its own between them, so passes still serialise on one lock here.
    """

    name = APPLIER

    def __init__(
        self,
        db: SonicDb,
        feedback: Feedback,
        *,
        frr_managed: bool,
        overlay: OverlayMapping | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        probe_interval: float = 1.0,
        owned_table: str = OWNED_TABLE,
    ) -> None:
        """`db`: the open databases (prepare() opened them; close() closes them). `feedback`:
        the runtime's side (CRM readings go to feedback.hardware). `frr_managed`: whether the
        agent manages FRR here (SonicStart.frr_managed): STATE_DB's summary counts FRR's
        sessions only then."""
        self.db = db
        self.feedback = feedback
        self.frr_managed = frr_managed
        self.overlay = overlay or OverlayMapping()
        self.probe_interval = probe_interval
        sep = db.separator(APPL_DB)
        self._sep = sep
        appl = db.client(APPL_DB)
        self._producers = {
            t: ProducerStateTable(appl, t, db.db_id(APPL_DB), sep, batch_size) for t in TABLE_ORDER
        }
        self._probe_script = appl.register_script(_PROBE)
        self._owned_table = Table(db.client(STATE_DB), owned_table, db.separator(STATE_DB))
        self._owned: Entries = empty_entries()
        self._desired: DataplaneDesired | None = None
        self._lock = asyncio.Lock()
        self._run_ids: dict[str, str] = {}
        # The first pass after start verifies every owned key: Redis may have restarted while
        # the agent was down, and the run_id seen at start cannot tell.
        self._verify_needed = True
        self._replay_needed = False
        self._closing = False
        self._crm = CrmPoller(db, feedback)
        self._state = StateDbPublisher(db)

    @classmethod
    def from_start(cls, start: SonicStart, feedback: Feedback) -> SonicDataplane:
        """The applier prepare() found the switch ready for: its databases, whether FRR is
        managed, and the overlay's names from dataplane.sonic."""
        cfg = start.config.dataplane.sonic
        overlay = OverlayMapping(vlan_id=cfg.overlay_vlan, vtep_name=cfg.vtep_name,
                                 nvo_name=cfg.nvo_name)
        return cls(start.db, feedback, frr_managed=start.frr_managed, overlay=overlay)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Refuses (SwssZmqEnabled, a StartupError) when orchagent would not read Redis, and
        raises StartupError when Redis cannot be read; remembers the servers' run_ids and loads
        the ownership record (what a previous run wrote is adopted, not rewritten)."""
        try:
            await refuse_if_swss_zmq(self.db)
            await self._restarted()  # remember the servers' run_ids
            await self._load_owned()
        except (RedisError, OSError) as exc:
            where = self.db.config.source or "the built-in database layout"
            raise StartupError(f"SONiC data plane: cannot read Redis ({where}): {exc}",
                               EXIT_FAILURE) from None

    async def close(self) -> None:
        """Closes the Redis connections (ending the Redis watcher too, should its cancellation
        have been lost). Leaves APPL_DB as it is: stopping the agent never touches forwarding."""
        self._closing = True
        await self.db.close()

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """The Redis watcher (replays after a Redis restart, verifies after a lost connection)
        and the CRM poller (headroom readings through feedback.hardware)."""
        return (self.redis_watch_loop, self.crm_loop)

    def owned(self) -> dict[str, dict[str, Fields]]:
        """A copy of what the agent owns, table -> key -> fields."""
        return {t: dict(keys) for t, keys in self._owned.items()}

    def held(self) -> Held:
        """{"routes": pod CIDRs and VIPs, "fdb": VtepMACs} the agent's APPL_DB entries hold after
        its last write: what may be announced and reported as observed. Keys another producer
        holds, or not written, are not held."""
        macs = {key.split(self._sep, 1)[-1] for key in self._owned[VXLAN_FDB_TABLE]}  # Vlan:MAC
        # Canonical prefixes, as the plan names them: a VIP's key has no /32 (fpmsyncd's way).
        routes = frozenset(prefix_of(key) for key in self._owned[ROUTE_TABLE])
        return {"routes": routes, "fdb": frozenset(macs)}

    def counts(self) -> dict[str, int]:
        """Nothing: on SONiC the ASIC's table usage per headroom resource comes from CRM
        (everyone's entries, not only ours), through feedback.hardware."""
        return {}

    def object_counts(self) -> dict[str, int]:
        """The entries the agent owns, per object kind (OBJECT_NAMES' values), for STATE_DB."""
        return {OBJECT_NAMES[t]: len(self._owned[t]) for t in TABLE_ORDER}

    # -- public passes -------------------------------------------------------------------------

    async def apply(self, desired: DataplaneDesired) -> ApplyResult:
        async with self._lock:
            self._desired = desired
            result = await self._run(desired, "apply")
        raise_if_cancelled()
        return result

    async def resync(self) -> ApplyResult:
        """Drift repair: owned keys missing from APPL_DB (a restarted Redis, fpmsyncd's or
        neighsyncd's reconciliation) are written again; keys another producer rewrote are
        released and reported. After a Redis restart this is a full replay."""
        async with self._lock:
            if self._desired is None:
                return ApplyResult(APPLIER, True, "unchanged", time.time(), 0.0)
            result = await self._run(self._desired, "verify")
        raise_if_cancelled()
        return result

    async def report(self, outcome: Outcome) -> None:
        """The plan's attachments and the appliers' summary (FRR's and this one's latest result,
        the object counts) into STATE_DB. Never raises: STATE_DB is a report."""
        plan = outcome.plan
        frr_objects = ({"sessions": sum(1 for p in plan.frr.server_peers if p.node)}
                       if self.frr_managed else {})
        try:
            await self._state.publish(plan.attachments, [
                ApplierSummary.from_result(FRR, outcome.results.get(FRR), frr_objects),
                ApplierSummary.from_result(SUMMARY_NAME, outcome.results.get(APPLIER),
                                           self.object_counts()),
            ])
        except Exception:  # a bug in the report must not stop a reconcile
            log.exception("cannot write the agent's state to STATE_DB")
        raise_if_cancelled()

    # -- loops ---------------------------------------------------------------------------------

    async def crm_loop(self) -> None:
        """CRM as the headroom's source, read every CRM|Config polling_interval (5 s to 300 s).
        A failed read keeps the last reading; each note is logged once."""
        await self._crm.run()

    async def redis_watch_loop(self) -> None:
        """Notice a restart or a lost connection even when nothing is applied, and replay or
        verify then. Ends when close() was called."""
        lost = False
        while not self._closing:
            await asyncio.sleep(self.probe_interval)
            try:
                if self._lock.locked():
                    continue  # a pass is running; it checks run_ids itself
                async with self._lock:
                    if await self._restarted():
                        self._replay_needed = True
                    if self._desired is not None and (
                        self._replay_needed or self._verify_needed or lost
                    ):
                        # _run turns this into a replay when one is needed.
                        await self._run(self._desired, "verify")
                lost = False
            except RedisError as exc:
                if not lost:
                    log.warning("Redis unreachable (%s); will verify or replay when it is back",
                                exc)
                lost = True
            except Exception:  # the watcher must outlive any bug in one pass
                log.exception("Redis watcher pass failed")
            raise_if_cancelled()

    # -- internals -----------------------------------------------------------------------------

    async def _run(self, desired: DataplaneDesired, requested: str) -> ApplyResult:
        started, t0 = time.time(), time.monotonic()
        mode = requested
        rendered = render(desired, self.overlay, self._sep)
        try:
            if await swss_zmq_enabled(self.db):
                # Also checked at start; someone may have enabled it since.
                return ApplyResult(APPLIER, False, "refused", started, time.monotonic() - t0,
                                   error=_ZMQ_REFUSAL, details=_details(skipped=rendered.skipped))
            if await self._restarted():
                self._replay_needed = True  # until a replay has completed
            if self._replay_needed:
                mode = "replay"
            elif self._verify_needed and mode == "apply":
                mode = "verify"
            warnings = await self._prerequisites(desired)
            p = await self._reconcile(rendered.entries, mode)
            self._verify_needed = self._replay_needed = False
            if await self._restarted():
                # Redis restarted under this very pass: what was written may be gone already.
                self._replay_needed = True
                p.merge(await self._reconcile(rendered.entries, "replay"))
                self._replay_needed = False
                mode = "replay"
        except RedisError as exc:
            # Unknown how much landed: the next pass (or the watcher, once Redis answers)
            # verifies, or replays if the server restarted.
            self._verify_needed = True
            return ApplyResult(APPLIER, False, "failed", started, time.monotonic() - t0,
                               error=f"Redis: {exc}", details=_details(skipped=rendered.skipped))
        wrote = any(c.total for c in p.counts.values())
        if mode == "replay":
            action = "replayed"
        elif requested == "apply":
            action = "applied" if wrote else "unchanged"
        else:
            action = "repaired" if wrote else "in-sync"
        return ApplyResult(
            APPLIER, True, action, started, time.monotonic() - t0, p.counts,
            details=_details(conflicts=p.conflicts, skipped=rendered.skipped, warnings=warnings),
        )

    async def _restarted(self) -> bool:
        """Whether any Redis instance the agent writes to has a new run_id since last seen."""
        restarted = False
        for name in (APPL_DB, STATE_DB):
            instance = self.db.instance_name(name)
            info = await self.db.client(name).info("server")
            run_id = str(info.get("run_id", ""))
            seen = self._run_ids.get(instance)
            if seen is not None and seen != run_id:
                log.warning("Redis instance %s restarted (run_id %s -> %s)", instance, seen, run_id)
                restarted = True
            self._run_ids[instance] = run_id
        return restarted

    async def _prerequisites(self, desired: DataplaneDesired) -> list[str]:
        """What orchagent needs for the overlay but only the operator configures."""
        if desired.vtep is None:
            return []
        warnings = []
        cfg = self.db.client(CONFIG_DB)
        csep = self.db.separator(CONFIG_DB)
        vlan = self.overlay.vlan
        if not await cfg.exists(f"VLAN{csep}{vlan}"):
            warnings.append(f"CONFIG_DB VLAN{csep}{vlan} is missing: orchagent will not map the "
                            f"overlay VNI {desired.vtep.vni} until the VLAN exists")
        if not await cfg.exists(f"VLAN_INTERFACE{csep}{vlan}"):
            warnings.append(f"CONFIG_DB VLAN_INTERFACE{csep}{vlan} is missing: overlay routes "
                            f"need a router interface on {vlan}")
        port = await self.db.client(APPL_DB).hget(f"SWITCH_TABLE{self._sep}switch", "vxlan_port")
        if str(port or "4789") != str(desired.vtep.port):
            warnings.append(f"the ASIC's VXLAN UDP port is {port or '4789 (default)'}, the overlay "
                            f"uses {desired.vtep.port}: set SWITCH_TABLE vxlan_port (switch-wide)")
        return warnings

    # -- ownership record ----------------------------------------------------------------------

    async def _load_owned(self) -> None:
        owned = empty_entries()
        for table in TABLE_ORDER:
            raw = await self._owned_table.get_raw(table) or {}
            for key, text in raw.items():
                try:
                    fields = json.loads(text)
                    if not isinstance(fields, dict):
                        raise ValueError("not an object")
                except ValueError:
                    log.warning("%s: unreadable record for %s%s%s; will rewrite it",
                                self._owned_table.table, table, self._sep, key)
                    fields = {}
                owned[table][key] = {str(k): str(v) for k, v in fields.items()}
        self._owned = owned

    async def _record(self, table: str, entries: dict[str, Fields]) -> None:
        if not entries:
            return
        self._owned[table].update(entries)
        items = [(k, json.dumps(v, sort_keys=True, separators=(",", ":")))
                 for k, v in entries.items()]
        full = self._owned_table.full_key(table)
        client = self._owned_table.client
        async with client.pipeline(transaction=False) as pipe:
            for i in range(0, len(items), DEFAULT_BATCH_SIZE):
                pipe.hset(full, mapping=dict(items[i : i + DEFAULT_BATCH_SIZE]))
            await pipe.execute()

    async def _forget(self, table: str, keys: Iterable[str]) -> None:
        items = list(keys)
        if not items:
            return
        for k in items:
            self._owned[table].pop(k, None)
        full = self._owned_table.full_key(table)
        client = self._owned_table.client
        async with client.pipeline(transaction=False) as pipe:
            for i in range(0, len(items), DEFAULT_BATCH_SIZE):
                pipe.hdel(full, *items[i : i + DEFAULT_BATCH_SIZE])
            await pipe.execute()

    # -- reconcile -----------------------------------------------------------------------------

    async def _probe(self, table: str, keys: list[str]) -> dict[str, _Probe]:
        if not keys:
            return {}
        prod = self._producers[table]
        client = prod.client
        raw: list[list[object]] = []
        async with client.pipeline(transaction=False) as pipe:
            for i in range(0, len(keys), _PROBE_CHUNK):
                chunk = keys[i : i + _PROBE_CHUNK]
                redis_keys = [prod.key_set, prod.del_set]
                for k in chunk:
                    redis_keys += (prod.full_key(k), prod.staging_key(k))
                await self._probe_script(redis_keys, chunk, client=pipe)
            for part in await pipe.execute():
                raw.extend(part)
        out: dict[str, _Probe] = {}
        for key, (main, staging, pending, deleting) in zip(keys, raw, strict=True):
            main_f = _pairs(main)  # type: ignore[arg-type]
            staged = _pairs(staging)  # type: ignore[arg-type]
            if pending:
                # What the consumer will hold after its next pop: a pending delete drops T:key
                # first; staged fields are merged on top.
                base = {} if deleting else main_f
                effective = {**base, **staged}
                out[key] = _Probe(True, effective or None)
            else:
                out[key] = _Probe(False, main_f or None)
        return out

    def _conflict(self, p: _Pass, table: str, key: str, why: str) -> None:
        p.conflicts.append(f"{table}{self._sep}{key}: {why}")

    async def _reconcile(self, want: Entries, mode: str) -> _Pass:
        p = _Pass(mode)
        # Deletions first, in reverse dependency order (routes before the VTEP they use).
        for table in reversed(TABLE_ORDER):
            owned = self._owned[table]
            gone = [k for k in owned if k not in want[table]]
            if not gone:
                continue
            probe = await self._probe(table, gone)
            to_delete = []
            released = []
            for k in gone:
                st = probe[k]
                if not st.pending and st.fields is not None and st.fields != owned[k]:
                    # Rewritten by another producer since: theirs now. Leave it.
                    self._conflict(p, table, k, "rewritten by another producer; released, "
                                   "not deleted")
                    released.append(k)
                else:
                    to_delete.append(k)
            await self._producers[table].delete_many(to_delete)
            await self._forget(table, to_delete + released)
            p.count(table, removed=len(to_delete))

        # Then creations and updates, in dependency order.
        for table in TABLE_ORDER:
            added = changed = repaired = 0
            owned = self._owned[table]
            wanted = want[table]
            new = [k for k in wanted if k not in owned]
            kept = [k for k in wanted if k in owned]
            # An apply trusts the record for keys it does not change (a resync checks them);
            # keys it changes are looked at first, so another producer's rewrite is never
            # overwritten.
            check = kept if mode != "apply" else [k for k in kept if wanted[k] != owned[k]]
            probe = await self._probe(table, new + check)
            merge: list[tuple[str, Fields]] = []
            replace: list[tuple[str, Fields]] = []
            record: dict[str, Fields] = {}
            released: list[str] = []
            for k in new:
                st = probe[k]
                if st.fields is not None:
                    if st.fields != wanted[k]:
                        self._conflict(p, table, k, f"held by another producer with {st.fields}; "
                                       f"refusing to overwrite with {wanted[k]}")
                    # identical: another producer's entry serves; not owned, never deleted
                    continue
                merge.append((k, wanted[k]))
                record[k] = wanted[k]
                added += 1
            for k in kept:
                old, new_fields = owned[k], wanted[k]
                st = probe.get(k)
                if st is None:
                    continue  # apply, unchanged
                if not st.pending and st.fields is not None and st.fields != old:
                    self._conflict(p, table, k, "rewritten by another producer; released")
                    released.append(k)
                    continue
                if mode == "replay" or st.fields is None or new_fields != old:
                    # Dropping fields needs a replace only when the consumer holds the old ones.
                    shrink = st.fields is not None and needs_replace(st.fields, new_fields)
                    (replace if shrink else merge).append((k, new_fields))
                    record[k] = new_fields
                    if new_fields != old:
                        changed += 1
                    else:
                        repaired += 1
            p.count(table, added=added, changed=changed, repaired=repaired)
            await self._forget(table, released)
            # Record before writing: a crash in between leaves a record of a key that may not
            # exist, never a key nobody remembers writing.
            # (A replay writes every kept key, so this also rebuilds a lost record.)
            await self._record(table, record)
            producer = self._producers[table]
            await producer.set_many(merge)
            for k, fields in replace:
                await producer.replace(k, fields)
        return p
