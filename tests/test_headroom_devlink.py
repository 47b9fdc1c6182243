"""`devlink -j resource show` parsing and mapping (agent/headroom/devlink.py), on the recorded
samples of tests/data/headroom/ (see its README: written from the documented format)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.headroom.devlink import (
    LPM_NOTE,
    UNLIMITED,
    DevlinkFormatError,
    map_resources,
    parse_resources,
    views,
)
from agent.headroom.profiles import capacity_for
from agent.headroom.resources import Capacity, Counts, Observed

DATA = Path(__file__).parent / "data" / "headroom"


def sample(name: str) -> str:
    return (DATA / f"devlink-{name}.json").read_text()


def test_spectrum1_records_have_full_paths_sizes_and_occupancy() -> None:
    devices = parse_resources(sample("spectrum1"))
    assert list(devices) == ["pci/0000:03:00.0"]
    recs = {r.path: r for r in devices["pci/0000:03:00.0"]}
    assert recs["/kvd"].size == 245760 and recs["/kvd"].occ is None
    assert recs["/kvd/linear"].size == 98304 and recs["/kvd/linear"].occ == 2048
    assert recs["/kvd/linear/chunks"].size == 49152
    assert recs["/kvd/hash_single"].size == 87040 and recs["/kvd/hash_single"].occ is None
    assert recs["/kvd/hash_single"].size_new == 94208
    assert recs["/kvd/hash_double"].dpipe_tables == ("mlxsw_host6",)
    assert recs["/kvd/linear"].unit == "entry"
    # the default split adds up to the pool
    assert sum(recs[p].size for p in ("/kvd/linear", "/kvd/hash_single", "/kvd/hash_double")) \
        == recs["/kvd"].size


def test_spectrum1_kvd_is_a_shared_pool_never_a_table_capacity() -> None:
    (view,) = views(sample("spectrum1"))
    assert view.capacities == {}  # KVD bounds a sum, no single table
    assert view.used == {}
    pools = {p.path: p for p in view.shared}
    assert set(pools) == {"/kvd", "/kvd/linear", "/kvd/hash_single", "/kvd/hash_double"}
    assert pools["/kvd/linear"].holds == ("nexthops",)  # from mlxsw_adj
    assert pools["/kvd/hash_single"].holds == ("neighbors",)  # mlxsw_host4
    assert pools["/kvd"].holds == ("nexthops", "neighbors")  # what its parts hold
    assert pools["/kvd/linear"].source == "devlink:pci/0000:03:00.0:/kvd/linear"
    assert pools["/kvd/linear"].demand(Counts(nexthops=10, neighbors=3)) == 10
    assert any("shared" in n for n in view.notes)
    assert LPM_NOTE in view.notes  # LPM occupancy is not exposed: say so
    assert "/span_agents" in view.unmapped and "/counters/flow" in view.unmapped
    assert not any(p.startswith("/kvd") for p in view.unmapped)


def test_spectrum2_has_one_fixed_kvd_shared_by_every_table_but_vteps() -> None:
    (view,) = views(sample("spectrum2"))
    (pool,) = view.shared
    assert (pool.path, pool.size, pool.occ) == ("/kvd", 524288, None)
    assert pool.holds == ("ipv4_routes", "ipv6_routes", "nexthops", "neighbors", "fdb_entries")
    assert view.capacities == {} and view.used == {}
    assert LPM_NOTE in view.notes
    assert "/rifs" in view.unmapped


def test_netdevsim_tables_map_one_to_one() -> None:
    (view,) = views(sample("netdevsim"), ["netdevsim/netdevsim10"])
    src = "devlink:netdevsim/netdevsim10:"
    assert view.capacities == {
        "ipv4_routes": Capacity(96, src + "/IPv4/fib"),
        "nexthops": Capacity(64, src + "/nexthops"),
    }  # /IPv6/fib is (u64)-1: unlimited is not a capacity
    assert view.used == {
        "ipv4_routes": Observed(43, src + "/IPv4/fib"),
        "ipv6_routes": Observed(9, src + "/IPv6/fib"),
        "nexthops": Observed(7, src + "/nexthops"),
    }
    assert view.shared == ()
    assert LPM_NOTE not in view.notes
    assert "/IPv4/fib-rules" in view.unmapped


def test_netdevsim_capacities_feed_capacity_for() -> None:
    (view,) = views(sample("netdevsim"))
    caps = capacity_for("generic", {"nexthops": 32}, discovered=view.capacities)
    assert caps["ipv4_routes"].value == 96
    assert caps["nexthops"] == Capacity(32, "config")
    assert caps["ipv6_routes"].source != "config" and "devlink" not in caps["ipv6_routes"].source


def test_unlimited_size_survives_json() -> None:
    recs = {r.path: r for r in parse_resources(sample("netdevsim"))["netdevsim/netdevsim10"]}
    assert recs["/IPv6/fib"].size == UNLIMITED


def test_pending_resize_is_reported_for_mapped_tables() -> None:
    doc = json.loads(sample("netdevsim"))
    fib = doc["resources"]["netdevsim/netdevsim10"][0]["resources"][0]
    fib["size_new"] = 128
    (view,) = views(doc)
    assert view.capacities["ipv4_routes"].value == 96  # until reload
    assert any("resized to 128" in n for n in view.notes)


def test_accepts_parsed_dict_and_bytes() -> None:
    text = sample("spectrum2")
    assert parse_resources(json.loads(text)) == parse_resources(text.encode())


@pytest.mark.parametrize("doc", [
    "[]",
    '{"resources": []}',
    '{"resources": {"pci/x": {"name": "kvd"}}}',
    '{"resources": {"pci/x": [{"size": 3}]}}',
    '{"resources": {"pci/x": [{"name": "kvd", "size": -1}]}}',
    '{"resources": {"pci/x": [{"name": "kvd", "size": 5, "occ": "many"}]}}',
])
def test_malformed_documents_are_refused(doc: str) -> None:
    with pytest.raises(DevlinkFormatError):
        parse_resources(doc)


def test_asking_for_an_absent_device_names_the_present_ones() -> None:
    with pytest.raises(DevlinkFormatError, match=re.escape("pci/0000:03:00.0")):
        views(sample("spectrum1"), ["pci/0000:99:00.0"])


def test_map_resources_on_empty_device() -> None:
    view = map_resources("pci/x", ())
    assert view.capacities == {} and view.shared == () and view.unmapped == ()
    assert LPM_NOTE in view.notes
