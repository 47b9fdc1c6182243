"""Service VIP routes over static nodes in the real kernel (issue 12, item 4): LinuxDataplane
programs one multipath route per VIP with the agent's protocol, changes its next hops in one
message, repairs it when tampered with, and never touches another protocol's routes.

Each test gets a network namespace of its own (kfasvc-<random>, deleted whatever happens) with
a veth whose addresses make 192.0.2.2-.4 and 2001:db8::2-4 valid next hops. Needs root, as
tests/test_linux_dataplane.py does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agent.apply.linux.applier import LinuxDataplane
from agent.config import DataplaneConfig
from agent.plan.model import DataplaneDesired, StaticRoute, VipNexthop, VipRoute
from tests.recording import RecordingFeedback
from tests.test_linux_dataplane import (
    _require_root,  # noqa: F401  (autouse: fails without root, with the reason)
    await_for,
    errors,
    js,
    kernel_events,
    sh,
    veth_namespace,
    watching,
)

PROTO = 233
V4, V6 = "203.0.113.10/32", "2001:db8:5::10/128"


def hops(*vias: str) -> tuple[VipNexthop, ...]:
    return tuple(VipNexthop(via, "v0", f"s{via.rsplit('.', 1)[-1].rsplit(':', 1)[-1]}")
                 for via in vias)


def vip(prefix: str, *vias: str) -> VipRoute:
    return VipRoute(prefix.partition("/")[0], prefix, hops(*vias))


def desired(*routes: VipRoute, static: tuple[StaticRoute, ...] = ()) -> DataplaneDesired:
    return DataplaneDesired(PROTO, static, vip_routes=routes)


BOTH = desired(vip(V4, "192.0.2.2", "192.0.2.3"), vip(V6, "2001:db8::2", "2001:db8::3"))


def next_hops(ns: str, proto: int | None = PROTO) -> dict[str, tuple[str, ...]]:
    """dst -> its gateways, sorted (a plain route: one), for the routes of `proto`."""
    filt = ["proto", str(proto)] if proto is not None else []
    out: dict[str, tuple[str, ...]] = {}
    for family in ("-4", "-6"):
        for r in js(ns, family, "route", "show", *filt):
            gateways = [h["gateway"] for h in r.get("nexthops", [])] or [r.get("gateway", "")]
            dst = r["dst"] if "/" in r["dst"] else r["dst"] + ("/128" if ":" in r["dst"]
                                                               else "/32")
            out[dst] = tuple(sorted(gateways))
    return out


@pytest.fixture
def ns() -> Iterator[str]:
    with veth_namespace("kfasvc") as name:
        yield name


@pytest.fixture
async def dp(ns: str) -> AsyncIterator[LinuxDataplane]:
    plane = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns=ns)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.close()


async def test_a_vip_over_static_nodes_is_one_multipath_route_of_the_agents(
        ns: str, dp: LinuxDataplane) -> None:
    result = await dp.apply(BOTH)
    assert result.ok and result.counts["routes"].added == 2, result
    assert next_hops(ns) == {V4: ("192.0.2.2", "192.0.2.3"), V6: ("2001:db8::2", "2001:db8::3")}
    (route,) = js(ns, "route", "show", "203.0.113.10")
    assert (route["protocol"], route.get("type", "unicast")) == (str(PROTO), "unicast")
    assert all(h.get("weight", 1) == 1 and "onlink" not in h.get("flags", [])
               for h in route["nexthops"])
    assert dp.held()["routes"] >= {V4, V6}
    assert dp.observed_counts()["nexthop_groups"] == 2
    # Applied again, and resynced: nothing to do.
    assert (await dp.apply(BOTH)).action == "unchanged"
    assert (await dp.resync()).action == "in-sync"


async def test_one_next_hop_is_a_plain_route_and_more_make_it_multipath_in_place(
        ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(desired(vip(V4, "192.0.2.2")))
    assert js(ns, "route", "show", "203.0.113.10", "proto", str(PROTO))[0]["gateway"] == \
        "192.0.2.2"
    with kernel_events(ns) as seen:
        result = await dp.apply(desired(vip(V4, "192.0.2.2", "192.0.2.3", "192.0.2.4")))
    assert result.counts["routes"].changed == 1 and result.counts["routes"].added == 0
    assert next_hops(ns) == {V4: ("192.0.2.2", "192.0.2.3", "192.0.2.4")}
    # One replace: the prefix never went without a route (no deletion seen in between).
    assert not [line for line in seen if line.startswith("Deleted")], seen


@pytest.mark.parametrize(("prefix", "before", "after"), [
    (V4, ("192.0.2.2", "192.0.2.3"), ("192.0.2.3", "192.0.2.4")),
    (V6, ("2001:db8::2", "2001:db8::3"), ("2001:db8::3", "2001:db8::4")),
])
async def test_a_changed_next_hop_set_is_replaced_in_one_message(
        ns: str, dp: LinuxDataplane, prefix: str, before: tuple[str, ...],
        after: tuple[str, ...]) -> None:
    await dp.apply(desired(vip(prefix, *before)))
    with kernel_events(ns) as seen:
        result = await dp.apply(desired(vip(prefix, *after)))
    assert result.ok and result.counts["routes"].changed == 1, result
    assert next_hops(ns) == {prefix: after}
    # Never a moment without the route: the kernel tells of one new route with both next
    # hops, and of no deletion (a delete and an add would show as two events).
    addr = prefix.partition("/")[0]
    assert [line.split()[0] for line in seen if not line.startswith("\t")] == [addr], seen
    assert (await dp.resync()).action == "in-sync"


@pytest.mark.parametrize(("prefix", "tamper"), [
    (V4, ("route", "del", V4, "proto", str(PROTO))),
    (V4, ("route", "replace", V4, "proto", str(PROTO), "via", "192.0.2.2")),
    (V6, ("-6", "route", "del", V6, "via", "2001:db8::3", "proto", str(PROTO))),
    (V6, ("-6", "route", "del", V6, "proto", str(PROTO))),
])
async def test_a_next_hop_or_route_removed_by_hand_comes_back(
        ns: str, dp: LinuxDataplane, prefix: str, tamper: tuple[str, ...]) -> None:
    await dp.apply(BOTH)
    want = next_hops(ns)
    async with watching(dp):
        sh(ns, *tamper)
        assert next_hops(ns) != want
        took = await await_for(lambda: next_hops(ns) == want, 3.0, "the VIP route repaired")
    assert took < 3.0
    assert dp.last_repair is not None and dp.last_repair.changes, dp.last_repair


async def test_the_periodic_resync_repairs_a_missing_next_hop_without_events(
        ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(BOTH)
    sh(ns, "-6", "route", "del", V6, "via", "2001:db8::2", "proto", str(PROTO))
    result = await dp.resync()
    assert result.action == "repaired", result
    assert next_hops(ns)[V6] == ("2001:db8::2", "2001:db8::3")


async def test_routes_of_other_protocols_are_never_touched(ns: str, dp: LinuxDataplane) -> None:
    # Another owner's multipath route to another VIP, and one at our VIP's very key.
    sh(ns, "route", "add", "203.0.113.20/32", "proto", "static",
       "nexthop", "via", "192.0.2.2", "nexthop", "via", "192.0.2.4")
    sh(ns, "route", "add", V4, "proto", "bird", "via", "192.0.2.4")
    result = await dp.apply(BOTH)
    assert not result.ok
    assert [(table, obj) for table, obj, _ in errors(result)] == [
        ("routes", "203.0.113.10/32 via 192.0.2.2, 192.0.2.3 (ECMP)")]
    assert "does not own" in errors(result)[0][2]
    everyone = next_hops(ns, None)
    assert everyone["203.0.113.20/32"] == ("192.0.2.2", "192.0.2.4")
    assert everyone[V4] == ("192.0.2.4",)
    assert next_hops(ns) == {V6: ("2001:db8::2", "2001:db8::3")}
    # Leaving the VIPs deletes only the agent's own.
    assert (await dp.apply(desired())).counts["routes"].removed == 1
    left: dict[str, Any] = next_hops(ns, None)
    assert left["203.0.113.20/32"] == ("192.0.2.2", "192.0.2.4") and left[V4] == ("192.0.2.4",)
    assert V6 not in left


async def test_a_restarted_agent_adopts_its_multipath_routes(ns: str) -> None:
    first = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns=ns)
    await first.start()
    await first.apply(BOTH)
    await first.close()
    second = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns=ns)
    await second.start()
    try:
        with kernel_events(ns) as seen:
            result = await second.apply(BOTH)
        assert result.action == "unchanged" and seen == [], (result, seen)
    finally:
        await second.close()
