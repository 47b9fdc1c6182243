from __future__ import annotations

import json

from agent.bgp_observer import PeerState, parse_summary, session_changes

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
