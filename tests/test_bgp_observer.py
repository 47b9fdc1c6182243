from __future__ import annotations

import json
from pathlib import Path

from agent.bgp_observer import PeerState, parse_summary, session_changes
from agent.headroom_monitor import kernel_route_counts

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
    (tmp_path / "ipv6_route").write_text(
        "fe80 40 0 0 0 0 0 0 0 swp1\n0001 80 0 0 0 0 0 0 0 lo\nfd00 40 0 0 0 0 0 0 0 swp2\n")
    assert kernel_route_counts(tmp_path) == {"ipv4_routes": 2, "ipv6_routes": 2}
    assert kernel_route_counts(tmp_path / "missing") == {}
