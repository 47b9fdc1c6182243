from __future__ import annotations

import json
from pathlib import Path

from agent.apply.frr.observer import PeerState, parse_summary, session_changes
from agent.apply.linux.route_counts import kernel_route_counts

SUMMARY = {
    "ipv4Unicast": {"peers": {
        "swp1": {"state": "Established", "pfxRcd": 2, "peerUptimeMsec": 5000},
        "swp4": {"state": "Idle", "pfxRcd": 0},
        "swp51": {"state": "Established", "pfxRcd": 1, "peerUptimeMsec": 9000},
    }},
    "ipv6Unicast": {"peers": {"swp1": {"state": "Established", "pfxRcd": 1,
                                       "peerUptimeMsec": 5000}}},
}


def test_parse_summary_sums_families_and_maps_states() -> None:
    peers = parse_summary(json.dumps(SUMMARY))
    assert peers["swp1"] == PeerState("established", 3, 5000)
    assert peers["swp4"].state == "idle"
    assert parse_summary("") == {} and parse_summary("not json") == {}


def test_session_changes_up_down_and_a_flap_between_polls() -> None:
    up = PeerState("established", 2, 5000)
    assert session_changes({}, {"swp1": up}) == [("swp1", "session_up")]
    assert session_changes({"swp1": up}, {"swp1": PeerState("active", 0)}) == [
        ("swp1", "session_down")]
    later = PeerState("established", 2, 9000)
    assert session_changes({"swp1": up}, {"swp1": later}) == []
    flapped = PeerState("established", 2, 1200)  # uptime went backwards
    assert session_changes({"swp1": later}, {"swp1": flapped}) == [
        ("swp1", "session_down"), ("swp1", "session_up")]
    assert session_changes({"swp1": up}, {}) == [("swp1", "session_down")]


def test_kernel_route_counts_from_procfs(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(
        "Iface\tDestination\tGateway\nswp1\t00F40A0A\t0\nswp2\t00F40B0A\t0\n")
    # The lines of this machine's /proc/net/ipv6_route, one per kind of entry.
    z = "0" * 32
    lines = [
        f"fd000000000000000000000000000000 40 {z} 00 {z} 00000100 00000001 0 00000001 swp1",
        f"fe800000000000000000000000000000 40 {z} 00 {z} 00000100 00000002 0 00000001 swp1",
        f"{z} 00 {z} 00 fd000000000000000000000000000001 00000400 00000003 0 00000003 swp1",
        # not programmed: the loopback's own entries, multicast, a cached clone
        f"00000000000000000000000000000001 80 {z} 00 {z} 00000000 00000002 0 80200001 lo",
        f"{z} 00 {z} 00 {z} ffffffff 00000001 0 00200200 lo",
        f"ff000000000000000000000000000000 08 {z} 00 {z} 00000100 00000003 0 00000001 swp1",
        f"fd000000000000000000000000000009 80 {z} 00 {z} 00000000 00000001 0 01000003 swp1",
        # programmed as traps to the CPU: the host entries of the port's addresses
        f"fe8000000000000000fc00fffe000001 80 {z} 00 {z} 00000000 00000002 0 80200001 swp1",
        f"fd000000000000000000000000000002 80 {z} 00 {z} 00000000 00000003 0 80200001 swp1",
    ]
    (tmp_path / "ipv6_route").write_text("\n".join(lines) + "\n")
    assert kernel_route_counts(tmp_path) == {"ipv4_routes": 2, "ipv6_routes": 5}
    assert kernel_route_counts(tmp_path / "missing") == {}
