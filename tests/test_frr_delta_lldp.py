"""Parsing what frr-reload.py --test and lldpcli print (recorded outputs of FRR 8.4 and
lldpd 1.0.16 on this machine kind)."""

from __future__ import annotations

import json

from agent.apply.frr.reload import parse_delta
from agent.informers.lldp import parse_neighbors

RELOAD_TEST_OUTPUT = """\
2026-11-21 19:43:10,532  INFO: Called via "Namespace(...)"
2026-11-21 19:43:10,615  INFO: "frr version 8.4.4" cannot be removed

Lines To Delete
===============
no hostname vm
route-map KFA-NODE-swp2-IN-V4 permit 10
 no set community graceful-shutdown additive
no ip prefix-list KFA-NODE-swp1-V4 seq 10 permit 10.244.9.0/24

Lines To Add
============
router bgp 65101
 address-family ipv4 unicast
  neighbor swp1 route-map KFA-NODE-swp1-IN-V4 in
router bgp 65101
 neighbor swp4 interface remote-as external
hostname leaf1
"""

IN_SYNC_OUTPUT = """\
Lines To Delete
===============
no hostname vm

Lines To Add
============
hostname leaf1
"""


def test_parse_delta_keeps_context_and_ignores_hostname() -> None:
    delta = parse_delta(RELOAD_TEST_OUTPUT)
    assert delta.to_delete == (
        "route-map KFA-NODE-swp2-IN-V4 permit 10 > no set community graceful-shutdown additive",
        "no ip prefix-list KFA-NODE-swp1-V4 seq 10 permit 10.244.9.0/24",
    )
    assert delta.to_add == (
        "router bgp 65101 > address-family ipv4 unicast > "
        "neighbor swp1 route-map KFA-NODE-swp1-IN-V4 in",
        "router bgp 65101 > neighbor swp4 interface remote-as external",
    )
    assert not delta.empty


def test_hostname_only_delta_is_in_sync() -> None:
    assert parse_delta(IN_SYNC_OUTPUT).empty
    assert parse_delta("").empty


def _lldp(interfaces: object) -> str:
    return json.dumps({"lldp": {"interface": interfaces}})


def test_lldp_single_interface_object() -> None:
    text = _lldp({"swp1": {"via": "LLDP", "chassis": {"srv1.example.com": {"id": {
        "type": "mac", "value": "32:4e:4d:43:f4:e7"}}}, "port": {"descr": "eth1"}}})
    assert parse_neighbors(text) == {"swp1": "srv1.example.com"}


def test_lldp_list_of_interfaces_and_hostile_names() -> None:
    text = _lldp([
        {"swp1": {"chassis": {"srv1": {}}}},
        {"swp2": {"chassis": {"id": {"type": "mac", "value": "aa:bb:cc:dd:ee:ff"}}}},
        {"swp3": {"chassis": {"bad name\nrouter bgp 1": {}}}},
        {"swp4": {"chassis": {"a": {}}}},
        {"swp4": {"chassis": {"b": {}}}},
        {"bad port name!": {"chassis": {"srv9": {}}}},
    ])
    assert parse_neighbors(text) == {"swp1": "srv1"}


def test_lldp_empty_output() -> None:
    assert parse_neighbors('{"lldp": {}}') == {}
    assert parse_neighbors("{}") == {}
