from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config, parse_config

BASE = {
    "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
    "fabric": {"server_ports": ["swp1", "swp2"], "uplinks": ["swp51"],
               "pod_supernets": ["10.244.0.0/16"]},
}


def _problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.problems


def _with(section: str, **values: object) -> dict:
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(section, {}).update(values)
    return data


def test_contract_example_is_valid() -> None:
    cfg = load_config(Path(__file__).parent.parent / "examples" / "config.yaml")
    assert cfg.switch.asn == 65101
    assert cfg.fabric.attachments == {"swp1": "node-a"}
    assert cfg.headroom.capacity["remote_vteps"] == 128
    assert cfg.frr.pathspace == ""


def test_defaults() -> None:
    cfg = parse_config(BASE)
    assert cfg.dataplane.backend == "linux"
    assert cfg.frr.config_file == "/etc/frr/frr.conf"
    assert cfg.frr.debounce_ms < 3000  # well under MetalLB's 3 s
    assert cfg.status.socket == "/run/kube-fabric-agent/agent.sock"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_with("fabric", server_ports=["swp1", "swp2", "bad port"]), "fabric.server_ports[2]:"),
        (_with("switch", asn=0), "switch.asn:"),
        (_with("switch", asn=4294967296), "switch.asn:"),
        (_with("switch", asn=23456), "switch.asn:"),
        (_with("switch", asn=True), "switch.asn:"),
        (_with("switch", router_id="10.0.0.256"), "switch.router_id:"),
        (_with("switch", router_id="fd00::1"), "switch.router_id:"),
        (_with("fabric", pod_supernets=["10.244.0.1/16"]), "fabric.pod_supernets[0]:"),
        (_with("fabric", pod_supernets=[]), "fabric.pod_supernets:"),
        (_with("fabric", attachments={"swp9": "node-a"}), "fabric:"),
        (_with("fabric", attachments={"swp1": "Node_A"}), "fabric.attachments.swp1:"),
        (_with("fabric", uplinks=["swp1"]), "fabric:"),
        (_with("kubernetes", node_selector="rack=r1,(("), "kubernetes.node_selector:"),
        (_with("frr", pathspace="a b"), "frr.pathspace:"),
        (_with("dataplane", backend="vpp"), "dataplane.backend:"),
        (_with("headroom", capacity={"ipv4_routez": 1}), "headroom.capacity.ipv4_routez"),
        (_with("fabric", sever_ports=["swp1"]), "fabric.sever_ports: unknown key"),
    ],
)
def test_errors_name_the_key_path(data: dict, expected: str) -> None:
    problems = _problems(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_missing_required_keys_are_listed_each() -> None:
    problems = _problems({"switch": {"hostname": "leaf1"}})
    assert "switch.asn: required key is missing" in problems
    assert "switch.router_id: required key is missing" in problems
    assert "fabric: required key is missing" in problems


def test_overlapping_supernets_and_duplicate_ports() -> None:
    problems = _problems(_with("fabric", server_ports=["swp1", "swp1"],
                               pod_supernets=["10.0.0.0/8", "10.244.0.0/16"]))
    text = " ".join(problems)
    assert "swp1 more than once" in text
    assert "overlap" in text


def test_check_config_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("switch: {asn: 70000000000, router_id: x}\nfabric: {server_ports: [swp1]}\n")
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert any(line.startswith("switch.asn:") for line in lines)
    assert any(line.startswith("switch.router_id:") for line in lines)
    assert any(line.startswith("fabric.pod_supernets:") for line in lines)
    good = Path(__file__).parent.parent / "examples" / "config.yaml"
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(good)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr  # the example sets fabric.node_networks


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)
    f.write_text("switch: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)


def test_render_refuses_a_sonic_config_without_asn(tmp_path: Path) -> None:
    cfg = tmp_path / "sonic.yaml"
    cfg.write_text("switch: {hostname: leaf1}\nfabric: {server_ports: [Ethernet0], "
                   "pod_supernets: [10.244.0.0/16]}\ndataplane: {backend: sonic}\n")
    cluster = tmp_path / "nodes.yaml"
    cluster.write_text("items: []\n")
    ok = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(cfg)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "ASN from CONFIG_DB" in ok.stdout
    # Valid, but host routes unchecked: said on stderr, exit status still 0 (contract).
    assert "warning: fabric.node_networks is not set" in ok.stderr
    res = subprocess.run([sys.executable, "-m", "agent.cli", "render", "--config", str(cfg),
                          "--cluster", str(cluster)], capture_output=True, text=True)
    assert res.returncode == 2 and "switch.asn:" in res.stderr and res.stdout == ""


def test_service_pools_default_to_none_and_are_canonical_cidrs() -> None:
    # Contract: empty or absent, no VIP is accepted.
    assert parse_config(BASE).fabric.service_pools == []
    cfg = parse_config(_with("fabric", service_pools=["203.0.113.0/24", "2001:db8:5::/112"]))
    assert cfg.fabric.service_pools == ["203.0.113.0/24", "2001:db8:5::/112"]
    assert _problems(_with("fabric", service_pools=["203.0.113.1/24"]))[0].startswith(
        "fabric.service_pools[0]:")


@pytest.mark.parametrize(("pools", "why"), [
    (["203.0.113.0/24", "203.0.113.128/25"], "service_pools 203.0.113.0/24 and 203.0.113.128/25 "
                                             "overlap"),
    (["10.244.200.0/24"], "service_pools 10.244.200.0/24 overlaps pod_supernets 10.244.0.0/16"),
    (["169.254.0.0/24"], "overlaps link-local 169.254.0.0/16"),
    (["fe80::/64"], "overlaps link-local fe80::/10"),
    (["224.0.0.0/24"], "overlaps multicast"),
    (["0.0.0.0/0"], "overlaps loopback 127.0.0.0/8"),
])
def test_service_pools_that_cannot_hold_vips_are_refused(pools: list[str], why: str) -> None:
    problems = _problems(_with("fabric", service_pools=pools))
    assert len(problems) == 1 and problems[0].startswith("fabric:"), problems
    assert why in problems[0]
