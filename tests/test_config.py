from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.config import ConfigError, config_warnings, load_config, parse_config

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


def test_every_headroom_resource_may_be_overridden_nexthop_groups_too() -> None:
    cfg = parse_config(_with("headroom", capacity={"nexthop_groups": 1024, "nexthops": 8}))
    assert cfg.headroom.capacity == {"nexthop_groups": 1024, "nexthops": 8}


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


def test_vip_ecmp_width_defaults_to_16_and_stays_within_1_to_64() -> None:
    assert parse_config(BASE).fabric.vip_ecmp_width == 16
    assert parse_config(_with("fabric", vip_ecmp_width=64)).fabric.vip_ecmp_width == 64
    assert parse_config(_with("fabric", vip_ecmp_width=1)).fabric.vip_ecmp_width == 1
    for bad in (0, 65, -1, "wide", True, 16.5):
        problems = _problems(_with("fabric", vip_ecmp_width=bad))
        assert [p.split(":")[0] for p in problems] == ["fabric.vip_ecmp_width"], (bad, problems)


# ---- warnings: valid, but unsafe ----

QUIET = {**BASE, "fabric": {**BASE["fabric"], "node_networks": ["10.0.0.0/16"]}}


def _write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_safe_configuration_has_no_warnings(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "config.yaml", yaml.safe_dump(QUIET), 0o644)
    assert config_warnings(load_config(cfg)) == []


@pytest.mark.parametrize(("listen", "warned"), [
    ("127.0.0.1:9469", False),
    ("[::1]:9469", False),
    ("localhost:9469", False),
    ("0.0.0.0:9469", True),
    ("[::]:9469", True),
    ("10.0.0.1:9469", True),
    ("leaf1.example.net:9469", True),  # a name may resolve to anything
])
def test_metrics_on_a_non_loopback_address_is_warned(listen: str, warned: bool) -> None:
    cfg = parse_config({**QUIET, "status": {"metrics_listen": listen}})
    warnings = config_warnings(cfg)
    assert bool(warnings) == warned, warnings
    if warned:
        assert warnings == [f"status.metrics_listen {listen} is not a loopback address: /metrics "
                            "names every node behind this leaf and is served to anyone who can "
                            "reach it, without TLS or authentication; listen on 127.0.0.1 or "
                            "::1, or firewall the port"]


def test_credential_files_open_to_everyone_are_warned(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    _write(creds / "ca.crt", "ca", 0o644)            # public: readable is fine
    _write(creds / "client.crt", "cert", 0o646)      # public, but world-writable
    _write(creds / "client.key", "key", 0o604)       # secret and world-readable
    _write(creds / "token", "token", 0o600)          # as it should be
    kubeconfig = _write(creds / "kubeconfig", yaml.safe_dump({
        "current-context": "leaf",
        "contexts": [{"name": "other", "context": {"cluster": "x", "user": "x"}},
                     {"name": "leaf", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.9:6443",
                                                 "certificate-authority": "ca.crt"}}],
        "users": [{"name": "x", "user": {"client-key": "/nonexistent/other.key"}},
                  {"name": "u", "user": {"client-certificate": "client.crt",
                                         "client-key": str(creds / "client.key"),
                                         "tokenFile": "token"}}],
    }), 0o644)                                       # may hold tokens inline: readable is not
    tls_key = _write(tmp_path / "status.key", "key", 0o640)
    tls_ca = _write(tmp_path / "status-ca.crt", "ca", 0o666)
    data = {**QUIET, "kubernetes": {"kubeconfig": str(kubeconfig)},
            "status": {"listen": "0.0.0.0:50051", "tls_cert": str(tls_ca),
                       "tls_key": str(tls_key), "tls_client_ca": str(tls_ca)}}
    cfg = _write(tmp_path / "config.yaml", yaml.safe_dump(data), 0o666)

    loaded = load_config(cfg)
    # SONiC's start-up fills the switch section with model_copy: the file is still known.
    assert config_warnings(loaded) == config_warnings(loaded.model_copy(update={}))
    assert config_warnings(loaded) == [
        f"the configuration file {cfg} is world-writable (mode 0666): any local user can "
        f"change what the agent trusts; chmod o-w {cfg}",
        f"kubernetes.kubeconfig {kubeconfig} is world-readable (mode 0644) and holds "
        f"credentials; chmod o-r {kubeconfig}",
        f"kubeconfig client-certificate {creds / 'client.crt'} is world-writable (mode 0646): "
        f"any local user can change what the agent trusts; chmod o-w {creds / 'client.crt'}",
        f"kubeconfig client-key {creds / 'client.key'} is world-readable (mode 0604) and holds "
        f"credentials; chmod o-r {creds / 'client.key'}",
        f"status.tls_cert {tls_ca} is world-writable (mode 0666): any local user can change "
        f"what the agent trusts; chmod o-w {tls_ca}",
        f"status.tls_client_ca {tls_ca} is world-writable (mode 0666): any local user can "
        f"change what the agent trusts; chmod o-w {tls_ca}",
    ]
    # The same configuration from a dict: no file of its own to judge.
    assert not any("configuration file" in w for w in config_warnings(parse_config(data)))


def test_check_config_warns_about_a_world_writable_file_and_still_exits_0(
        tmp_path: Path) -> None:
    # The contract: exit 0 on a valid file. A refusal in ExecStartPre would also stop the
    # agent over a chmod; the warning goes to stderr and to the journal at every start.
    cfg = _write(tmp_path / "config.yaml", yaml.safe_dump(QUIET), 0o666)
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config", str(cfg)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr == (f"warning: the configuration file {cfg} is world-writable (mode "
                          f"0666): any local user can change what the agent trusts; "
                          f"chmod o-w {cfg}\n")
