"""What a switchdev ASIC says about its own tables: `devlink -j resource show <dev>`.

Pure parsing; running devlink (or asking the devlink generic-netlink family) is the caller's.
The JSON is `{"resources": {"<dev>": [resource, ...]}}`, each resource an object with `name`,
`size`, optional `occ` (only when the driver can count it), `unit`, optional `size_new` (a
resize that takes effect at the next reload), `size_min`/`size_max`/`size_gran` (when
resizable), `dpipe_tables` ("none" or a list of `{"table_name": ...}`) and children under
`resources`.

What the known drivers expose, and what that means for the agent:
- netdevsim (the kernel's test device): `/IPv4/fib`, `/IPv6/fib`, `/nexthops` with size and
  occupancy: these map one to one onto ipv4_routes, ipv6_routes and nexthops.
- mlxsw Spectrum-1: `/kvd` (245,760 entries) split into `/kvd/linear`, `/kvd/hash_single` and
  `/kvd/hash_double`. Spectrum-2 and later: one fixed `/kvd`. KVD is a *shared* pool (host and
  neighbour entries, adjacency/nexthop entries, FDB; on Spectrum-2+ LPM too), so its size is no
  table's capacity: it is reported as a shared pool, an upper bound on the sum of the tables it
  holds, never as the capacity of one of them.
- LPM occupancy is not exposed by devlink on any of them: route tables on Spectrum are sized by
  the profile (or config) and their exhaustion is seen per route through rt_offload_failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.headroom.resources import RESOURCES, Capacity, Counts, Observed, Resource

# netdevsim registers its tables with size (u64)-1: "no limit", not a capacity.
UNLIMITED = 2**64 - 1

# Exact one-to-one tables (netdevsim's): path -> agent resource.
DIRECT: Mapping[str, Resource] = {
    "/IPv4/fib": "ipv4_routes",
    "/IPv6/fib": "ipv6_routes",
    "/nexthops": "nexthops",
}

# dpipe tables mlxsw binds to KVD parts: they tell from the device's own answer which part
# holds what, instead of this module guessing the driver's layout.
DPIPE_HOLDS: Mapping[str, tuple[Resource, ...]] = {
    "mlxsw_host4": ("neighbors",),  # IPv4 host entries (neighbours, /32 host routes)
    "mlxsw_host6": ("neighbors",),  # IPv6 host entries
    "mlxsw_adj": ("nexthops",),  # adjacency entries: the nexthops routes point at
}

KVD_NOTE = (
    "KVD is shared by host/neighbour, adjacency (nexthop) and FDB entries (on Spectrum-2 and"
    " later also LPM): its size bounds their sum and is no single table's capacity"
)
LPM_NOTE = (
    "LPM (route table) occupancy is not exposed by devlink: route capacity comes from the"
    " profile or config, and routes the ASIC could not take show as rt_offload_failed"
)


class DevlinkFormatError(ValueError):
    """The document is not `devlink -j resource show` output."""


@dataclass(frozen=True)
class DevlinkResource:
    """One resource, flattened: `path` is "/kvd/linear" style."""

    path: str
    size: int
    occ: int | None  # None: the driver does not count it
    unit: str
    size_new: int | None = None  # pending size, effective after `devlink dev reload`
    dpipe_tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class SharedPool:
    """A device pool several agent resources draw from (mlxsw KVD)."""

    path: str
    size: int
    occ: int | None
    holds: tuple[Resource, ...]  # the agent resources known to draw from it
    source: str  # "devlink:<dev>:<path>"

    def demand(self, counts: Counts) -> int:
        """Entries `counts` would take from this pool (a lower bound: other users exist)."""
        return sum(counts[r] for r in self.holds)


@dataclass(frozen=True)
class DevlinkView:
    """What one device's resources say in the agent's terms."""

    device: str
    capacities: Mapping[Resource, Capacity]  # only exact per-table figures
    used: Mapping[Resource, Observed]
    shared: tuple[SharedPool, ...]
    notes: tuple[str, ...]
    unmapped: tuple[str, ...]  # paths that say nothing about the agent's tables


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DevlinkFormatError(f"{what} is not a non-negative integer: {value!r}")
    return value


def _tables(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(str(t["table_name"]) for t in value
                     if isinstance(t, Mapping) and "table_name" in t)
    return ()  # "none", or absent


def _flatten(items: Any, parent: str, out: list[DevlinkResource]) -> None:
    if not isinstance(items, list):
        raise DevlinkFormatError(f"resources under {parent or '/'} are not a list")
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise DevlinkFormatError(f"a resource under {parent or '/'} has no name")
        path = f"{parent}/{item['name']}"
        occ = item.get("occ")
        size_new = item.get("size_new")
        out.append(DevlinkResource(
            path=path,
            size=_int(item.get("size"), f"{path} size"),
            occ=None if occ is None else _int(occ, f"{path} occ"),
            unit=str(item.get("unit", "entry")),
            size_new=None if size_new is None else _int(size_new, f"{path} size_new"),
            dpipe_tables=_tables(item.get("dpipe_tables")),
        ))
        if "resources" in item:
            _flatten(item["resources"], path, out)


def parse_resources(
    document: str | bytes | Mapping[str, Any],
) -> dict[str, tuple[DevlinkResource, ...]]:
    """`devlink -j resource show [dev]` output -> per device handle, its resources in
    depth-first order with full paths."""
    doc: Any = json.loads(document) if isinstance(document, str | bytes) else document
    if not isinstance(doc, Mapping) or not isinstance(doc.get("resources"), Mapping):
        raise DevlinkFormatError("expected an object with a 'resources' object")
    devices: dict[str, tuple[DevlinkResource, ...]] = {}
    for handle, items in doc["resources"].items():
        records: list[DevlinkResource] = []
        _flatten(items, "", records)
        devices[str(handle)] = tuple(records)
    return devices


def _source(device: str, path: str) -> str:
    return f"devlink:{device}:{path}"


def map_resources(device: str, records: Sequence[DevlinkResource]) -> DevlinkView:
    """Map one device's resources onto the agent's: exact tables become capacities and
    observed usage; KVD becomes shared pools; everything else is listed as unmapped."""
    capacities: dict[Resource, Capacity] = {}
    used: dict[Resource, Observed] = {}
    shared: list[SharedPool] = []
    unmapped: list[str] = []
    notes: list[str] = []
    paths = {r.path for r in records}
    kvd_split = any(p.startswith("/kvd/") for p in paths)

    for rec in records:
        resource = DIRECT.get(rec.path)
        if resource is not None:
            if rec.size != UNLIMITED and rec.unit == "entry":
                capacities[resource] = Capacity(rec.size, _source(device, rec.path))
            if rec.occ is not None:
                used[resource] = Observed(rec.occ, _source(device, rec.path))
            if rec.size_new is not None and rec.size_new != rec.size:
                notes.append(f"{rec.path} is being resized to {rec.size_new}; the current"
                             f" {rec.size} applies until the device is reloaded")
            continue
        if rec.path == "/kvd" or rec.path.startswith("/kvd/"):
            if rec.path.count("/") > 2:
                continue  # /kvd/linear/chunks etc.: the driver's allocator, not tables
            holds: set[Resource] = set()
            for table in rec.dpipe_tables:
                holds.update(DPIPE_HOLDS.get(table, ()))
            if rec.path == "/kvd" and not kvd_split:
                # Spectrum-2+: one pool; per the reference it holds every table but VTEPs.
                holds.update(("ipv4_routes", "ipv6_routes", "nexthops", "neighbors",
                              "fdb_entries"))
            shared.append(SharedPool(
                path=rec.path, size=rec.size, occ=rec.occ,
                holds=tuple(r for r in RESOURCES if r in holds),
                source=_source(device, rec.path)))
            continue
        unmapped.append(rec.path)

    if kvd_split:
        # Spectrum-1: the whole pool holds what its parts hold.
        parts = {r for pool in shared if pool.path != "/kvd" for r in pool.holds}
        shared = [SharedPool(p.path, p.size, p.occ, tuple(r for r in RESOURCES if r in parts),
                             p.source) if p.path == "/kvd" else p for p in shared]
    if shared:
        notes.append(KVD_NOTE)
    if not any(r in capacities or r in used for r in ("ipv4_routes", "ipv6_routes")):
        notes.append(LPM_NOTE)
    return DevlinkView(device, capacities, used, tuple(shared), tuple(notes), tuple(unmapped))


def views(document: str | bytes | Mapping[str, Any],
          devices: Iterable[str] | None = None) -> list[DevlinkView]:
    """Parse and map in one step, for every device in the document (or those named)."""
    parsed = parse_resources(document)
    wanted = list(parsed) if devices is None else list(devices)
    missing = [d for d in wanted if d not in parsed]
    if missing:
        raise DevlinkFormatError(f"no resources for {', '.join(missing)} in the output;"
                                 f" present: {', '.join(parsed) or 'none'}")
    return [map_resources(d, parsed[d]) for d in wanted]
