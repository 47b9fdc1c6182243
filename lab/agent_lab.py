"""The lab with the agent running on leaf1: what the integration tests and the main job share.

Brings up containerlab/leaf-servers.clab.yml in namespaces, starts a Kubernetes API on the
host, relays 127.0.0.1:6443 inside leaf1 to it, writes the agent's config and kubeconfig, and
runs `fabric-agent run` inside leaf1 exactly as systemd would run it on a switch.

The API is a real kube-apiserver + etcd (lab/controlplane.py) when lab/k8s/build.sh has built
them: the agent then authenticates with a ServiceAccount token bound by examples/rbac.yaml.
Otherwise (``api="test"``, or "auto" before the build) it is the API test server (lab/kubeapi),
which the tests keep for faults a real server cannot be made to produce on demand.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lab import controlplane
from lab.controlplane import ControlPlane
from lab.kubeapi.client import KubeApiClient
from lab.netns import Lab
from lab.topotest import wait_until

REPO = Path(__file__).resolve().parent.parent
CLAB_FILE = REPO / "containerlab" / "leaf-servers.clab.yml"
LEAF = "leaf1"
LEAF_ASN = 65101
API_PORT_IN_LEAF = 6443
RBAC_FILE = REPO / "examples" / "rbac.yaml"
AGENT_SA = ("kube-fabric-agent", "kube-fabric-agent")  # namespace, ServiceAccount (RBAC_FILE)

# The Nodes of the lab's servers, as their kubelets would register them.
SERVERS = {
    "srv1": {"port": "swp1", "ip": "192.168.10.1", "cidr": "10.244.1.0/24"},
    "srv2": {"port": "swp2", "ip": "192.168.10.2", "cidr": "10.244.2.0/24"},
    "srv3": {"port": "swp3", "ip": "192.168.10.3", "cidr": "10.244.3.0/24"},
}


# Data-plane nodes (no BGP): what their Nodes say, as in containerlab/leaf-servers.clab.yml.
SWITCH_VTEP_MAC = "02:00:00:00:00:01"
STATIC_NODES = {"st1": {"port": "swp5", "ip": "192.168.10.5", "cidr": "10.244.5.0/24",
                        "pod": "10.244.5.10"}}
FLANNEL_NODES = {
    "fl1": {"public_ip": "192.168.20.1", "mac": "0a:58:0a:f4:07:00", "cidr": "10.244.7.0/24",
            "pod": "10.244.7.10"},
    "fl2": {"public_ip": "192.168.20.3", "mac": "0a:58:0a:f4:08:00", "cidr": "10.244.8.0/24",
            "pod": "10.244.8.10"},
}


def flannel_annotations(public_ip: str, mac: str, vni: int = 1) -> dict[str, str]:
    """What flanneld writes on its Node (kube subnet manager, VXLAN backend)."""
    return {
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/backend-data": f'{{"VNI":{vni},"VtepMAC":"{mac}"}}',
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "flannel.alpha.coreos.com/public-ip": public_ip,
    }


def lldpd_socket(lab: Lab, node: str) -> str:
    # lldpd drops privileges to _lldpd: its socket must be somewhere that user can reach, not
    # in a root-only temporary directory.
    return f"/run/lldpd-{lab.ns(node)}.socket"


def agent_config(lab: Lab, workdir: Path, **fabric_extra: Any) -> dict[str, Any]:
    return {
        "switch": {"hostname": LEAF, "asn": LEAF_ASN, "router_id": "10.0.0.1",
                   "vtep_ip": "10.0.0.1"},
        "kubernetes": {"kubeconfig": str(workdir / "kubeconfig"), "watch_timeout_seconds": 30},
        "fabric": {
            "server_ports": ["swp1", "swp2", "swp3", "swp4", "swp5"],
            "uplinks": ["swp51"],
            "pod_supernets": ["10.244.0.0/16"],
            # Every InternalIP the lab's Nodes register: SERVERS and STATIC_NODES in
            # 192.168.10.0/24, FLANNEL_NODES (InternalIP = public IP) in 192.168.20.0/24.
            "node_networks": ["192.168.10.0/24", "192.168.20.0/24"],
            # lldpd on leaf1 is started by the tests that need it; until then the agent reports
            # LLDP unavailable and attachments come from annotations.
            "lldp": True,
            "lldp_socket": lldpd_socket(lab, LEAF),
            "lldp_poll_seconds": 1,
            **fabric_extra,
        },
        "frr": {
            "pathspace": lab.pathspace(LEAF),
            "config_file": str(lab.frr_conf_path(LEAF)),
            "debounce_ms": 100,
            "resync_seconds": 3,
        },
        # The flannel nodes of the topology file know the switch's VTEP by this MAC and address.
        "dataplane": {"vxlan": {"mac": SWITCH_VTEP_MAC, "address": "10.244.250.0/32"},
                      "resync_seconds": 5},
        "status": {
            "socket": str(workdir / "agent.sock"),
            "state_file": str(workdir / "status.json"),
            "bgp_poll_seconds": 1,
        },
    }


class AgentLab:
    def __init__(self, prefix: str | None = None, config_extra: dict[str, Any] | None = None,
                 api: str = "auto", **fabric_extra: Any) -> None:
        if api == "auto":
            api = "real" if controlplane.binaries_built() else "test"
        if api not in ("real", "test"):
            raise ValueError(f"api must be 'real', 'test' or 'auto', not {api!r}")
        #: "real": kube-apiserver + etcd; "test": the API test server (faults on demand).
        self.api_kind = api
        self.control_plane: ControlPlane | None = None
        self.lab = Lab.from_file(CLAB_FILE, prefix=prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix="kfa-agent-lab-"))
        self.fabric_extra = fabric_extra
        self.config_extra = config_extra or {}  # top-level sections, e.g. {"headroom": {...}}
        self.api_port: int | None = None
        self.api_proc: subprocess.Popen | None = None
        self.agent_proc: subprocess.Popen | None = None
        self.k8s: KubeApiClient | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> AgentLab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> AgentLab:
        self.lab.up()
        self.start_api()
        self.lab.forward(LEAF, f"127.0.0.1:{API_PORT_IN_LEAF}", f"127.0.0.1:{self.api_port}")
        self._write_agent_files()
        self.start_agent()
        return self

    def down(self) -> None:
        if self.k8s is not None:
            self.k8s.close()
        if self.control_plane is not None:
            self.control_plane.stop()
        self.lab.down()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- the Kubernetes API ----------------------------------------------------------------------
    def start_api(self) -> None:
        """Start the API (at first, or again on the same port after stop_api())."""
        if self.api_kind == "real":
            self._start_real_api()
        else:
            self._start_test_api()

    def _start_real_api(self) -> None:
        if self.control_plane is None:
            # In the lab's log folder: its logs outlive down() for post-mortems.
            self.control_plane = ControlPlane(self.lab.log_dir / "k8s", spawn=self.lab.spawn)
            self.control_plane.start()
            self.control_plane.apply_file(RBAC_FILE)
            self.write_agent_token(self.control_plane.issue_token(*AGENT_SA, seconds=86400))
        else:
            self.control_plane.start_apiserver()
        self.api_port = self.control_plane.port
        if self.k8s is None:
            self.k8s = self.control_plane.client()

    @property
    def token_file(self) -> Path:
        return self.workdir / "agent.token"

    def write_agent_token(self, token: str) -> None:
        """Replace the agent's ServiceAccount token file atomically (a rotation)."""
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.chmod(0o600)
        tmp.replace(self.token_file)

    def _start_test_api(self) -> None:
        port_file = self.workdir / "api.port"
        port_file.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "lab.kubeapi",
            "--port-file",
            str(port_file),
            "--state",
            str(self.workdir / "api-state.json"),
            "--bookmark-interval",
            "2",
        ]
        if self.api_port is not None:  # a restart keeps its address, as a real apiserver does
            argv += ["--listen", f"127.0.0.1:{self.api_port}"]
        self.api_proc = self.lab.spawn(None, argv, cwd=str(REPO))
        wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(),
            15.0,
            "the Kubernetes API test server to listen",
        )
        self.api_port = int(port_file.read_text().strip())
        if self.k8s is None:
            self.k8s = KubeApiClient(f"http://127.0.0.1:{self.api_port}")

    @contextlib.contextmanager
    def other_api_replica(self) -> Iterator[KubeApiClient]:
        """A second API server on the same state (another apiserver replica behind the same
        etcd), for writes the agent's server never sees as watch events."""
        if self.control_plane is not None:
            with self.control_plane.replica() as client:
                yield client
            return
        port_file = self.workdir / "replica.port"
        port_file.unlink(missing_ok=True)
        state = self.workdir / "api-state.json"
        proc = self.lab.spawn(None, [sys.executable, "-m", "lab.kubeapi", "--port-file",
                                     str(port_file), "--state", str(state)], cwd=str(REPO))
        try:
            wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 15.0,
                       "the second API server replica to listen")
            with KubeApiClient(f"http://127.0.0.1:{int(port_file.read_text())}") as client:
                yield client
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def stop_api(self) -> None:
        if self.control_plane is not None:
            self.control_plane.stop_apiserver()
            return
        assert self.api_proc is not None
        self.api_proc.terminate()
        self.api_proc.wait(timeout=10)

    @property
    def api(self) -> KubeApiClient:
        assert self.k8s is not None
        return self.k8s

    def add_server_node(self, name: str, **overrides: Any) -> dict[str, Any]:
        srv = SERVERS[name]
        fields: dict[str, Any] = {
            "annotations": {"kube-fabric-agent.io/switch-port": f"{LEAF}/{srv['port']}"},
            "pod_cidrs": [srv["cidr"]],
            "internal_ip": srv["ip"],
            **overrides,
        }
        return self.api.create_node(name, **fields)

    def add_static_node(self, name: str, cidr: str | None = None) -> dict[str, Any]:
        node = STATIC_NODES[name]
        return self.api.create_node(name, annotations={
            "kube-fabric-agent.io/switch-port": f"{LEAF}/{node['port']}",
            "kube-fabric-agent.io/routing": "static"},
            pod_cidrs=[cidr or node["cidr"]], internal_ip=node["ip"])

    def add_flannel_node(self, name: str) -> dict[str, Any]:
        node = FLANNEL_NODES[name]
        return self.api.create_node(
            name, annotations=flannel_annotations(node["public_ip"], node["mac"]),
            pod_cidrs=[node["cidr"]], internal_ip=node["public_ip"])

    # -- the agent -----------------------------------------------------------------------------
    def _write_agent_files(self) -> None:
        if self.control_plane is not None:
            kubeconfig = self.control_plane.kubeconfig(
                f"https://127.0.0.1:{API_PORT_IN_LEAF}", self.token_file)
        else:
            kubeconfig = self._test_api_kubeconfig()
        (self.workdir / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        config = agent_config(self.lab, self.workdir, **self.fabric_extra)
        for section, values in self.config_extra.items():
            config[section] = {**config.get(section, {}), **values}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @staticmethod
    def _test_api_kubeconfig() -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "lab", "cluster": {"server": f"http://127.0.0.1:{API_PORT_IN_LEAF}"}}
            ],
            "users": [{"name": "agent", "user": {}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "agent"}}],
            "current-context": "lab",
        }

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.yaml"

    @property
    def agent_log(self) -> Path:
        return self.workdir / "agent.log"

    def start_agent(self) -> None:
        log = self.agent_log.open("ab")
        try:
            self.agent_proc = self.lab.spawn(
                LEAF,
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "--log-level",
                    "INFO",
                    "run",
                    "--config",
                    str(self.config_path),
                ],
                cwd=str(REPO),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()

    def start_lldpd(self, node: str, ifaces: list[str], system_name: str) -> str:
        """lldpd in ``node`` with its own control socket, sending every second."""
        sock = lldpd_socket(self.lab, node)
        Path(sock).unlink(missing_ok=True)  # left by a killed lldpd of an earlier run
        self.lab.spawn(node, ["lldpd", "-d", "-u", sock, "-I", ",".join(ifaces)])
        lldpcli = ["lldpcli", "-u", sock]
        wait_until(lambda: self.lab.exec(node, [*lldpcli, "show", "configuration"],
                                         check=False).returncode == 0, 10.0, f"lldpd in {node}")
        self.lab.exec(node, [*lldpcli, "configure", "system", "hostname", system_name])
        self.lab.exec(node, [*lldpcli, "configure", "lldp", "tx-interval", "1"])
        return sock

    def stop_agent(self) -> int:
        assert self.agent_proc is not None
        self.agent_proc.terminate()
        return self.agent_proc.wait(timeout=15)

    def fabricctl_argv(self, *args: str) -> list[str]:
        """fabricctl against this agent's status socket, as an engineer on the switch runs it."""
        return [sys.executable, "-m", "agent.fabricctl", "--socket",
                str(self.workdir / "agent.sock"), *args]

    def fabricctl_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.fabricctl_argv(*args), capture_output=True, text=True,
                              timeout=30, cwd=REPO)

    def fabricctl(self, *args: str) -> str:
        res = self.fabricctl_run(*args)
        return res.stdout + res.stderr

    def status(self) -> dict[str, Any]:
        path = self.workdir / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- observations --------------------------------------------------------------------------
    def bgp_peers(self, node: str = LEAF) -> dict[str, Any]:
        return self.lab.vtysh_json(node, "show bgp ipv4 unicast summary json").get("peers", {})

    def established(self, port: str, node: str = LEAF) -> bool:
        return self.bgp_peers(node).get(port, {}).get("state") == "Established"

    def kernel_routes(self, node: str = LEAF) -> dict[str, Any]:
        """dst -> route, as `ip -j route` prints them (the leaf's FIB)."""
        routes = self.lab.ip_json(node, "route", "show")
        return {r["dst"]: r for r in routes}

    def running_config(self) -> str:
        return self.lab.vtysh(LEAF, "show running-config")

    def wait(self, pred: Any, timeout: float, desc: str) -> None:
        """Poll ``pred`` until true; on timeout the error carries what an engineer would look
        at (sessions on both ends, routes, the agent's status and log) so a CI failure is
        diagnosable from its output alone."""
        try:
            wait_until(pred, timeout, desc)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- lab state ---\n{self.diagnostics()}") from None

    def diagnostics(self, log_lines: int = 40) -> str:
        parts: list[str] = []
        for what in (self.describe, self._server_sessions, self._frr_processes,
                     lambda: self._log_tail(log_lines)):
            try:
                parts.append(what())
            except Exception as exc:  # a half-broken lab must not hide the original failure
                parts.append(f"(diagnostics incomplete: {type(exc).__name__}: {exc})")
        return "\n".join(parts)

    def _server_sessions(self) -> str:
        out = []
        for name in SERVERS:
            peers = self.bgp_peers(name)
            out.append(f"{name}: " + ", ".join(
                f"{p} {v.get('state')} up/down {v.get('peerUptime', '?')}"
                for p, v in peers.items()))
        return "\n".join(out)

    @staticmethod
    def _frr_processes() -> str:
        """FRR daemons and config tools alive now, with their age: a hung vtysh or
        frr-reload.py shows here."""
        out = ["FRR processes (pid, seconds alive, state, command):"]
        ps = subprocess.run(["ps", "-eo", "pid=,etimes=,stat=,args="], capture_output=True,
                            text=True, check=False).stdout
        for line in ps.splitlines():
            if any(k in line for k in ("vtysh", "frr-reload", "bgpd", "zebra")):
                out.append("  " + line.strip()[:200])
        return "\n".join(out)

    def _log_tail(self, lines: int) -> str:
        path = self.agent_log
        if not path.exists():
            return "(no agent log)"
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return f"agent log ({path}), last {len(tail)} lines:\n" + "\n".join(tail)

    def api_description(self) -> str:
        if self.control_plane is not None:
            return self.control_plane.summary()
        return ("API test server (lab/kubeapi): the real kube-apiserver is not built; "
                "lab/k8s/build.sh builds it")

    def describe(self) -> str:
        """What an engineer would look at first: sessions, routes, the agent's own status."""
        out = [f"Kubernetes API: {self.api_description()}",
               self.lab.vtysh(LEAF, "show bgp ipv4 unicast summary wide")]
        out.append("leaf1 kernel routes to pods:")
        for dst, r in sorted(self.kernel_routes().items()):
            if dst.startswith(("10.244.", "192.168.10.", "10.99.")):
                out.append(f"  {dst:18} dev {r.get('dev', '?'):6} proto {r.get('protocol', '?')}")
        spine = self.lab.vtysh_json("spine1", "show bgp ipv4 unicast json").get("routes", {})
        out.append("spine1 BGP table (own loopback + from leaf1): " + ", ".join(sorted(spine)))
        status = self.status()
        out.append(f"agent: {status.get('summary', 'no status yet')}")
        for a in status.get("attachments", []):
            out.append(
                f"  {a['port']:5} {a['node']:8} via {a['source']:10} {a['routing']:6} "
                f"{' '.join(a['prefixes'])}{'  (draining)' if a['draining'] else ''}"
            )
        for r in status.get("refusals", []):
            out.append(f"  refused: {r}")
        latency = status.get("last_reconcile_latency_seconds")
        if latency is not None:
            out.append(f"  last Node change -> applied FRR config: {latency:.3f}s")
        return "\n".join(out)


def run_demo(keep: bool = False) -> int:
    """The main job: lab up, the lab's Nodes in the API (BGP, static and flannel VXLAN nodes),
    the agent on leaf1; print what it reached, as an engineer would see it with fabricctl."""
    started = time.monotonic()
    with AgentLab() as env:
        for name in SERVERS:
            env.add_server_node(name)
        env.add_static_node("st1")
        for name in FLANNEL_NODES:
            env.add_flannel_node(name)
        env.api.create_pod("web-1", "shop", node_name="srv2", pod_ip="10.244.2.23")
        # A Node claiming address space outside the fabric's pod supernets, on the free port:
        # the agent refuses the prefix and says why.
        env.api.create_node("rogue", pod_cidrs=["10.99.0.0/24"], annotations={
            "kube-fabric-agent.io/switch-port": f"{LEAF}/swp4"})
        env.wait(
            lambda: all(env.established(SERVERS[n]["port"]) for n in SERVERS),
            60.0,
            "BGP sessions to srv1..srv3 Established on leaf1",
        )
        env.wait(
            lambda: all(SERVERS[n]["cidr"] in env.kernel_routes() for n in SERVERS),
            30.0,
            "pod CIDRs in leaf1's kernel",
        )
        env.wait(lambda: env.status().get("frr_last_apply"), 10.0, "agent status")
        pods = [*STATIC_NODES.values(), *FLANNEL_NODES.values()]
        env.wait(lambda: all(env.lab.exec("host1", ["ping", "-c1", "-W1", p["pod"]],
                                          check=False).returncode == 0 for p in pods),
                 60.0, "host1 reaching the static and overlay pods")
        print(env.describe())
        print("host1 (behind leaf1) pings " + ", ".join(
            f"{p['pod']} ok" for p in pods))
        for args in (["attachments"], ["routes"], ["vteps"], ["headroom"],
                     ["locate", "10.244.2.23"]):
            print(f"\n$ fabricctl {' '.join(args)}")
            print(env.fabricctl(*args).rstrip())
        print(f"\nlab ready in {time.monotonic() - started:.1f}s")
        if keep:
            print(f"keeping the lab up (agent log {env.agent_log}); Ctrl-C tears it down")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m lab.agent_lab",
        description="Bring up the namespace lab with the agent on leaf1 and print its state.")
    parser.add_argument("--keep", action="store_true", help="keep the lab up until Ctrl-C")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: the lab builds network namespaces and starts FRR", file=sys.stderr)
        return 1
    return run_demo(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
