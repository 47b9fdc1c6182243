"""Soak: random Node/Pod churn with injected faults against the namespace lab, invariants checked
every second. Run by hand, as root (it builds the lab in namespaces under its own prefix):

    .venv/bin/python bench/soak.py --minutes 30 [--seed 1] [--json out.json]

The agent runs on leaf1 exactly as in the integration tests (lab/agent_lab.py). Five nodes never
change (srv1 and srv2 over BGP, st1 static, fl1 and fl2 flannel VXLAN); srv3, a probe node on the
free port swp4, short-lived "churn-*" Nodes (some hostile: a foreign port claim, an address
outside fabric.node_networks, a zone id, a duplicate pod CIDR) and Pods change all the time.
Faults, one at a time: API stall, garbage watch lines, 410 Gone, 500s, bgpd and zebra killed,
frr-reload.py failing and hanging, SIGTERM (a restart, as systemd would), SIGHUP, a full disk
under frr.conf.

Invariants, checked every second:
- no BGP session of an unchanged node flaps (outside a bgpd/zebra kill, which drops them by
  definition; after one they must be Established again);
- no owned route of an unchanged node disappears from leaf1's kernel or from spine1 (BGP-learned
  ones are exempt only while their session is down after a bgpd/zebra kill);
- after each fault ends, a probe change (the probe Node's pod CIDR) is in FRR and the agent's
  health is ok within 5 s;
- SIGTERM ends the agent within 5 s with exit 0; SIGHUP leaves it running;
- the agent's RSS stays under 256 MiB (the unit's MemoryMax).

The reload faults use a wrapper in front of the real frr-reload.py (frr.reload_script): the only
stand-in here, because nothing real fails or hangs on demand; it says so in its own text.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.agent_lab import FLANNEL_NODES, LEAF, SERVERS, STATIC_NODES, AgentLab
from lab.kubeapi.store import ApiStatusError

CONVERGE_SECONDS = 5.0
SESSION_BACK_SECONDS = 60.0  # BGP unnumbered after a bgpd kill: RAs, connect retry, OPEN
STOP_SECONDS = 5.0
RSS_LIMIT_KIB = 256 * 1024
STABLE_BGP = ("srv1", "srv2")
STABLE_ROUTES = {
    **{SERVERS[n]["cidr"]: n for n in STABLE_BGP},
    STATIC_NODES["st1"]["cidr"]: "st1",
    **{v["cidr"]: k for k, v in FLANNEL_NODES.items()},
}
AGENT_OWNED = {STATIC_NODES["st1"]["cidr"], *(v["cidr"] for v in FLANNEL_NODES.values())}
PROBE_CIDRS = ("10.244.60.0/24", "10.244.61.0/24")
NODE_NETWORKS = ["192.168.10.0/24", "192.168.20.0/24"]

RELOAD_WRAPPER = """#!/bin/sh
# A STAND-IN for fault injection (bench/soak.py): fails or hangs on demand, else runs the real
# frr-reload.py. Nothing real can be told to fail or hang at a chosen moment.
d="$(dirname "$0")"
if [ -e "$d/reload.fail" ]; then echo "soak: injected frr-reload failure" >&2; exit 1; fi
if [ -e "$d/reload.hang" ]; then exec sleep 3600; fi
exec /usr/lib/frr/frr-reload.py "$@"
"""


@dataclass
class Tally:
    faults: Counter[str] = field(default_factory=Counter)
    churn: Counter[str] = field(default_factory=Counter)
    converge: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    recover: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    violations: list[str] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    checks: int = 0
    stop_seconds: list[float] = field(default_factory=list)
    on_first_violation: Callable[[], str] | None = None  # what the lab looked like then

    def violate(self, started: float, what: str) -> None:
        line = f"t+{time.monotonic() - started:7.1f}s {what}"
        print("VIOLATION " + line, flush=True)
        self.violations.append(line)
        if self.on_first_violation is not None and len(self.violations) == 1:
            print(self.on_first_violation(), flush=True)


class Soak:
    def __init__(self, env: AgentLab, rng: random.Random, tally: Tally) -> None:
        self.env = env
        self.rng = rng
        self.tally = tally
        self.started = time.monotonic()
        self.workdir = env.workdir
        self.disk = self.workdir / "frr-disk"
        self.churn_nodes: set[str] = set()
        self.pods: set[str] = set()
        self.serial = 0
        self.probe = 0
        self.dropped: dict[str, int] = {}
        # Until this time, BGP-learned routes and sessions of stable nodes are exempt (a bgpd
        # or zebra kill drops them by definition); after it they must be back.
        self.frr_down_until = 0.0
        self.frr_killed = False
        self.faults = FAULTS

    # -- observation -------------------------------------------------------------------------
    def agent_pid(self) -> int | None:
        needle = str(self.env.config_path).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"agent.cli" in cmdline and needle in cmdline and b"\0run\0" in cmdline:
                return int(entry.name)
        return None

    def health(self) -> str | None:
        """What `fabricctl status --json` says, as an engineer would ask."""
        return _health(self.env)

    def neighbors(self) -> dict[str, Any]:
        return self.env.lab.vtysh_json(LEAF, "show bgp neighbors json")

    def sessions_up(self) -> bool:
        peers = self.neighbors()
        return all(peers.get(SERVERS[n]["port"], {}).get("bgpState") == "Established"
                   for n in STABLE_BGP)

    def rebaseline(self) -> None:
        peers = self.neighbors()
        self.dropped = {n: int(peers.get(SERVERS[n]["port"], {}).get("connectionsDropped", 0))
                        for n in STABLE_BGP}

    def check(self) -> None:
        self.tally.checks += 1
        now = time.monotonic()
        exempt = now < self.frr_down_until
        pid = self.agent_pid()
        if pid is None:
            self.tally.violate(self.started, "the agent is not running")
        else:
            rss = _rss_kib(pid)
            if rss is not None:
                self.tally.rss_kib.append(rss)
                if rss > RSS_LIMIT_KIB:
                    self.tally.violate(self.started, f"agent RSS {rss} KiB over the limit")
        if self.frr_killed and not exempt:
            if not self.sessions_up():
                self.tally.violate(self.started, "stable sessions not back after a FRR kill")
            self.frr_killed = False
            self.rebaseline()
        if not exempt:
            peers = self.neighbors()
            for n in STABLE_BGP:
                peer = peers.get(SERVERS[n]["port"], {})
                dropped = int(peer.get("connectionsDropped", 0))
                if peer.get("bgpState") != "Established" or dropped != self.dropped.get(n):
                    self.tally.violate(self.started, f"session of {n} flapped "
                                       f"({peer.get('bgpState')}, dropped {dropped})")
                    self.dropped[n] = dropped
        kernel = self.env.kernel_routes()
        spine = self.env.lab.vtysh_json("spine1", "show bgp ipv4 unicast json").get("routes", {})
        for cidr, owner in STABLE_ROUTES.items():
            if exempt and cidr not in AGENT_OWNED:
                continue
            if cidr not in kernel:
                self.tally.violate(self.started, f"{owner}'s {cidr} missing from leaf1's kernel")
            if not exempt and cidr not in spine:
                self.tally.violate(self.started, f"{owner}'s {cidr} missing at spine1")

    # -- churn -------------------------------------------------------------------------------
    def churn(self) -> None:
        action = self.rng.choice(("srv3", "node+", "node-", "hostile", "pod+", "pod-"))
        self.tally.churn[action] += 1
        try:
            self._churn(action)
        except ApiStatusError:  # an injected 500 hits the soak's own writes too
            self.tally.churn["(refused by the API)"] += 1

    def _churn(self, action: str) -> None:
        api = self.env.api
        if action == "srv3":
            api.patch_node("srv3", {"spec": {"unschedulable": self.rng.random() < 0.5},
                                    "metadata": {"labels": {"soak": str(self.serial)}}})
        elif action == "node+" and len(self.churn_nodes) < 40:
            self.serial += 1
            name = f"churn-{self.serial}"
            rack = self.rng.choice(("leaf2", "leaf3"))
            api.create_node(name, pod_cidrs=[f"10.245.{self.serial % 250}.0/24"],
                            internal_ip=f"192.168.30.{self.serial % 250}",
                            annotations={"kube-fabric-agent.io/switch-port": f"{rack}/swp9"})
            self.churn_nodes.add(name)
        elif action == "node-" and self.churn_nodes:
            name = self.rng.choice(sorted(self.churn_nodes))
            api.delete_node(name)
            self.churn_nodes.discard(name)
        elif action == "hostile" and len(self.churn_nodes) < 40:
            self.serial += 1
            name = f"churn-{self.serial}"
            kind = self.rng.choice(("claims-swp1", "outside-networks", "zone-id", "dup-cidr"))
            self.tally.churn[f"hostile:{kind}"] += 1
            cidr = f"10.246.{self.serial % 250}.0/24"
            annotations = {"kube-fabric-agent.io/switch-port": f"{LEAF}/swp1"}
            ip = "192.168.10.200"
            cidrs = [cidr]
            if kind == "outside-networks":
                ip, annotations = "198.51.100.7", {"kube-fabric-agent.io/switch-port":
                                                   f"{LEAF}/swp4"}
            elif kind == "zone-id":
                ip = "fe80::1%swp4"
            elif kind == "dup-cidr":
                cidrs = [SERVERS["srv1"]["cidr"]]
            api.create_node(name, pod_cidrs=cidrs, internal_ip=ip, annotations=annotations)
            self.churn_nodes.add(name)
        elif action == "pod+" and len(self.pods) < 200:
            self.serial += 1
            node = self.rng.choice(STABLE_BGP)
            name = f"pod-{self.serial}"
            base = SERVERS[node]["cidr"].rsplit(".", 1)[0]  # "10.244.1"
            api.create_pod(name, "soak", node_name=node, pod_ip=f"{base}.{self.serial % 250 + 1}")
            self.pods.add(name)
        elif action == "pod-" and self.pods:
            name = self.rng.choice(sorted(self.pods))
            api.delete_pod(name, "soak")
            self.pods.discard(name)

    # -- convergence -------------------------------------------------------------------------
    def converge(self, kind: str) -> None:
        """A probe change right after the fault ends: in FRR and health ok within the bound."""
        self.probe += 1
        cidr = PROBE_CIDRS[self.probe % 2]
        for _ in range(10):  # past what is left of an injected run of 500s
            try:
                self.env.api.patch_node("probe", {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
                break
            except ApiStatusError:
                continue
        start = time.monotonic()
        deadline = start + 60.0
        while time.monotonic() < deadline:
            if cidr in self.env.running_config() and self.health() == "ok":
                took = time.monotonic() - start
                self.tally.converge[kind].append(took)
                if took > CONVERGE_SECONDS:
                    self.tally.violate(self.started, f"{kind}: converged in {took:.1f}s")
                return
            time.sleep(0.05)
        self.tally.violate(self.started, f"{kind}: not converged in 60 s "
                           f"(health {self.health()})")

    # -- faults ------------------------------------------------------------------------------
    def fault(self) -> None:
        kind = self.rng.choice(self.faults)
        self.tally.faults[kind] += 1
        print(f"t+{time.monotonic() - self.started:7.1f}s fault {kind}", flush=True)
        getattr(self, "fault_" + kind.replace("-", "_"))()
        self.converge(kind)

    def hold(self, seconds: float) -> None:
        """Keep churning and checking while a fault lasts."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.churn()
            self.check()
            time.sleep(0.5)

    def fault_api_stall(self) -> None:
        self.env.api.admin("hang", {"enabled": True})
        try:
            end = time.monotonic() + self.rng.uniform(5, 15)
            while time.monotonic() < end:  # the API is hung: only check, no churn
                self.check()
                time.sleep(1)
        finally:
            self.env.api.admin("hang", {"enabled": False})

    def fault_api_garbage(self) -> None:
        for line in ("{not json", "[" * 5000, '{"type":"MODIFIED","object":42}'):
            self.env.api.admin("inject-raw/nodes", {"line": line})
        self.hold(3)

    def fault_api_gone(self) -> None:
        self.env.api.admin("compact")
        self.env.api.admin("drop-watches")
        self.hold(3)

    def fault_api_errors(self) -> None:
        self.env.api.admin("drop-watches")
        self.env.api.admin("fail-next", {"count": 5, "status": 500})
        self.hold(5)

    def missing_stable_routes(self) -> list[str]:
        kernel = self.env.kernel_routes()
        spine = self.env.lab.vtysh_json("spine1", "show bgp ipv4 unicast json").get("routes", {})
        return [f"{c} {where}" for c in STABLE_ROUTES
                for where, table in (("leaf1", kernel), ("spine1", spine)) if c not in table]

    def _kill(self, daemon: str) -> None:
        """A crashed daemon drops its sessions and routes by definition: they are exempt until
        the sessions and the stable routes are back (bounded), measured as the recovery."""
        self.frr_killed = True
        self.frr_down_until = time.monotonic() + SESSION_BACK_SECONDS
        start = time.monotonic()
        self.env.lab.frr_restart(LEAF, daemon)
        if daemon == "zebra":
            # watchfrr restarts every daemon when zebra dies (FRR does not support a lone zebra
            # restart: bgpd would not reinstall its routes); do what it does.
            for other in ("bgpd", "staticd"):
                self.env.lab.frr_restart(LEAF, other)
        while time.monotonic() - start < SESSION_BACK_SECONDS:
            missing = self.missing_stable_routes()
            if self.sessions_up() and not missing:
                self.tally.recover[daemon].append(time.monotonic() - start)
                break
            self.check()
            time.sleep(0.5)
        else:
            self.tally.violate(self.started, f"{daemon} killed: not back within "
                               f"{SESSION_BACK_SECONDS:.0f}s (sessions up: {self.sessions_up()}, "
                               f"missing {', '.join(self.missing_stable_routes())})")
        self.frr_down_until = 0.0

    def fault_bgpd_kill(self) -> None:
        self._kill("bgpd")

    def fault_zebra_kill(self) -> None:
        self._kill("zebra")

    def fault_reload_fail(self) -> None:
        flag = self.workdir / "reload.fail"
        flag.touch()
        try:
            self.hold(self.rng.uniform(5, 15))
        finally:
            flag.unlink()

    def fault_reload_hang(self) -> None:
        """A hung frr-reload.py lasts until the agent kills it (its per-command timeout): the
        fault ends when the last hung one is gone, and that wait is reported on its own."""
        flag = self.workdir / "reload.hang"
        flag.touch()
        try:
            self.hold(self.rng.uniform(5, 15))
        finally:
            flag.unlink()
        start = time.monotonic()
        while _hung_reloads() and time.monotonic() - start < 120:
            self.check()
            time.sleep(0.5)
        if _hung_reloads():
            self.tally.violate(self.started, "a hung frr-reload.py was never killed")
        self.tally.recover["hung reload killed"].append(time.monotonic() - start)

    def stop_agent(self) -> None:
        """SIGTERM: exit 0 within 5 s."""
        pid = self.agent_pid()
        assert self.env.agent_proc is not None
        start = time.monotonic()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        try:
            code = self.env.agent_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - start
        self.tally.stop_seconds.append(took)
        if code != 0 or took > STOP_SECONDS:
            self.tally.violate(self.started, f"SIGTERM: exit {code} after {took:.1f}s")
        if code is None:
            self.env.agent_proc.kill()
            self.env.agent_proc.wait()

    def fault_sigterm(self) -> None:
        """SIGTERM and a restart, as systemd's Restart=always does."""
        self.stop_agent()
        self.env.start_agent()

    def fault_sigterm_while_hung(self) -> None:
        """SIGTERM while an FRR helper hangs: the agent must still stop within 5 s, and take
        the hung helper's process group with it (orphaned vtysh children used to hold it up
        for 13-23 s)."""
        flag = self.workdir / "reload.hang"
        flag.touch()
        try:
            start = time.monotonic()
            while not _hung_reloads() and time.monotonic() - start < 60:
                self.churn()
                time.sleep(0.5)
            if not _hung_reloads():
                self.tally.violate(self.started, "sigterm-while-hung: no reload ever hung")
            self.stop_agent()
            if _hung_reloads():
                self.tally.violate(self.started, "SIGTERM left a hung helper behind")
        finally:
            flag.unlink(missing_ok=True)
        self.env.start_agent()

    def fault_sighup(self) -> None:
        pid = self.agent_pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        self.hold(2)
        if self.agent_pid() != pid:
            self.tally.violate(self.started, "SIGHUP ended the agent")

    def fault_full_disk(self) -> None:
        filler = self.disk / "filler"
        try:
            with filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 65536)
        except OSError:
            pass  # ENOSPC: full
        try:
            self.hold(self.rng.uniform(5, 15))
        finally:
            filler.unlink()


FAULTS = ("api-stall", "api-garbage", "api-gone", "api-errors", "bgpd-kill", "zebra-kill",
          "reload-fail", "reload-hang", "sigterm", "sigterm-while-hung", "sighup", "full-disk")


def _health(env: AgentLab) -> str | None:
    res = env.fabricctl_run("--json", "status")
    try:
        return json.loads(res.stdout).get("health")
    except ValueError:
        return None


def _hung_reloads() -> list[int]:
    """The reload wrapper's hung stand-ins still running (`sleep 3600`)."""
    out = subprocess.run(["pgrep", "-x", "-f", "sleep 3600"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def prepare(env: AgentLab) -> None:
    """Before the agent starts: frr.conf on a small tmpfs (the full-disk fault fills it) and
    the reload wrapper."""
    disk = env.workdir / "frr-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True)
    wrapper = env.workdir / "frr-reload-faults.sh"
    wrapper.write_text(RELOAD_WRAPPER)
    wrapper.chmod(0o755)


def run(minutes: float, seed: int, fault_every: float, faults: tuple[str, ...],
        keep_log: Path) -> Tally:
    rng = random.Random(seed)
    tally = Tally()
    env = AgentLab(prefix="soak", node_networks=NODE_NETWORKS)
    disk = env.workdir / "frr-disk"
    env.config_extra = {"frr": {"config_file": str(disk / "frr.conf"),
                                "reload_script": str(env.workdir / "frr-reload-faults.sh")}}
    prepare(env)
    try:
        env.up()
        # A restarted daemon loads the saved file (watchfrr does): the lab's path for it points
        # at the agent's file on the small tmpfs.
        saved = env.lab.frr_conf_path(LEAF)
        saved.unlink()
        saved.symlink_to(disk / "frr.conf")
        for name in SERVERS:
            env.add_server_node(name)
        env.add_static_node("st1")
        for name in FLANNEL_NODES:
            env.add_flannel_node(name)
        env.api.create_node("probe", pod_cidrs=[PROBE_CIDRS[0]], internal_ip="192.168.10.40",
                            annotations={"kube-fabric-agent.io/switch-port": f"{LEAF}/swp4"})
        env.wait(lambda: all(env.established(SERVERS[n]["port"]) for n in SERVERS), 90.0,
                 "BGP sessions Established")
        env.wait(lambda: set(STABLE_ROUTES) <= set(env.kernel_routes()), 60.0,
                 "stable routes in leaf1's kernel")
        env.wait(lambda: _health(env) == "ok", 30.0, "agent health ok")
        soak = Soak(env, rng, tally)
        soak.faults = faults
        tally.on_first_violation = env.diagnostics
        soak.rebaseline()
        end = soak.started + minutes * 60
        next_fault = time.monotonic() + fault_every
        while time.monotonic() < end:
            soak.churn()
            soak.check()
            if time.monotonic() >= next_fault:
                soak.fault()
                next_fault = time.monotonic() + rng.uniform(0.5, 1.5) * fault_every
            time.sleep(0.5)
        tally.faults["(duration minutes)"] = round((time.monotonic() - soak.started) / 60)
        tally.churn["(api objects at end)"] = len(soak.churn_nodes) + len(soak.pods)
        log = env.agent_log.read_text(errors="replace").splitlines()
        tally.churn["(agent log lines)"] = len(log)
        tracebacks = sum("Traceback" in line for line in log)
        if tracebacks:
            tally.violate(soak.started, f"{tracebacks} tracebacks in the agent log")
    finally:
        if env.agent_log.exists():
            keep_log.write_bytes(env.agent_log.read_bytes())
            print(f"agent log kept in {keep_log}")
        subprocess.run(["umount", "-l", str(disk)], check=False)
        env.down()
    return tally


def summary(tally: Tally) -> dict[str, Any]:
    return {
        "faults": dict(tally.faults),
        "churn": dict(tally.churn),
        "checks": tally.checks,
        "converge_seconds": {k: {"n": len(v), "median": round(statistics.median(v), 2),
                                 "max": round(max(v), 2)} for k, v in tally.converge.items()},
        "recovery_seconds": {k: {"n": len(v), "median": round(statistics.median(v), 2),
                                          "max": round(max(v), 2)}
                                      for k, v in tally.recover.items()},
        "sigterm_exit_seconds_max": round(max(tally.stop_seconds), 2)
        if tally.stop_seconds else None,
        "rss_mib": {"first": round(tally.rss_kib[0] / 1024, 1),
                    "max": round(max(tally.rss_kib) / 1024, 1),
                    "last": round(tally.rss_kib[-1] / 1024, 1)} if tally.rss_kib else None,
        "violations": tally.violations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-every", type=float, default=25.0,
                        help="mean seconds between faults")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated fault kinds to draw from (default: all)")
    parser.add_argument("--agent-log", default="/var/tmp/kfa-soak-agent.log",
                        help="where the agent's log is kept after the lab is torn down")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: the soak builds network namespaces and mounts a tmpfs",
              file=sys.stderr)
        return 1
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    result = summary(run(args.minutes, args.seed, args.fault_every, faults,
                         Path(args.agent_log)))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
