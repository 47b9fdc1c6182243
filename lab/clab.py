"""Parse and validate a containerlab topology file for the namespace harness.

The harness realizes a containerlab topology without a container runtime (see lab/netns.py), so
this module reads the same file users give to ``containerlab deploy`` and turns it into plain
dataclasses. Node settings are merged the way containerlab does it (types/topology.go):

* scalars (``kind``, ``image``, ...): node, else group, else kind, else defaults;
* ``binds``: defaults, kind, group, node, keyed by container path, the more specific wins;
* ``env``, ``labels``, ``sysctls``: maps merged defaults < kind < group < node;
* ``exec``: defaults + kind + group + node, concatenated in that order.

Anything the harness cannot reproduce faithfully (another kind, a non-FRR image, a custom command,
links to the host or the management network, binds other than FRR's files) is refused with a
:class:`TopologyError` that says what and where. Settings that only matter to a container runtime
and that nothing in a lab relies on (``mgmt``, management addresses, capabilities, published
ports) are accepted and listed in :attr:`Topology.notes` so the caller can log them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: containerlab's default MTU for veth links (links.DefaultLinkMTU).
DEFAULT_LINK_MTU = 9500
#: Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME = 15
#: The only kind the harness realizes.
SUPPORTED_KINDS = frozenset({"linux"})
#: Container paths of FRR files the harness knows how to use.
FRR_FILES = {
    "/etc/frr/frr.conf": "frr.conf",
    "/etc/frr/daemons": "daemons",
    "/etc/frr/vtysh.conf": "vtysh.conf",
}
FRR_DIR = "/etc/frr"

_TOP_KEYS = {"name", "prefix", "mgmt", "topology", "settings"}
_TOPOLOGY_KEYS = {"defaults", "kinds", "groups", "nodes", "links"}
#: Node keys the harness realizes.
_NODE_KEYS = {"kind", "image", "group", "binds", "exec", "env", "labels", "sysctls"}
#: Node keys that only matter to the container runtime or containerlab's own bookkeeping:
#: accepted, noted, not realized.
_NODE_KEYS_IGNORED = {
    "mgmt-ipv4",
    "mgmt-ipv6",
    "cap-add",
    "image-pull-policy",
    "ports",
    "memory",
    "cpu",
    "cpu-set",
    "shm-size",
    "restart-policy",
    "auto-remove",
    "startup-delay",
    "wait-for",
    "dns",
    "aliases",
}
_LINK_KEYS_BRIEF = {"endpoints", "mtu", "labels", "vars"}
_LINK_KEYS_VETH = {"type", "endpoints", "mtu", "labels", "vars"}
_ENDPOINT_KEYS = {"node", "interface", "mac", "vars"}
#: Pseudo nodes containerlab accepts in links; none of them exists here.
_SPECIAL_NODES = {"host", "mgmt-net", "macvlan", "macvtap", "bridge", "ovs-bridge", "vxlan"}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class TopologyError(ValueError):
    """The topology file is invalid, or uses something the harness cannot realize."""


@dataclass(frozen=True)
class Bind:
    """One ``src:dst[:mode]`` bind; ``src`` is resolved against the topology file's folder."""

    src: Path
    dst: str
    mode: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One end of a link: an interface of a node."""

    node: str
    iface: str
    mac: str | None = None

    @property
    def key(self) -> str:
        return f"{self.node}:{self.iface}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Link:
    """A point-to-point link, realized as a veth pair."""

    a: Endpoint
    b: Endpoint
    mtu: int = DEFAULT_LINK_MTU

    @property
    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return (self.a, self.b)

    def peer(self, key: str) -> Endpoint:
        """The far end of this link as seen from the endpoint ``node:iface``."""
        if self.a.key == key:
            return self.b
        if self.b.key == key:
            return self.a
        raise KeyError(key)

    def __str__(self) -> str:
        return f"{self.a.key} <-> {self.b.key}"


@dataclass(frozen=True)
class FrrFiles:
    """FRR files a node binds; a node with any of them runs an FRR instance."""

    frr_conf: Path | None = None
    daemons: Path | None = None
    vtysh_conf: Path | None = None


@dataclass
class Node:
    """A node with its settings merged from defaults, kind, group and node."""

    name: str
    kind: str
    image: str
    group: str | None = None
    binds: list[Bind] = field(default_factory=list)
    exec: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)

    @property
    def exec_argv(self) -> list[list[str]]:
        """``exec`` commands split into words the way containerlab does (no shell)."""
        return [shlex.split(cmd) for cmd in self.exec]

    @property
    def frr(self) -> FrrFiles:
        found: dict[str, Path] = {}
        for bind in self.binds:
            dst = bind.dst.rstrip("/")
            if dst == FRR_DIR:
                for target, attr in FRR_FILES.items():
                    candidate = bind.src / Path(target).name
                    if candidate.is_file():
                        found.setdefault(attr, candidate)
            elif dst in FRR_FILES:
                found[FRR_FILES[dst]] = bind.src
        return FrrFiles(
            frr_conf=found.get("frr.conf"),
            daemons=found.get("daemons"),
            vtysh_conf=found.get("vtysh.conf"),
        )

    @property
    def runs_frr(self) -> bool:
        files = self.frr
        return files.frr_conf is not None or files.daemons is not None


@dataclass
class Topology:
    """A parsed, validated topology file."""

    name: str
    path: Path | None
    nodes: dict[str, Node]
    links: list[Link]
    mgmt: dict[str, Any] | None = None
    clab_prefix: str | None = None
    #: Settings accepted but not realized by the harness, one human sentence each.
    notes: list[str] = field(default_factory=list)

    def links_of(self, node: str) -> list[Link]:
        return [link for link in self.links if node in (link.a.node, link.b.node)]

    def interfaces_of(self, node: str) -> list[str]:
        return [ep.iface for link in self.links for ep in link.endpoints if ep.node == node]


def load(path: str | Path) -> Topology:
    """Read and validate a containerlab topology file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read topology file: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TopologyError(f"{path}: not valid YAML: {exc}") from exc
    return parse(data, base_dir=path.resolve().parent, source=str(path), path=path.resolve())


def parse(
    data: Any,
    *,
    base_dir: str | Path,
    source: str = "<topology>",
    path: Path | None = None,
) -> Topology:
    """Validate an already-loaded topology document; bind sources resolve against ``base_dir``."""
    base = Path(base_dir)
    where = source
    top = _mapping(data, where)
    _no_unknown(top, _TOP_KEYS, where, "top-level key")
    name = top.get("name")
    if not isinstance(name, str) or not name:
        raise TopologyError(f"{where}: 'name' is required and must be a non-empty string")
    if not _NAME_RE.match(name):
        raise TopologyError(
            f"{where}: lab name {name!r} may only hold letters, digits, '-' and '_'"
        )
    notes: list[str] = []
    mgmt = top.get("mgmt")
    if mgmt is not None:
        mgmt = dict(_mapping(mgmt, f"{where}: mgmt"))
        notes.append(
            "mgmt: management network not built (containerlab-only; nothing in the lab uses it)"
        )
    clab_prefix = top.get("prefix")
    if clab_prefix is not None:
        notes.append(
            f"prefix: {clab_prefix!r} names containers only; namespaces are named <lab>-<node>"
        )
    if top.get("settings") is not None:
        notes.append("settings: containerlab runtime settings ignored")

    topo = _mapping(top.get("topology"), f"{where}: topology")
    _no_unknown(topo, _TOPOLOGY_KEYS, f"{where}: topology", "key")
    defaults = _mapping(topo.get("defaults") or {}, f"{where}: topology.defaults")
    kinds = _mapping(topo.get("kinds") or {}, f"{where}: topology.kinds")
    groups = _mapping(topo.get("groups") or {}, f"{where}: topology.groups")
    raw_nodes = _mapping(topo.get("nodes"), f"{where}: topology.nodes")
    if not raw_nodes:
        raise TopologyError(f"{where}: topology.nodes is empty")

    nodes: dict[str, Node] = {}
    for node_name, raw in raw_nodes.items():
        node_where = f"{where}: node {node_name!r}"
        if not isinstance(node_name, str) or not _NAME_RE.match(node_name):
            raise TopologyError(
                f"{node_where}: node names may only hold letters, digits, '-' and '_' "
                "(they become namespace names and FRR pathspaces, which refuse dots and slashes)"
            )
        raw = _mapping(raw or {}, node_where)
        nodes[node_name] = _merge_node(
            node_name, raw, defaults, kinds, groups, base, node_where, notes
        )

    raw_links = topo.get("links")
    links = _parse_links([] if raw_links is None else raw_links, nodes, where)
    return Topology(
        name=name,
        path=path,
        nodes=nodes,
        links=links,
        mgmt=mgmt,
        clab_prefix=clab_prefix,
        notes=list(dict.fromkeys(notes)),
    )


# --- nodes -------------------------------------------------------------------------------------


def _check_node_keys(raw: Mapping[str, Any], where: str, notes: list[str]) -> None:
    for key in raw:
        if key in _NODE_KEYS:
            continue
        if key in _NODE_KEYS_IGNORED:
            notes.append(f"{where.split(': ', 1)[-1]}: {key!r} ignored (container runtime only)")
            continue
        raise TopologyError(
            f"{where}: {key!r} is not supported by the namespace harness "
            f"(it realizes {', '.join(sorted(_NODE_KEYS))}; it would change what the lab does)"
        )


def _merge_node(
    name: str,
    raw: Mapping[str, Any],
    defaults: Mapping[str, Any],
    kinds: Mapping[str, Any],
    groups: Mapping[str, Any],
    base: Path,
    where: str,
    notes: list[str],
) -> Node:
    # Kind: node, else the node's group, else the defaults' group, else defaults.
    kind = raw.get("kind")
    if not kind and raw.get("group") in groups:
        kind = (groups[raw["group"]] or {}).get("kind")
    if not kind and defaults.get("group") in groups:
        kind = (groups[defaults["group"]] or {}).get("kind")
    if not kind:
        kind = defaults.get("kind")
    if not kind:
        raise TopologyError(f"{where}: no kind (set it on the node, its group or defaults)")
    if not isinstance(kind, str) or kind not in SUPPORTED_KINDS:
        raise TopologyError(
            f"{where}: kind {kind!r} is not supported by the namespace harness "
            f"(supported: {', '.join(sorted(SUPPORTED_KINDS))})"
        )
    kind_def = _mapping(kinds.get(kind) or {}, f"{where}: kind {kind!r}")
    group = raw.get("group") or kind_def.get("group") or defaults.get("group")
    if group is not None and not isinstance(group, str):
        raise TopologyError(f"{where}: group must be a string")
    group_def = _mapping(groups.get(group) or {}, f"{where}: group {group!r}") if group else {}
    levels = (defaults, kind_def, group_def, raw)
    top = where.split(": ", 1)[0]
    for label, level in zip(
        (f"{top}: topology.defaults", f"{top}: kind {kind!r}", f"{top}: group {group!r}", where),
        levels,
        strict=True,
    ):
        _check_node_keys(level, label, notes)

    image = None
    for level in reversed(levels):
        if level.get("image"):
            image = level["image"]
            break
    if not isinstance(image, str) or not image:
        raise TopologyError(f"{where}: kind {kind!r} needs an image")
    if not is_frr_image(image):
        raise TopologyError(
            f"{where}: image {image!r} is not an FRR image; the harness runs the host's FRR "
            "and host tools in a namespace, which only stands in for FRR-like Linux images"
        )

    binds: dict[str, Bind] = {}
    for level in levels:
        for item in _str_list(level.get("binds"), f"{where}: binds"):
            bind = _parse_bind(item, base, where)
            binds[bind.dst.rstrip("/") or "/"] = bind
    for bind in binds.values():
        _check_bind(bind, where)

    exec_cmds: list[str] = []
    for level in levels:
        exec_cmds.extend(_str_list(level.get("exec"), f"{where}: exec"))
    for cmd in exec_cmds:
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise TopologyError(f"{where}: exec {cmd!r} cannot be split into words: {exc}") from exc
        if not argv:
            raise TopologyError(f"{where}: empty exec command")

    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    sysctls: dict[str, str] = {}
    for level in levels:
        env.update(_str_map(level.get("env"), f"{where}: env"))
        labels.update(_str_map(level.get("labels"), f"{where}: labels"))
        sysctls.update(_str_map(level.get("sysctls"), f"{where}: sysctls"))
    for key in sysctls:
        if not key.startswith("net."):
            raise TopologyError(
                f"{where}: sysctl {key!r} is not per network namespace; the harness would "
                "change it for the whole machine"
            )

    return Node(
        name=name,
        kind=kind,
        image=image,
        group=group,
        binds=list(binds.values()),
        exec=exec_cmds,
        env=env,
        labels=labels,
        sysctls=sysctls,
    )


def is_frr_image(image: str) -> bool:
    """True for FRR images such as ``quay.io/frrouting/frr:8.4.1`` or ``frrouting/frr``."""
    parts = image.split("@", 1)[0].lower().split("/")
    parts[-1] = parts[-1].split(":", 1)[0]  # drop the tag (not a registry's port)
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # drop the registry host
    return any("frr" in part for part in parts)


def _parse_bind(item: str, base: Path, where: str) -> Bind:
    parts = item.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise TopologyError(f"{where}: bind {item!r} is not 'src:dst[:mode]'")
    src = Path(parts[0]).expanduser()
    if not src.is_absolute():
        src = base / src
    return Bind(src=src, dst=parts[1], mode=parts[2] if len(parts) == 3 else None)


def _check_bind(bind: Bind, where: str) -> None:
    dst = bind.dst.rstrip("/")
    if dst == FRR_DIR:
        if not bind.src.is_dir():
            raise TopologyError(f"{where}: bind source {bind.src} for {bind.dst} is not a folder")
        return
    if dst not in FRR_FILES:
        raise TopologyError(
            f"{where}: bind to {bind.dst!r} is not supported by the namespace harness "
            f"(it uses only {', '.join(sorted(FRR_FILES))} or the whole {FRR_DIR})"
        )
    if not bind.src.is_file():
        raise TopologyError(f"{where}: bind source {bind.src} (for {bind.dst}) does not exist")


# --- links -------------------------------------------------------------------------------------


def _parse_links(raw_links: Any, nodes: Mapping[str, Node], where: str) -> list[Link]:
    if not isinstance(raw_links, list):
        raise TopologyError(f"{where}: topology.links must be a list")
    links: list[Link] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_links):
        link_where = f"{where}: links[{index}]"
        raw = _mapping(raw, link_where)
        link_type = raw.get("type")
        if link_type is None:
            _no_unknown(raw, _LINK_KEYS_BRIEF, link_where, "link key")
            eps = raw.get("endpoints")
            if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
                raise TopologyError(
                    f"{link_where}: endpoints must be a list of 'node:interface' strings"
                )
            endpoints = [_parse_brief_endpoint(e, link_where) for e in eps]
        elif link_type == "veth":
            _no_unknown(raw, _LINK_KEYS_VETH, link_where, "link key")
            eps = raw.get("endpoints")
            if not isinstance(eps, list):
                raise TopologyError(f"{link_where}: endpoints must be a list")
            endpoints = [_parse_extended_endpoint(e, link_where) for e in eps]
        else:
            raise TopologyError(
                f"{link_where}: link type {link_type!r} is not supported by the namespace "
                "harness (only veth links between nodes)"
            )
        if len(endpoints) != 2:
            raise TopologyError(f"{link_where}: a link has exactly two endpoints")
        mtu = raw.get("mtu", DEFAULT_LINK_MTU)
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise TopologyError(f"{link_where}: mtu {mtu!r} is not an integer in 68..65535")
        for ep in endpoints:
            _check_endpoint(ep, nodes, link_where)
            if ep.key in seen:
                raise TopologyError(
                    f"{link_where}: endpoint {ep.key} is already used by links[{seen[ep.key]}]"
                )
            seen[ep.key] = index
        links.append(Link(a=endpoints[0], b=endpoints[1], mtu=mtu))
    return links


def _parse_brief_endpoint(text: str, where: str) -> Endpoint:
    node, sep, iface = text.partition(":")
    if not sep or not node or not iface:
        raise TopologyError(f"{where}: endpoint {text!r} is not 'node:interface'")
    return Endpoint(node=node, iface=iface)


def _parse_extended_endpoint(raw: Any, where: str) -> Endpoint:
    raw = _mapping(raw, f"{where}: endpoint")
    _no_unknown(raw, _ENDPOINT_KEYS, f"{where}: endpoint", "endpoint key")
    node, iface, mac = raw.get("node"), raw.get("interface"), raw.get("mac")
    if not isinstance(node, str) or not node or not isinstance(iface, str) or not iface:
        raise TopologyError(f"{where}: endpoint {dict(raw)!r} needs 'node' and 'interface'")
    if mac is not None:
        if not isinstance(mac, str) or not _MAC_RE.match(mac):
            raise TopologyError(f"{where}: endpoint {node}:{iface} mac {mac!r} is not a MAC")
        if int(mac[:2], 16) & 1:
            raise TopologyError(f"{where}: endpoint {node}:{iface} mac {mac} is multicast")
        mac = mac.lower()
    return Endpoint(node=node, iface=iface, mac=mac)


def check_ifname(iface: str, where: str) -> None:
    """Refuse interface names Linux (or a data link in containerlab) would not accept."""
    if len(iface) > MAX_IFNAME:
        raise TopologyError(
            f"{where}: interface name {iface!r} is {len(iface)} characters; Linux allows "
            f"at most {MAX_IFNAME}"
        )
    if not _IFNAME_RE.match(iface) or iface in (".", ".."):
        raise TopologyError(f"{where}: interface name {iface!r} is not a valid Linux name")
    if iface == "lo":
        raise TopologyError(f"{where}: 'lo' cannot be a link endpoint")
    if iface == "eth0":
        raise TopologyError(
            f"{where}: eth0 is containerlab's management interface; data links use eth1 and up"
        )


def _check_endpoint(ep: Endpoint, nodes: Mapping[str, Node], where: str) -> None:
    if ep.node not in nodes:
        if ep.node in _SPECIAL_NODES:
            raise TopologyError(
                f"{where}: endpoint {ep.key}: links to {ep.node!r} are not supported by the "
                "namespace harness (only links between nodes)"
            )
        raise TopologyError(f"{where}: endpoint {ep.key} names unknown node {ep.node!r}")
    check_ifname(ep.iface, f"{where}: endpoint {ep.key}")


# --- helpers -----------------------------------------------------------------------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(str(k) for k in raw if k not in allowed)
    if unknown:
        raise TopologyError(
            f"{where}: unknown {what}{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TopologyError(f"{where}: expected a list of strings")
    return list(value)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TopologyError(f"{where}: expected a mapping")
    out: dict[str, str] = {}
    for key, val in value.items():
        if isinstance(val, (dict, list)) or val is None:
            raise TopologyError(f"{where}: value of {key!r} must be a scalar")
        out[str(key)] = _scalar(val)
    return out


def _scalar(val: Any) -> str:
    if isinstance(val, bool):
        return "true" if val else "false"
    return str(val)
