"""LinuxDataplane against the real kernel: each test gets a network namespace of its own
(kfn-dp-<random>, deleted whatever happens) with a veth pair whose address makes 192.0.2.2 and
2001:db8::2 valid next hops and 192.0.2.1 a VTEP source. Checked with iproute2's JSON output,
and, where "nothing changes" is the claim, with `ip monitor` between two marker events.

Needs root; without it the tests fail with the reason (CI runs as root, a skip would hide it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from agent.apply.contract import ApplyResult
from agent.apply.linux.applier import LinuxDataplane
from agent.apply.linux.events import EventSocket
from agent.config import DataplaneConfig
from agent.errors import StartupError
from agent.plan.model import DataplaneDesired, StaticRoute, VtepDevice, VxlanPeer
from tests.recording import RecordingFeedback

PROTO = 233
CFG = DataplaneConfig()
VTEP = VtepDevice("flannel.1", 1, 8472, "192.0.2.1", 1450, "02:00:00:00:00:01", "10.244.0.0/32")
PEER1 = VxlanPeer("n1", "10.244.1.0/24", "10.244.1.0", "aa:bb:cc:00:00:01", "192.0.2.11")
PEER2 = VxlanPeer("n2", "10.244.2.0/24", "10.244.2.0", "aa:bb:cc:00:00:02", "192.0.2.12")
STATIC = (
    StaticRoute("s1", "10.1.0.0/24", "192.0.2.2"),
    StaticRoute("s2", "10.2.0.0/24", "192.0.2.2"),
    StaticRoute("s2", "fd00:2::/64", "2001:db8::2"),
)
FULL = DataplaneDesired(PROTO, STATIC, VTEP, (PEER1, PEER2))


@pytest.fixture(autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("LinuxDataplane tests need root (network namespaces, netlink writes): run "
                    "the README's test command as root", pytrace=False)


def sh(ns: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"ip -n {ns} {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def bridge(ns: str, *args: str) -> None:
    subprocess.run(["bridge", "-n", ns, *args], check=True, capture_output=True)


def sh_netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], check=True, capture_output=True,
                          text=True).stdout


def js(ns: str, *args: str, tool: str = "ip") -> list[dict[str, Any]]:
    out = subprocess.run([tool, "-n", ns, "-j", *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out) if out.strip() else []


def our_routes(ns: str) -> dict[str, dict[str, Any]]:
    routes = js(ns, "route", "show", "proto", str(PROTO))
    routes += js(ns, "-6", "route", "show", "proto", str(PROTO))
    return {r["dst"]: r for r in routes}


def permanent_neighbours(ns: str, dev: str) -> dict[str, str]:
    return {n["dst"]: n["lladdr"] for n in js(ns, "neigh", "show", "dev", dev, "nud", "permanent")}


def fdb(ns: str, dev: str = "flannel.1") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in js(ns, "fdb", "show", "dev", dev, tool="bridge"):
        out.setdefault(e["mac"], []).append(e.get("dst", ""))
    return out


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Polls (never a fixed sleep); returns how long it took."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - t0


async def await_for(check: Callable[[], bool], limit: float, what: str) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit:
            raise AssertionError(f"not within {limit}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


@contextlib.contextmanager
def veth_namespace(prefix: str) -> Iterator[str]:
    """A namespace with a veth pair up, 192.0.2.1/24 and 2001:db8::1/64 on v0; deleted after."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        sh(name, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        for dev in ("lo", "v0", "v1"):
            sh(name, "link", "set", dev, "up")
        sh(name, "addr", "add", "192.0.2.1/24", "dev", "v0")
        sh(name, "addr", "add", "2001:db8::1/64", "dev", "v0", "nodad")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def ns() -> Iterator[str]:
    with veth_namespace("kfn-dp") as name:
        yield name


def errors(result: ApplyResult | None) -> list[tuple[str, str, str]]:
    """(table, object, error) of each line of details["errors"] ("<table> <object>: <error>";
    the objects of these tests hold no ": ")."""
    assert result is not None
    out = []
    for line in result.details.get("errors", ()):
        head, _, error = line.partition(": ")
        table, _, obj = head.partition(" ")
        out.append((table, obj, error))
    return out


@pytest.fixture
def feedback() -> RecordingFeedback:
    return RecordingFeedback()


@pytest.fixture
async def dp(ns: str, feedback: RecordingFeedback) -> AsyncIterator[LinuxDataplane]:
    plane = LinuxDataplane(CFG, feedback, netns=ns)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.close()


@contextlib.contextmanager
def kernel_events(ns: str) -> Iterator[list[str]]:
    """The route/neighbour/link/address events of the block, as `ip monitor` prints them.
    A marker route added before and deleted after brackets them, so no event is missed or
    cut off and no fixed wait is needed."""
    proc = subprocess.Popen(["stdbuf", "-oL", "ip", "-n", ns, "monitor", "route", "neigh",
                             "link", "address"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True)
    reader.start()
    captured: list[str] = []
    try:
        # The monitor may not be subscribed yet: add new marker routes until one shows.
        t0 = time.monotonic()
        for n in range(1, 200):
            sh(ns, "route", "add", f"198.51.100.{n}/32", "dev", "v0")
            with contextlib.suppress(AssertionError):
                wait_for(lambda: any("198.51.100." in line for line in lines), 0.1, "marker")
                break
            assert time.monotonic() - t0 < 5, "ip monitor never started"
        start = len(lines)
        yield captured
        sh(ns, "route", "add", "198.51.100.255/32", "dev", "v0")
        wait_for(lambda: any(line.startswith("198.51.100.255") for line in lines[start:]), 5,
                 "the closing marker event")
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("198.51.100.255"))
        captured.extend(line.rstrip() for line in lines[start:end] if "198.51.100." not in line)
    finally:
        proc.terminate()
        proc.wait(5)


@contextlib.asynccontextmanager
async def watching(dp: LinuxDataplane) -> AsyncIterator[None]:
    watcher = asyncio.create_task(dp.run_events())
    try:
        yield
    finally:
        watcher.cancel()
        # a cancelled watcher must end promptly (a hang here once came from wait_for)
        async with asyncio.timeout(5):
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


# --- static routes ---------------------------------------------------------------------------


async def test_static_routes_are_installed_with_the_agents_protocol(ns: str,
                                                                    dp: LinuxDataplane) -> None:
    result = await dp.apply(DataplaneDesired(PROTO, STATIC))
    assert result.ok and result.action == "applied", result
    assert result.counts["routes"].added == 3
    routes = our_routes(ns)
    assert set(routes) == {"10.1.0.0/24", "10.2.0.0/24", "fd00:2::/64"}
    assert routes["10.1.0.0/24"]["gateway"] == "192.0.2.2"
    assert routes["fd00:2::/64"]["gateway"] == "2001:db8::2"
    # (a `proto` filter leaves the protocol out of the output; ask without one)
    assert js(ns, "route", "show", "10.1.0.0/24")[0]["protocol"] == str(PROTO)
    assert dp.observed_counts() == {"ipv4_routes": 2, "ipv6_routes": 1, "nexthop_groups": 0,
                                    "neighbors": 0, "fdb_entries": 0, "remote_vteps": 0}


async def test_reapply_changes_nothing(ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(FULL)
    with kernel_events(ns) as events:
        again = await dp.apply(FULL)
        resync = await dp.resync()
    assert again.ok and again.action == "unchanged" and again.changes == 0, again
    assert resync.ok and resync.action == "in-sync" and resync.changes == 0, resync
    assert events == [], "an unchanged desired state wrote to the kernel"


async def test_a_change_applies_only_the_delta(ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(DataplaneDesired(PROTO, STATIC))
    changed = (
        StaticRoute("s1", "10.1.0.0/24", "192.0.2.2"),  # unchanged
        StaticRoute("s2", "10.2.0.0/24", "192.0.2.3"),  # new next hop
        StaticRoute("s3", "10.3.0.0/24", "192.0.2.2"),  # new; fd00:2::/64 goes
    )
    with kernel_events(ns) as events:
        result = await dp.apply(DataplaneDesired(PROTO, changed))
    c = result.counts["routes"]
    assert result.ok and (c.added, c.changed, c.removed) == (1, 1, 1), result
    routes = our_routes(ns)
    assert set(routes) == {"10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"}
    assert routes["10.2.0.0/24"]["gateway"] == "192.0.2.3"
    assert not any("10.1.0.0/24" in e for e in events), events
    assert len(events) == 3, events


async def test_removal_cleans_everything_it_owns(ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(FULL)
    result = await dp.apply(DataplaneDesired(PROTO))
    assert result.ok, result
    c = result.counts
    assert (c["routes"].removed, c["fdb"].removed, c["neighbors"].removed,
            c["links"].removed) == (5, 2, 2, 1)
    assert our_routes(ns) == {}
    assert "flannel.1" not in {link["ifname"] for link in js(ns, "link", "show")}
    assert dp.observed_counts() == dict.fromkeys(
        ("ipv4_routes", "ipv6_routes", "nexthop_groups", "neighbors", "fdb_entries",
         "remote_vteps"), 0)


async def test_foreign_routes_and_neighbours_are_never_touched(ns: str,
                                                               dp: LinuxDataplane) -> None:
    foreign = [
        ("10.1.0.0/24", "via", "192.0.2.9", "proto", "static", "table", "100"),
        ("10.1.0.0/24", "via", "192.0.2.9", "proto", "static", "metric", "50"),
        ("10.60.0.0/24", "via", "192.0.2.9", "proto", "static"),
        ("10.61.0.0/24", "via", "192.0.2.9", "proto", str(PROTO), "table", "100"),
        ("10.2.0.0/24", "via", "192.0.2.9", "proto", "static"),  # the same key as a desired one
    ]
    for route in foreign:
        sh(ns, "route", "add", *route)
    sh(ns, "neigh", "add", "192.0.2.77", "lladdr", "02:00:00:00:00:77", "dev", "v0", "nud",
       "permanent")

    def snapshot() -> tuple[str, str]:
        return (sh(ns, "route", "show", "table", "all"), sh(ns, "neigh", "show", "dev", "v0"))

    result = await dp.apply(DataplaneDesired(PROTO, STATIC))
    # 10.2.0.0/24 is held by another owner: reported with the object, the rest applied
    assert not result.ok and result.action == "partial"
    assert [(t, o) for t, o, _ in errors(result)] == [("routes", "10.2.0.0/24 via 192.0.2.2")]
    assert "EEXIST" in errors(result)[0][2]
    assert set(our_routes(ns)) == {"10.1.0.0/24", "fd00:2::/64"}
    held = js(ns, "route", "show", "10.2.0.0/24")
    assert [(r["gateway"], r["protocol"]) for r in held] == [("192.0.2.9", "static")]
    with_ours = snapshot()
    result = await dp.apply(DataplaneDesired(PROTO))
    assert result.counts["routes"].removed == 2
    routes, neighbours = snapshot()
    for route in foreign:
        table = ["table", route[route.index("table") + 1]] if "table" in route else []
        assert js(ns, "route", "show", route[0], *table, "proto", route[4]), route
    assert "192.0.2.77 lladdr 02:00:00:00:00:77 PERMANENT" in neighbours
    assert routes == "".join(line + "\n" for line in with_ours[0].splitlines()
                             if f"proto {PROTO}" not in line or "table 100" in line)


# --- VXLAN -----------------------------------------------------------------------------------


async def test_vtep_is_created_offloadable(ns: str, dp: LinuxDataplane) -> None:
    result = await dp.apply(DataplaneDesired(PROTO, (), VTEP, ()))
    assert result.ok and result.counts["links"].added == 1, result
    (link,) = js(ns, "-d", "link", "show", "flannel.1")
    info = link["linkinfo"]["info_data"]
    assert link["linkinfo"]["info_kind"] == "vxlan"
    assert (info["id"], info["local"], info["port"]) == (1, "192.0.2.1", 8472)
    assert info["learning"] is False and info["udp_csum"] is False
    assert info["ttl"] == 64 and info["tos"] == "0x1"  # TTL set, TOS inherited (mlxsw)
    assert "link" not in info  # no underlay device binding
    assert link["mtu"] == 1450 and link["address"] == "02:00:00:00:00:01"
    assert "UP" in link["flags"]
    addrs = js(ns, "addr", "show", "dev", "flannel.1")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == [
        ("10.244.0.0", 32)]

    # a different MTU is changed in place; a different VNI needs a new device
    mtu = await dp.apply(DataplaneDesired(PROTO, (), VtepDevice(
        "flannel.1", 1, 8472, "192.0.2.1", 1400, VTEP.mac, VTEP.address), ()))
    assert mtu.counts["links"].changed == 1 and js(ns, "link", "show", "flannel.1")[0][
        "mtu"] == 1400
    index = js(ns, "link", "show", "flannel.1")[0]["ifindex"]
    vni = await dp.apply(DataplaneDesired(PROTO, (), VtepDevice(
        "flannel.1", 7, 8472, "192.0.2.1", 1400, VTEP.mac, VTEP.address), (PEER1,)))
    assert vni.ok, vni
    (link,) = js(ns, "-d", "link", "show", "flannel.1")
    assert link["linkinfo"]["info_data"]["id"] == 7 and link["ifindex"] != index
    assert permanent_neighbours(ns, "flannel.1") == {"10.244.1.0": PEER1.vtep_mac}
    assert "10.244.1.0/24" in our_routes(ns)


async def test_overlay_peers_get_neighbour_fdb_and_onlink_route(ns: str,
                                                                dp: LinuxDataplane) -> None:
    result = await dp.apply(FULL)
    assert result.ok, result
    c = result.counts
    assert (c["neighbors"].added, c["fdb"].added, c["routes"].added) == (2, 2, 5)
    assert permanent_neighbours(ns, "flannel.1") == {"10.244.1.0": "aa:bb:cc:00:00:01",
                                                     "10.244.2.0": "aa:bb:cc:00:00:02"}
    entries = js(ns, "fdb", "show", "dev", "flannel.1", tool="bridge")
    assert {(e["mac"], e["dst"]) for e in entries} == {("aa:bb:cc:00:00:01", "192.0.2.11"),
                                                       ("aa:bb:cc:00:00:02", "192.0.2.12")}
    assert all("self" in e["flags"] and e["state"] == "permanent" for e in entries), entries
    route = our_routes(ns)["10.244.2.0/24"]
    assert (route["gateway"], route["dev"]) == ("10.244.2.0", "flannel.1")
    assert "onlink" in route["flags"]
    assert dp.observed_counts() == {"ipv4_routes": 4, "ipv6_routes": 1, "nexthop_groups": 0,
                                    "neighbors": 2, "fdb_entries": 2, "remote_vteps": 2}


async def test_vtep_mac_or_public_ip_change_leaves_nothing_stale(ns: str,
                                                                 dp: LinuxDataplane) -> None:
    await dp.apply(FULL)
    moved = VxlanPeer("n1", PEER1.pod_cidr, PEER1.gateway, "aa:bb:cc:00:00:99", "192.0.2.21")
    result = await dp.apply(DataplaneDesired(PROTO, STATIC, VTEP, (moved, PEER2)))
    assert result.ok, result
    assert fdb(ns) == {"aa:bb:cc:00:00:99": ["192.0.2.21"], "aa:bb:cc:00:00:02": ["192.0.2.12"]}
    assert permanent_neighbours(ns, "flannel.1") == {"10.244.1.0": "aa:bb:cc:00:00:99",
                                                     "10.244.2.0": "aa:bb:cc:00:00:02"}
    # only the public IP changes: the entry is rewritten in place, not duplicated
    readdressed = VxlanPeer("n2", PEER2.pod_cidr, PEER2.gateway, PEER2.vtep_mac, "192.0.2.22")
    result = await dp.apply(DataplaneDesired(PROTO, STATIC, VTEP, (moved, readdressed)))
    assert result.counts["fdb"].changed == 1 and fdb(ns)["aa:bb:cc:00:00:02"] == ["192.0.2.22"]


# --- events, restart, failures ---------------------------------------------------------------


async def test_tampered_objects_are_restored_within_a_second(
        ns: str, dp: LinuxDataplane, feedback: RecordingFeedback) -> None:
    await dp.apply(FULL)
    async with watching(dp):
        for undo, present in (
            (("route", "del", "10.1.0.0/24", "proto", str(PROTO)),
             lambda: "10.1.0.0/24" in our_routes(ns)),
            (("-6", "route", "del", "fd00:2::/64", "proto", str(PROTO)),
             lambda: "fd00:2::/64" in our_routes(ns)),
            (("neigh", "del", "10.244.1.0", "dev", "flannel.1"),
             lambda: "10.244.1.0" in permanent_neighbours(ns, "flannel.1")),
            (("link", "set", "flannel.1", "down"),  # flushes its routes without a route event
             lambda: "10.244.2.0/24" in our_routes(ns) and "UP" in js(
                 ns, "link", "show", "flannel.1")[0]["flags"]),
            (("link", "del", "flannel.1"),
             lambda: our_routes(ns).keys() >= {"10.244.1.0/24", "10.244.2.0/24"}
             and len(fdb(ns)) == 2),
        ):
            sh(ns, *undo)
            took = await await_for(present, 1.0, f"repair after `ip {' '.join(undo)}`")
            assert took < 1.0
        bridge(ns, "fdb", "del", PEER2.vtep_mac, "dev", "flannel.1", "self")
        await await_for(lambda: PEER2.vtep_mac in fdb(ns), 1.0, "FDB entry restored")
        await await_for(lambda: bool(feedback.replans), 1.0, "a new plan asked for")
        assert dp.last_repair is not None and dp.last_repair.ok
    # cancelling the event task left the data plane as it was
    assert set(our_routes(ns)) == {"10.1.0.0/24", "10.2.0.0/24", "fd00:2::/64",
                                   "10.244.1.0/24", "10.244.2.0/24"}


async def test_a_foreign_takeover_is_left_alone_and_ours_returns_when_it_goes(
        ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(DataplaneDesired(PROTO, STATIC))
    async with watching(dp):
        sh(ns, "route", "replace", "10.1.0.0/24", "via", "192.0.2.9", "proto", "static")
        await await_for(lambda: dp.last_repair is not None and not dp.last_repair.ok, 1.0,
                        "the repair noticing the takeover")
        assert dp.last_repair is not None
        assert "EEXIST" in errors(dp.last_repair)[0][2]
        assert [(r["gateway"], r["protocol"]) for r in js(ns, "route", "show", "10.1.0.0/24")
                ] == [("192.0.2.9", "static")]
        sh(ns, "route", "del", "10.1.0.0/24", "proto", "static")
        await await_for(lambda: "10.1.0.0/24" in our_routes(ns), 1.0, "our route back")


async def test_lost_events_lead_to_a_full_resync(ns: str, dp: LinuxDataplane) -> None:
    await dp.apply(DataplaneDesired(PROTO, STATIC))
    async with watching(dp):
        before = dp._events.source
        assert isinstance(before, EventSocket)
        before.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel minimum
        many = tuple(StaticRoute("m", f"10.100.{i // 256}.{i % 256}/32", "192.0.2.2")
                     for i in range(3000))
        assert (await dp.apply(DataplaneDesired(PROTO, STATIC + many))).ok
        await await_for(lambda: dp._events.source is not before, 2.0,
                        "the event socket reopened")
        sh(ns, "route", "del", "10.2.0.0/24", "proto", str(PROTO))
        await await_for(lambda: "10.2.0.0/24" in our_routes(ns), 1.0, "repair after overflow")
    assert len(our_routes(ns)) == 3003


async def test_restarted_agent_adopts_and_changes_nothing(ns: str) -> None:
    first = LinuxDataplane(CFG, RecordingFeedback(), netns=ns)
    await first.start()
    assert (await first.apply(FULL)).ok
    await first.close()  # stopping leaves everything in place
    assert len(our_routes(ns)) == 5 and len(fdb(ns)) == 2
    second = LinuxDataplane(CFG, RecordingFeedback(), netns=ns)
    try:
        with kernel_events(ns) as events:
            await second.start()
            result = await second.apply(FULL)
        assert result.ok and result.changes == 0, result
        assert events == [], "the restarted agent rewrote what was already right"
        assert second.observed_counts()["fdb_entries"] == 2
    finally:
        await second.close()


async def test_partial_failure_is_reported_and_the_rest_applied(ns: str,
                                                                dp: LinuxDataplane) -> None:
    bad = StaticRoute("far", "10.9.0.0/24", "203.0.113.9")  # no route to the next hop
    result = await dp.apply(DataplaneDesired(PROTO, (*STATIC, bad), VTEP, (PEER1,)))
    assert not result.ok and result.action == "partial"
    assert [(t, o) for t, o, _ in errors(result)] == [("routes", "10.9.0.0/24 via 203.0.113.9")]
    assert "ENETUNREACH" in errors(result)[0][2]
    assert result.error and "10.9.0.0/24" in result.error
    assert set(our_routes(ns)) == {"10.1.0.0/24", "10.2.0.0/24", "fd00:2::/64", "10.244.1.0/24"}
    # the failed route stays pending: it is installed once its next hop becomes reachable
    sh(ns, "addr", "add", "203.0.113.1/24", "dev", "v0")
    retry = await dp.apply(DataplaneDesired(PROTO, (*STATIC, bad), VTEP, (PEER1,)))
    assert retry.ok and retry.counts["routes"].added == 1, retry


async def test_an_overlay_peer_failing_midway_is_undone(ns: str, dp: LinuxDataplane) -> None:
    # An IPv6 public IP on an IPv4 VTEP makes the FDB step fail (EAFNOSUPPORT; plan() would
    # refuse it, this forces the failure): the neighbour written before it is taken back
    # (flannel's undo), the route is never written, and the other peer is unaffected.
    broken = VxlanPeer("n3", "10.244.3.0/24", "10.244.3.0", "aa:bb:cc:00:00:03", "2001:db8::99")
    result = await dp.apply(DataplaneDesired(PROTO, (), VTEP, (PEER1, broken)))
    assert [(t, o.split()[0]) for t, o, _ in errors(result)] == [("fdb", "aa:bb:cc:00:00:03")]
    assert permanent_neighbours(ns, "flannel.1") == {"10.244.1.0": PEER1.vtep_mac}
    assert set(fdb(ns)) == {PEER1.vtep_mac}
    assert set(our_routes(ns)) == {"10.244.1.0/24"}
    assert result.counts["neighbors"].added == 1


async def test_a_device_of_the_vtep_name_that_is_not_vxlan_is_left_alone(ns: str) -> None:
    sh(ns, "link", "add", "flannel.1", "type", "veth", "peer", "name", "other0")
    plane = LinuxDataplane(CFG, RecordingFeedback(), netns=ns)
    await plane.start()
    try:
        result = await plane.apply(DataplaneDesired(PROTO, STATIC[:1], VTEP, (PEER1,)))
        assert not result.ok
        assert {t for t, _, _ in errors(result)} == {"links", "neighbors"}
        assert "10.1.0.0/24" in our_routes(ns)  # the rest still applied
        removed = await plane.apply(DataplaneDesired(PROTO))
        assert removed.counts["links"].removed == 0
        assert js(ns, "-d", "link", "show", "flannel.1")[0]["linkinfo"]["info_kind"] == "veth"
    finally:
        await plane.close()


async def test_a_missing_namespace_is_an_error_not_a_new_namespace() -> None:
    name = f"kfn-dp-absent-{secrets.token_hex(3)}"
    plane = LinuxDataplane(CFG, RecordingFeedback(), netns=name)
    with pytest.raises(StartupError) as raised:
        await plane.start()
    assert isinstance(raised.value.__cause__, OSError), raised.value.__cause__
    assert name in str(raised.value)
    await plane.close()
    assert name not in sh_netns_list()
