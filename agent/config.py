"""The agent's configuration file (YAML), validated with every error naming its key path.

The contract's keys (README, "Configuration reference") are accepted by every version; the rest
are extensions with defaults. Unknown keys are errors: a typo in a production config must not be
silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from agent import validate
from agent.vocabulary import Resource

IfName = Annotated[str, AfterValidator(validate.interface_name)]
NodeName = Annotated[str, AfterValidator(validate.node_name)]
Asn = Annotated[int, BeforeValidator(validate.asn)]
Cidr = Annotated[str, AfterValidator(lambda v: str(validate.cidr(v)))]
Selector = Annotated[str, AfterValidator(validate.label_selector)]


def ipv4_address(value: object) -> str:
    """A usable unicast IPv4 address (router id, VTEP source); also applied to what CONFIG_DB
    supplies on SONiC (agent.apply.sonic.startup), which is input like the file."""
    addr = validate.ip_address(value)
    if addr.version != 4:
        raise ValueError(f"{value} is not an IPv4 address")
    return str(addr)


IPv4 = Annotated[str, BeforeValidator(ipv4_address)]
RoutingMode = Literal["bgp", "static", "vxlan"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SwitchConfig(_Strict):
    hostname: Annotated[str, AfterValidator(validate.hostname)] = Field(
        default_factory=lambda: socket.gethostname()
    )
    # Required unless dataplane.backend is sonic (AgentConfig checks, naming the key): there
    # CONFIG_DB DEVICE_METADATA and Loopback0 supply what the file leaves out at start-up
    # (agent.apply.sonic.startup.fill_from_config_db), so the operator does not type them twice.
    # hostname has gethostname() as its default; on sonic CONFIG_DB's hostname replaces that
    # default (never a hostname the file gives).
    asn: Asn | None = None
    router_id: IPv4 | None = None
    vtep_ip: IPv4 | None = None


class KubernetesConfig(_Strict):
    kubeconfig: str | None = None
    node_selector: Selector = ""
    # Server-side watch timeout; each watch picks a random value between this and twice this,
    # as client-go's reflector does, so a fleet of leaves does not reconnect in lockstep.
    watch_timeout_seconds: int = Field(300, ge=5, le=3600)
    # Watch the Pods of the attached nodes (one field-selected watch per node) for locate.
    watch_pods: bool = True


# Where no Service VIP can be: a pool overlapping one of these would let a node announce an
# address the fabric cannot route (or must not, like 0.0.0.0/0 containing everything).
_NOT_VIPS = tuple((ipaddress.ip_network(net), what) for net, what in (
    ("0.0.0.0/8", "this-network"), ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"), ("255.255.255.255/32", "broadcast"),
    ("::/127", "unspecified/loopback"), ("fe80::/10", "link-local"), ("ff00::/8", "multicast"),
))


def _overlaps(key: str, nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    return [f"{key} {a} and {b} overlap" for i, a in enumerate(nets) for b in nets[i + 1 :]
            if a.version == b.version and a.overlaps(b)]


class FabricConfig(_Strict):
    server_ports: list[IfName] = Field(min_length=1)
    uplinks: list[IfName] = Field(default_factory=list)
    attachments: dict[IfName, NodeName] = Field(default_factory=dict)
    lldp: bool = False
    lldp_socket: str | None = None  # lldpd's control socket; None = lldpcli's default
    lldp_poll_seconds: float = Field(10.0, ge=0.5, le=3600.0)
    pod_supernets: list[Cidr] = Field(min_length=1)
    # Where nodes' InternalIPs must lie: a kubelet may rewrite its own Node's addresses, and an
    # InternalIP is announced upstream as a host route. None (absent): unchecked, said loudly.
    node_networks: list[Cidr] | None = None
    # Where Service VIPs (LoadBalancer ingress IPs, externalIPs) may come from; empty: none is
    # accepted. Also never a node's host route: a node claiming a VIP as its InternalIP would
    # draw the VIP's traffic to itself alone.
    service_pools: list[Cidr] = Field(default_factory=list)
    # How many nodes one VIP is spread over at the leaf (BGP `maximum-paths`, with as-path
    # multipath-relax since every node has its own ASN). Rendered only with service_pools set.
    # 64 at most: every FRR build takes it (their limit is compile-time, 64 or more), and an
    # ASIC's ECMP group is rarely wider.
    vip_ecmp_width: int = Field(16, ge=1, le=64, strict=True)  # strict: `true` is no width
    default_routing: RoutingMode = "bgp"
    # Upper bound on prefixes one node may send, counted before the prefix list ("force"), so a
    # node leaking a full table costs the leaf a session reset rather than its memory.
    max_prefixes_per_node: int = Field(100, ge=1, le=100000)
    max_prefix_restart_minutes: int = Field(5, ge=1, le=30000)
    aggregate_to_supernets: bool = False
    advertise_node_ips: bool = True

    @model_validator(mode="after")
    def _ports_consistent(self) -> FabricConfig:
        problems = []
        for name, ports in (("server_ports", self.server_ports), ("uplinks", self.uplinks)):
            dupes = sorted({p for p in ports if ports.count(p) > 1})
            if dupes:
                problems.append(f"{name} lists {', '.join(dupes)} more than once")
        both = sorted(set(self.server_ports) & set(self.uplinks))
        if both:
            problems.append(f"{', '.join(both)} is both a server port and an uplink")
        for port in self.attachments:
            if port not in self.server_ports:
                problems.append(f"attachments names {port}, which is not in server_ports")
        nodes = list(self.attachments.values())
        dup_nodes = sorted({n for n in nodes if nodes.count(n) > 1})
        if dup_nodes:
            problems.append(f"attachments puts {', '.join(dup_nodes)} on more than one port")
        nets = [ipaddress.ip_network(n) for n in self.pod_supernets]
        problems.extend(_overlaps("pod_supernets", nets))
        pools = [ipaddress.ip_network(n) for n in self.service_pools]
        problems.extend(_overlaps("service_pools", pools))
        problems.extend(f"service_pools {pool} overlaps pod_supernets {net}"
                        for pool in pools for net in nets
                        if pool.version == net.version and pool.overlaps(net))
        problems.extend(f"service_pools {pool} overlaps {what} {special}"
                        for pool in pools for special, what in _NOT_VIPS
                        if pool.version == special.version and pool.overlaps(special))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class FrrConfig(_Strict):
    pathspace: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,32}$")
    config_file: str = "/etc/frr/frr.conf"
    vtysh: str = "/usr/bin/vtysh"
    reload_script: str = "/usr/lib/frr/frr-reload.py"
    # How long to wait for more changes before rendering; a burst of Node updates becomes one
    # apply. Well under MetalLB's 3 s.
    debounce_ms: int = Field(200, ge=0, le=10000)
    # Re-check the running config this often and repair drift (a restarted bgpd, a hand edit).
    resync_seconds: float = Field(30.0, ge=1.0, le=3600.0)
    command_timeout_seconds: float = Field(60.0, ge=1.0, le=600.0)


class SonicConfig(_Strict):
    database_config: str = "/var/run/redis/sonic-db/database_config.json"
    # SONiC bridges a VXLAN VNI through a VLAN: the overlay VNI is mapped to this one.
    overlay_vlan: int = Field(4000, ge=2, le=4094)
    vtep_name: IfName = "kfavtep"
    nvo_name: IfName = "nvo1"


def _mac(value: object) -> str:
    return validate.mac_address(value)


# rtnetlink protocol numbers others already own: kernel/boot/static (2-4), zebra (11),
# BIRD (12), DHCP (16), keepalived (18), babel (42), Calico (80), openr (99) and FRR's daemons
# (186-198). The agent must own routes that nobody else believes are theirs.
RESERVED_ROUTE_PROTOCOLS = frozenset({0, 1, 2, 3, 4, 11, 12, 16, 18, 42, 80, 99, *range(186, 199)})


def _route_protocol(value: int) -> int:
    if value in RESERVED_ROUTE_PROTOCOLS:
        raise ValueError(f"route protocol {value} belongs to another routing daemon")
    return value


class VxlanConfig(_Strict):
    # Defaults are flannel's, so a switch joins a flannel VXLAN overlay as one more peer.
    device: IfName = "flannel.1"
    vni: int = Field(1, ge=1, le=16777215)
    port: int = Field(8472, ge=1, le=65535)
    mtu: int = Field(1450, ge=1280, le=9216)
    # A fixed MAC lets overlay nodes keep their FDB entry for the switch across re-creation.
    mac: Annotated[str, AfterValidator(_mac)] | None = None
    # The switch's own overlay address (flannel gives each peer "<subnet>.0/32"); optional.
    address: Annotated[str, AfterValidator(lambda v: str(validate.cidr(v)))] | None = None


class DataplaneConfig(_Strict):
    backend: Literal["linux", "sonic"] = "linux"
    route_protocol: Annotated[int, Field(ge=1, le=255), AfterValidator(_route_protocol)] = 233
    resync_seconds: float = Field(30.0, ge=1.0, le=3600.0)
    vxlan: VxlanConfig = VxlanConfig()
    sonic: SonicConfig = SonicConfig()


class HeadroomConfig(_Strict):
    profile: str = "generic"
    capacity: dict[Resource, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    reserve_percent: float = Field(5.0, ge=0.0, le=50.0)
    # Refuse nodes whose entries do not fit (newest first); false: only report.
    admission: bool = True


class StatusConfig(_Strict):
    socket: str = "/run/kube-fabric-agent/agent.sock"
    # Group that may read the socket (mode 0660); must be one of the agent's own groups.
    socket_group: str | None = None
    state_file: str = "/run/kube-fabric-agent/status.json"
    # Optional TCP listener for remote tools: only with TLS and required client certificates.
    listen: str | None = Field(None, pattern=r"^[\w.:\[\]-]+:\d{1,5}$")
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Prometheus /metrics, off unless set (e.g. "127.0.0.1:9469").
    metrics_listen: str | None = Field(None, pattern=r"^[\w.:\[\]-]+:\d{1,5}$")
    event_history: int = Field(1000, ge=10, le=100000)
    event_history_seconds: float = Field(3600.0, ge=60.0, le=86400.0)
    # How often FRR's session states are read for status, events and metrics.
    bgp_poll_seconds: float = Field(5.0, ge=0.5, le=300.0)

    @model_validator(mode="after")
    def _tls_with_listen(self) -> StatusConfig:
        if self.listen and not (self.tls_cert and self.tls_key and self.tls_client_ca):
            raise ValueError("listen needs tls_cert, tls_key and tls_client_ca (TCP is only "
                             "served with TLS and client certificates)")
        return self


# Keys only the sonic backend may leave out (it reads them from CONFIG_DB).
SONIC_DEFAULTED_KEYS = ("asn", "router_id")


def _backend_of(data: dict[Any, Any]) -> object:
    dataplane = data.get("dataplane")
    if isinstance(dataplane, dict):
        return dataplane.get("backend", "linux")
    return getattr(dataplane, "backend", "linux")  # None (absent) or a DataplaneConfig


def _identity_missing(data: object) -> list[InitErrorDetails]:
    """switch.asn / switch.router_id left out (or null) where nothing else can supply them:
    any backend but sonic, including an invalid one (that error is reported on its own)."""
    if not isinstance(data, dict) or _backend_of(data) == "sonic":
        return []
    switch = data.get("switch")
    if isinstance(switch, dict):
        present = {key: switch.get(key) for key in SONIC_DEFAULTED_KEYS}
    elif isinstance(switch, SwitchConfig):
        present = {key: getattr(switch, key) for key in SONIC_DEFAULTED_KEYS}
    else:
        return []  # switch itself is missing or not a mapping: reported as such
    return [InitErrorDetails(type="missing", loc=("switch", key), input=switch)
            for key, value in present.items() if value is None]


class AgentConfig(_Strict):
    switch: SwitchConfig
    kubernetes: KubernetesConfig = KubernetesConfig()
    fabric: FabricConfig
    frr: FrrConfig = FrrConfig()
    dataplane: DataplaneConfig = DataplaneConfig()
    headroom: HeadroomConfig = HeadroomConfig()
    status: StatusConfig = StatusConfig()
    # The file this was loaded from (load_config), so that the warnings said at start can name
    # its permissions too; not a key of the file.
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _identity_required_off_sonic(
        cls, data: Any, handler: ModelWrapValidatorHandler[AgentConfig]
    ) -> AgentConfig:
        # A wrap validator, not an "after" one: the missing keys are reported together with
        # every other problem of the file (an after validator runs only on a valid model) and
        # under their own key path, exactly as a required field's would be.
        missing = _identity_missing(data)
        try:
            config = handler(data)
        except ValidationError as exc:
            if not missing:
                raise
            order = list(cls.model_fields)
            errors = sorted(
                [*exc.errors(), *missing],  # type: ignore[list-item]
                key=lambda e: order.index(e["loc"][0]) if e["loc"] and e["loc"][0] in order
                else len(order))
            raise ValidationError.from_exception_data(exc.title, errors) from None
        if missing:
            raise ValidationError.from_exception_data(cls.__name__, missing)
        return config


class ConfigError(Exception):
    """Raised with one line per problem, each naming the key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _problems(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{_key_path(err['loc'])}: {msg}")
    return lines


def config_warnings(config: AgentConfig) -> list[str]:
    """Valid but unsafe choices, said at check-config and at every start."""
    warnings = []
    if config.fabric.node_networks is None:
        warnings.append("fabric.node_networks is not set: nodes' InternalIP host routes are "
                        "accepted and announced unchecked (a kubelet may rewrite its own "
                        "Node's addresses); set it to the networks node addresses come from")
    warnings += _metrics_warnings(config.status.metrics_listen)
    warnings += _file_warnings(config)
    return warnings


def _metrics_warnings(listen: str | None) -> list[str]:
    if listen is None:
        return []
    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"  # other names may resolve anywhere: not assumed local
    if loopback:
        return []
    return [f"status.metrics_listen {listen} is not a loopback address: /metrics names every "
            "node behind this leaf and is served to anyone who can reach it, without TLS or "
            "authentication; listen on 127.0.0.1 or ::1, or firewall the port"]


# Which files the agent trusts, and whether they are secret. A secret (a key, a token, a
# kubeconfig, which may carry both inline) must not be world-readable; nothing the agent trusts
# may be world-writable (a replaced CA certificate or config is as bad as a stolen key).
# Certificates and the config file hold nothing secret: warning about mode 0644 on them would
# be noise that teaches operators to skip warnings.
def _trusted_files(config: AgentConfig) -> list[tuple[str, str, bool]]:
    """(what, path, secret) for every file the configuration makes the agent read."""
    files: list[tuple[str, str, bool]] = []
    if config._source is not None:
        files.append(("the configuration file", str(config._source), False))
    kubeconfig = config.kubernetes.kubeconfig
    if kubeconfig is not None:
        files.append(("kubernetes.kubeconfig", kubeconfig, True))
        files += _kubeconfig_files(Path(kubeconfig))
    st = config.status
    for key, path, secret in (("status.tls_cert", st.tls_cert, False),
                              ("status.tls_key", st.tls_key, True),
                              ("status.tls_client_ca", st.tls_client_ca, False)):
        if path is not None:
            files.append((key, path, secret))
    return files


def _kubeconfig_files(kubeconfig: Path) -> list[tuple[str, str, bool]]:
    """The files the kubeconfig's current context names (relative to its directory, as
    kubectl resolves them). An unreadable or odd kubeconfig yields none: the Kubernetes client
    reports that at start with its own error."""
    try:
        doc = yaml.safe_load(kubeconfig.read_text())
        current = doc["current-context"]
        context = _named_entry(doc, "contexts", current)["context"]
        cluster = _named_entry(doc, "clusters", context["cluster"])["cluster"]
        user = _named_entry(doc, "users", context["user"])["user"] if "user" in context else {}
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    found = []
    for section, key, secret in ((cluster, "certificate-authority", False),
                                 (user, "client-certificate", False),
                                 (user, "client-key", True),
                                 (user, "tokenFile", True)):
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and value:
            found.append((f"kubeconfig {key}", str(kubeconfig.parent / value), secret))
    return found


def _named_entry(doc: Any, section: str, name: object) -> Any:
    for entry in doc[section]:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise KeyError(name)


def _file_warnings(config: AgentConfig) -> list[str]:
    warnings = []
    for what, path, secret in _trusted_files(config):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)  # the target: a symlink's mode is 0777
        except OSError:
            continue  # a missing file is an error where it is opened, with its own message
        if mode & stat.S_IWOTH:
            warnings.append(f"{what} {path} is world-writable (mode {mode:04o}): any local "
                            f"user can change what the agent trusts; chmod o-w {path}")
        if secret and mode & stat.S_IROTH:
            warnings.append(f"{what} {path} is world-readable (mode {mode:04o}) and holds "
                            f"credentials; chmod o-r {path}")
    return warnings


def parse_config(data: object) -> AgentConfig:
    if not isinstance(data, dict):
        raise ConfigError(["(top level): the configuration must be a YAML mapping"])
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def load_config(path: str | Path) -> AgentConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"(file): {path} is not valid YAML: {exc}"]) from None
    config = parse_config(data)
    config._source = Path(path)
    return config
