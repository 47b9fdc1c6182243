"""Unit tests for the lab harness that need no root: topology parsing and validation, the FRR
daemons file, and the topotest-style polling helpers."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import clab
from lab.clab import DEFAULT_LINK_MTU, TopologyError
from lab.frr import DaemonsFile, FrrError
from lab.topotest import json_cmp, run_and_expect, wait_until

REPO = Path(__file__).resolve().parent.parent
LAB_FILE = REPO / "containerlab" / "leaf-servers.clab.yml"


def parse(doc: str | dict[str, Any], base: Path) -> clab.Topology:
    data = yaml.safe_load(textwrap.dedent(doc)) if isinstance(doc, str) else doc
    return clab.parse(data, base_dir=base, source="test.clab.yml")


@pytest.fixture
def frr_files(tmp_path: Path) -> Path:
    for node in ("r1", "r2", "r3"):
        (tmp_path / node).mkdir()
        (tmp_path / node / "frr.conf").write_text(f"hostname {node}\n")
        (tmp_path / node / "daemons").write_text("bgpd=yes\n")
    return tmp_path


def minimal(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t",
        "topology": {
            "kinds": {"linux": {"image": "quay.io/frrouting/frr:8.4.1"}},
            "nodes": {
                "r1": {"kind": "linux", "binds": ["r1/frr.conf:/etc/frr/frr.conf"]},
                "r2": {"kind": "linux"},
            },
            "links": [{"endpoints": ["r1:eth1", "r2:eth1"]}],
        },
    }
    for key, value in overrides.items():
        target = (
            doc["topology"] if key in ("kinds", "nodes", "links", "defaults", "groups") else doc
        )
        target[key] = value
    return doc


# --- the shipped topology ------------------------------------------------------------------------


def test_shipped_topology_parses_with_the_documented_plan() -> None:
    topo = clab.load(LAB_FILE)
    assert topo.name == "kfa"
    frr_nodes = {"leaf1", "spine1", "srv1", "srv2", "srv3"}
    dataplane_nodes = {"st1", "fl1", "fl2", "host1"}  # no BGP: the agent programs the kernel
    assert set(topo.nodes) == frr_nodes | dataplane_nodes
    cabling = {(lk.a.key, lk.b.key) for lk in topo.links}
    assert cabling == {
        ("leaf1:swp1", "srv1:eth1"),
        ("leaf1:swp2", "srv2:eth1"),
        ("leaf1:swp3", "srv3:eth1"),
        ("leaf1:swp5", "st1:eth1"),
        ("leaf1:swp6", "fl1:eth1"),
        ("leaf1:swp7", "fl2:eth1"),
        ("leaf1:swp10", "host1:eth1"),
        ("leaf1:swp51", "spine1:eth1"),
    }
    assert "swp4" not in topo.interfaces_of("leaf1")  # free port, recabling target
    for node in topo.nodes.values():
        assert node.kind == "linux"
        assert node.image.startswith("quay.io/frrouting/frr:")
        assert node.runs_frr == (node.name in frr_nodes)
        if not node.runs_frr:
            continue
        assert node.frr.frr_conf is not None and node.frr.frr_conf.is_file()
        assert node.frr.daemons is not None and node.frr.daemons.is_file()
    leaf = topo.nodes["leaf1"]
    assert leaf.labels["kfa.agent"] == "fabric-agent"
    assert "sysctl -w net.ipv4.ip_forward=1" in leaf.exec
    assert "sysctl -w net.ipv6.conf.all.forwarding=1" in leaf.exec
    uplink = next(lk for lk in topo.links if lk.a.key == "leaf1:swp51")
    assert uplink.mtu == 9216 and uplink.a.mac == "02:00:00:01:00:51"
    assert all(lk.mtu == DEFAULT_LINK_MTU for lk in topo.links if lk is not uplink)
    assert any("mgmt" in note for note in topo.notes)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_shipped_server_configs_announce_their_pod_cidr_and_internal_ip(n: int) -> None:
    topo = clab.load(LAB_FILE)
    node = topo.nodes[f"srv{n}"]
    conf = node.frr.frr_conf.read_text()  # type: ignore[union-attr]
    assert f"router bgp 6520{n}\n" in conf
    assert f"bgp router-id 192.168.10.{n}\n" in conf
    assert "neighbor eth1 interface remote-as external" in conf
    assert f"ip route 10.244.{n}.0/24 blackhole" in conf
    assert f"network 10.244.{n}.0/24" in conf
    assert f"network 192.168.10.{n}/32" in conf
    assert f"ip addr add 192.168.10.{n}/32 dev lo" in node.exec
    assert f"ip addr add 10.244.{n}.10/32 dev lo" in node.exec
    assert node.group == "servers"
    # group exec comes after defaults and before the node's own (containerlab's order)
    assert node.exec.index("ip link set dev eth1 up") < node.exec.index(
        f"ip addr add 192.168.10.{n}/32 dev lo"
    )


def test_srv1_announces_prefixes_it_does_not_own() -> None:
    conf = clab.load(LAB_FILE).nodes["srv1"].frr.frr_conf.read_text()  # type: ignore[union-attr]
    for prefix in ("10.99.0.0/24", "10.244.2.0/24", "10.244.2.128/25"):
        assert f"network {prefix}" in conf
        assert f"ip route {prefix} blackhole" in conf


def test_shipped_daemons_files_start_zebra_bgpd_staticd() -> None:
    for node in clab.load(LAB_FILE).nodes.values():
        if not node.runs_frr:
            continue
        daemons = DaemonsFile.parse(node.frr.daemons.read_text())  # type: ignore[union-attr]
        assert daemons.enabled == ["zebra", "bgpd", "staticd"]
        assert daemons.profile == "datacenter"


# --- merging ---------------------------------------------------------------------------------


def test_merge_order_defaults_kind_group_node(frr_files: Path) -> None:
    topo = parse(
        """
        name: t
        topology:
          defaults:
            kind: linux
            env: {A: defaults, B: defaults, C: defaults, D: defaults}
            exec: ["echo defaults"]
            binds: ["r1/daemons:/etc/frr/daemons"]
          kinds:
            linux:
              image: quay.io/frrouting/frr:8.4.1
              env: {B: kind, C: kind, D: kind}
              exec: ["echo kind"]
              labels: {x: kind}
          groups:
            g:
              image: frrouting/frr:v8.4.0
              env: {C: group, D: group}
              exec: ["echo group"]
              binds: ["r2/frr.conf:/etc/frr/frr.conf"]
          nodes:
            r1:
              group: g
              env: {D: node}
              exec: ["echo node"]
              binds: ["r3/frr.conf:/etc/frr/frr.conf"]
              sysctls: {net.ipv4.ip_forward: 1}
            r2:
              image: quay.io/frrouting/frr:9.1.0
        """,
        frr_files,
    )
    r1 = topo.nodes["r1"]
    assert r1.kind == "linux"
    assert r1.image == "frrouting/frr:v8.4.0"  # group beats kind
    assert r1.env == {"A": "defaults", "B": "kind", "C": "group", "D": "node"}
    assert r1.exec == ["echo defaults", "echo kind", "echo group", "echo node"]
    assert r1.labels == {"x": "kind"}
    assert r1.sysctls == {"net.ipv4.ip_forward": "1"}
    # binds merge by container path; the node's frr.conf wins over the group's
    assert r1.frr.frr_conf == frr_files / "r3" / "frr.conf"
    assert r1.frr.daemons == frr_files / "r1" / "daemons"
    r2 = topo.nodes["r2"]
    assert r2.image == "quay.io/frrouting/frr:9.1.0"
    assert r2.group is None
    assert r2.exec == ["echo defaults", "echo kind"]
    assert r2.frr.frr_conf is None and r2.runs_frr  # the defaults' daemons bind


def test_kind_from_group(frr_files: Path) -> None:
    topo = parse(
        """
        name: t
        topology:
          groups:
            g: {kind: linux, image: quay.io/frrouting/frr:8.4.1}
          nodes:
            r1: {group: g}
        """,
        frr_files,
    )
    assert topo.nodes["r1"].kind == "linux"
    assert not topo.nodes["r1"].runs_frr


def test_bind_of_whole_frr_folder(frr_files: Path) -> None:
    doc = minimal(links=[])
    doc["topology"]["nodes"]["r1"]["binds"] = ["r1:/etc/frr"]
    topo = parse(doc, frr_files)
    files = topo.nodes["r1"].frr
    assert files.frr_conf == frr_files / "r1" / "frr.conf"
    assert files.daemons == frr_files / "r1" / "daemons"
    assert files.vtysh_conf is None


def test_exec_is_split_into_words_without_a_shell(frr_files: Path) -> None:
    topo = parse(
        minimal(nodes={"r1": {"kind": "linux", "exec": ["sh -c 'echo a; echo b'"]}}, links=[]),
        frr_files,
    )
    assert topo.nodes["r1"].exec_argv == [["sh", "-c", "echo a; echo b"]]


# --- links -----------------------------------------------------------------------------------


def test_extended_link_form(frr_files: Path) -> None:
    topo = parse(
        minimal(
            links=[
                {
                    "type": "veth",
                    "mtu": 1500,
                    "endpoints": [
                        {"node": "r1", "interface": "swp1", "mac": "02:AA:BB:CC:DD:01"},
                        {"node": "r2", "interface": "eth1"},
                    ],
                },
                {"endpoints": ["r1:swp2", "r2:eth2"]},
            ]
        ),
        frr_files,
    )
    first, second = topo.links
    assert first.a == clab.Endpoint("r1", "swp1", "02:aa:bb:cc:dd:01")
    assert first.b == clab.Endpoint("r2", "eth1")
    assert first.mtu == 1500
    assert second.mtu == DEFAULT_LINK_MTU == 9500
    assert first.peer("r2:eth1").key == "r1:swp1"
    assert topo.interfaces_of("r1") == ["swp1", "swp2"]


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ([{"endpoints": ["r1:eth1", "r9:eth1"]}], "unknown node 'r9'"),
        ([{"endpoints": ["r1:eth1", "host:veth0"]}], "links to 'host' are not supported"),
        ([{"endpoints": ["r1:eth1", "mgmt-net:r1-eth1"]}], "links to 'mgmt-net'"),
        (
            [{"endpoints": ["r1:eth1", "r2:eth1"]}, {"endpoints": ["r1:eth1", "r2:eth2"]}],
            "endpoint r1:eth1 is already used by links[0]",
        ),
        ([{"endpoints": ["r1:eth1", "r1:eth1"]}], "already used"),
        (
            [{"endpoints": ["r1:averyveryverylong1", "r2:eth1"]}],
            "is 18 characters; Linux allows at most 15",
        ),
        ([{"endpoints": ["r1:eth0", "r2:eth1"]}], "eth0 is containerlab's management"),
        ([{"endpoints": ["r1:eth1", "r2:eth/1"]}], "not a valid Linux name"),
        ([{"endpoints": ["r1:eth1", "r2eth1"]}], "is not 'node:interface'"),
        ([{"endpoints": ["r1:eth1"]}], "exactly two endpoints"),
        ([{"endpoints": ["r1:eth1", "r2:eth1"], "mtu": 10}], "mtu 10"),
        ([{"type": "macvlan", "endpoints": []}], "link type 'macvlan' is not supported"),
        (
            [{"type": "veth", "endpoints": [{"node": "r1"}, {"node": "r2", "interface": "e"}]}],
            "needs 'node' and 'interface'",
        ),
        (
            [
                {
                    "type": "veth",
                    "endpoints": [
                        {"node": "r1", "interface": "eth1", "mac": "01:00:5e:00:00:01"},
                        {"node": "r2", "interface": "eth1"},
                    ],
                }
            ],
            "multicast",
        ),
        (
            [
                {
                    "type": "veth",
                    "endpoints": [
                        {"node": "r1", "interface": "eth1", "mac": "zz"},
                        {"node": "r2", "interface": "eth1"},
                    ],
                }
            ],
            "is not a MAC",
        ),
        ([{"endpoints": ["r1:eth1", "r2:eth1"], "color": "red"}], "unknown link key 'color'"),
    ],
)
def test_invalid_links_are_refused(frr_files: Path, links: list[Any], message: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse(minimal(links=links), frr_files)
    assert message in str(err.value)
    assert "test.clab.yml: links[" in str(err.value)


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (
            {"r1": {"kind": "nokia_srlinux", "image": "ghcr.io/nokia/srlinux"}},
            "kind 'nokia_srlinux'",
        ),
        ({"r1": {"kind": "sonic-vs", "image": "x"}}, "kind 'sonic-vs' is not supported"),
        ({"r1": {"kind": "linux", "image": "alpine:3"}}, "is not an FRR image"),
        ({"r1": {"kind": "linux", "image": "ghcr.io/x/frr-not:1"}}, None),
        ({"r1": {"kind": "linux", "cmd": "bash run.sh"}}, "'cmd' is not supported"),
        ({"r1": {"kind": "linux", "network-mode": "host"}}, "'network-mode' is not supported"),
        ({"r1": {"kind": "linux", "startup-config": "x.cfg"}}, "'startup-config'"),
        ({"r1": {"kind": "linux", "binds": ["r1/frr.conf:/root/x"]}}, "bind to '/root/x'"),
        ({"r1": {"kind": "linux", "binds": ["nope.conf:/etc/frr/frr.conf"]}}, "does not exist"),
        ({"r1": {"kind": "linux", "binds": ["just-a-path"]}}, "is not 'src:dst[:mode]'"),
        ({"r1": {"kind": "linux", "sysctls": {"kernel.pid_max": 1}}}, "not per network"),
        ({"r1": {"image": "quay.io/frrouting/frr:8.4.1"}}, "no kind"),
        ({"r.1": {"kind": "linux"}}, "node names may only hold"),
        ({"r1": {"kind": "linux", "exec": ["echo 'unterminated"]}}, "cannot be split"),
    ],
)
def test_unsupported_nodes_are_refused(
    frr_files: Path, nodes: dict[str, Any], message: str | None
) -> None:
    doc = minimal(nodes=nodes, links=[])
    if message is None:  # an image whose repository path names frr is accepted
        parse(doc, frr_files)
        return
    with pytest.raises(TopologyError) as err:
        parse(doc, frr_files)
    assert message in str(err.value)


def test_unused_kind_sections_are_not_checked(frr_files: Path) -> None:
    doc = minimal(links=[])
    doc["topology"]["kinds"]["nokia_srlinux"] = {"license": "x.key", "type": "ixrd2"}
    parse(doc, frr_files)


def test_runtime_only_settings_are_noted_not_refused(frr_files: Path) -> None:
    doc = minimal(links=[])
    doc["mgmt"] = {"network": "m", "ipv4-subnet": "172.20.20.0/24"}
    doc["prefix"] = "clab"
    doc["topology"]["nodes"]["r1"]["mgmt-ipv4"] = "172.20.20.2"
    doc["topology"]["nodes"]["r1"]["cap-add"] = ["NET_ADMIN"]
    topo = parse(doc, frr_files)
    assert topo.mgmt == {"network": "m", "ipv4-subnet": "172.20.20.0/24"}
    text = "\n".join(topo.notes)
    assert "mgmt" in text and "'mgmt-ipv4' ignored" in text and "'cap-add' ignored" in text
    assert "prefix" in text


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"topology": {"nodes": {}}}, "'name' is required"),
        ({"name": "a.b", "topology": {"nodes": {}}}, "lab name"),
        ({"name": "t", "topology": {"nodes": {}}}, "topology.nodes is empty"),
        ({"name": "t"}, "topology: expected a mapping"),
        ({"name": "t", "topology": {"nodes": {"r": {}}}, "debug": True}, "top-level key 'debug'"),
        ({"name": "t", "topology": {"nodes": {"r": {}}, "extra": 1}}, "unknown key 'extra'"),
        (
            {
                "name": "t",
                "topology": {"nodes": {"r": {"kind": "linux", "image": "frr"}}, "links": {}},
            },
            "links must be a list",
        ),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_documents(frr_files: Path, doc: Any, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse(doc, frr_files)
    assert message in str(err.value)


def test_load_reports_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.clab.yml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        clab.load(bad)
    with pytest.raises(TopologyError, match="cannot read"):
        clab.load(tmp_path / "missing.clab.yml")


@pytest.mark.parametrize(
    ("image", "frr"),
    [
        ("quay.io/frrouting/frr:8.4.1", True),
        ("frrouting/frr", True),
        ("docker.io/frrouting/frr:v8.4.0@sha256:abcd", True),
        ("registry:5000/mirror/frr:9", True),
        ("alpine:3.19", False),
        ("ghcr.io/srl-labs/network-multitool", False),
        ("registry.frr.example:5000/alpine", False),
    ],
)
def test_is_frr_image(image: str, frr: bool) -> None:
    assert clab.is_frr_image(image) is frr


# --- FRR daemons file ------------------------------------------------------------------------


def test_daemons_file_order_options_and_profile() -> None:
    parsed = DaemonsFile.parse(
        textwrap.dedent(
            """
            # comment
            staticd=no
            bfdd=yes
            bgpd=yes
            ospfd=no
            vtysh_enable=yes
            frr_profile="traditional"
            zebra_options="  -A 127.0.0.1 -s 90000000"
            bgpd_options="   -A 127.0.0.1" # trailing comment
            """
        )
    )
    # zebra and staticd always run (frrcommon.sh); FRR's order, not the file's
    assert parsed.enabled == ["zebra", "bgpd", "staticd", "bfdd"]
    assert parsed.options["zebra"] == ["-A", "127.0.0.1", "-s", "90000000"]
    assert parsed.options["bgpd"] == ["-A", "127.0.0.1"]
    assert parsed.options["bfdd"] == []
    assert parsed.profile == "traditional"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("if true; then bgpd=yes; fi\n", "not a 'name=value' line"),
        ("bgpd=yes\nfoobard=yes\n", "unknown daemons enabled: foobard"),
        ('bgpd_options="-A\n', "cannot parse"),
    ],
)
def test_daemons_file_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(FrrError, match=message):
        DaemonsFile.parse(text)


# --- topotest helpers ----------------------------------------------------------------------------


def test_json_cmp_subset_absent_and_wildcard() -> None:
    out = {"peers": {"swp1": {"state": "Established", "pfxRcd": 2}}, "as": 65101}
    assert json_cmp(out, {"peers": {"swp1": {"state": "Established"}}}) is None
    assert json_cmp(out, {"peers": {"swp2": None}}) is None
    assert json_cmp(out, {"as": "*"}) is None
    diff = json_cmp(out, {"peers": {"swp1": {"state": "Idle"}, "swp3": {}}, "as": None})
    assert diff is not None
    assert "$.peers.swp1.state: expected 'Idle', got 'Established'" in diff
    assert "$.peers.swp3: missing" in diff
    assert "$.as: expected absent, got 65101" in diff


def test_json_cmp_lists() -> None:
    out = [{"ip": "a", "x": 1}, {"ip": "b"}, {"ip": "c"}]
    assert json_cmp(out, [{"ip": "c"}, {"ip": "a"}]) is None  # any order by default
    assert json_cmp(out, ["__ordered__", {"ip": "a"}, {"ip": "c"}]) is None
    assert json_cmp(out, ["__ordered__", {"ip": "c"}, {"ip": "a"}]) is not None
    assert json_cmp(out, [{"ip": "a"}, {"ip": "a"}]) is not None  # distinct elements
    assert "at least 4 elements" in (json_cmp(out, [{}, {}, {}, {}]) or "")
    assert json_cmp({"l": 1}, {"l": [1]}) == "$.l: expected a list, got 1"
    assert json_cmp([], {"a": 1}) == "$: expected an object, got []"


def test_run_and_expect_polls_until_match() -> None:
    values = iter(
        [{"state": "Connect"}, RuntimeError("vtysh: daemon restarting"), {"state": "Established"}]
    )

    def func() -> Any:
        value = next(values)
        if isinstance(value, Exception):
            raise value
        return value

    assert run_and_expect(func, {"state": "Established"}, timeout=5, interval=0.001) == {
        "state": "Established"
    }


def test_run_and_expect_reports_last_difference() -> None:
    with pytest.raises(AssertionError) as err:
        run_and_expect(lambda: {"state": "Active"}, {"state": "Established"}, 0.05, 0.01)
    assert "expected 'Established', got 'Active'" in str(err.value)
    with pytest.raises(AssertionError, match="expected 3, got 2"):
        run_and_expect(lambda: 2, 3, 0.02, 0.01)


def test_wait_until() -> None:
    calls = []

    def pred() -> int:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else 0

    assert wait_until(pred, timeout=5, desc="three calls", interval=0.001) == 3
    with pytest.raises(AssertionError, match=r"waiting for never\n.*ZeroDivisionError"):
        wait_until(lambda: 1 / 0, timeout=0.02, desc="never", interval=0.005)
