"""Realize a containerlab topology in network namespaces (no container runtime needed).

Mapping (containerlab.md): node -> namespace ``<prefix>-<node>`` (prefix defaults to the lab
name); link -> veth pair with the endpoint names, MAC and MTU (containerlab's default 9500);
``exec`` -> run inside the namespace in order, split into words as containerlab does; FRR binds
-> one FRR instance per node with pathspace = namespace name (lab/frr.py).

State lives in ``/run/kfa-lab/<prefix>/`` (namespaces created, processes spawned with their
start times) so that ``down()`` -- from this process, another one, or after a crash -- stops
exactly what the lab started. Logs (FRR daemons, spawned processes) go to
``/var/tmp/kfa-lab/<prefix>/`` and survive ``down()`` for post-mortems; ``up()`` clears them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import clab
from .frr import FrrInstance, node_command, pid_alive, proc_argv, proc_starttime, stop_pids
from .topotest import wait_until

log = logging.getLogger(__name__)

STATE_ROOT = Path("/run/kfa-lab")
LOG_ROOT = Path("/var/tmp/kfa-lab")
NETNS_DIR = Path("/var/run/netns")


class LabError(RuntimeError):
    """The lab could not be built, changed or torn down."""


class LabCommandError(subprocess.CalledProcessError):
    """A command run by the lab failed; ``str()`` includes its output."""

    def __str__(self) -> str:
        out = "".join(x for x in (self.stdout, self.stderr) if isinstance(x, str)).strip()
        return f"{super().__str__()}\n{out}" if out else super().__str__()


@dataclass(frozen=True)
class Spawned:
    pid: int
    node: str | None
    argv: list[str]
    starttime: int | None


class Lab:
    """A topology file realized in network namespaces; see the module docstring.

    Use as a context manager so a failing test still tears everything down::

        with Lab.from_file("containerlab/leaf-servers.clab.yml") as lab:
            lab.vtysh("srv1", "show bgp summary")
    """

    def __init__(
        self, topology: clab.Topology, prefix: str | None = None, lock_timeout: float = 300.0
    ) -> None:
        self.topology = topology
        self.prefix = prefix or topology.name
        if not clab._NAME_RE.match(self.prefix):
            raise LabError(f"prefix {self.prefix!r} may only hold letters, digits, '-' and '_'")
        #: Current cabling: starts as the file's links, changed by relink().
        self.links: list[clab.Link] = list(topology.links)
        self.state_dir = STATE_ROOT / self.prefix
        self.log_dir = LOG_ROOT / self.prefix
        self._procs: dict[int, subprocess.Popen] = {}
        self.up_seconds: float | None = None
        #: How long up() waits for another live process that holds this lab (same prefix).
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, prefix: str | None = None, lock_timeout: float = 300.0
    ) -> Lab:
        return cls(clab.load(path), prefix=prefix, lock_timeout=lock_timeout)

    # --- names ------------------------------------------------------------------------------

    def _node(self, node: str) -> clab.Node:
        try:
            return self.topology.nodes[node]
        except KeyError:
            raise LabError(
                f"unknown node {node!r} (nodes: {', '.join(self.topology.nodes)})"
            ) from None

    def ns(self, node: str) -> str:
        """Network namespace of ``node``."""
        self._node(node)
        return f"{self.prefix}-{node}"

    def node_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside ``node`` as a container would: in its
        network namespace, with the node name as hostname (FRR and vtysh take the hostname
        from uname). For tests that start their own processes."""
        return node_command(self.ns(node), node, argv)

    def pathspace(self, node: str) -> str:
        """FRR pathspace (``-N``) of ``node``: the namespace name."""
        return self.ns(node)

    def frr(self, node: str) -> FrrInstance:
        spec = self._node(node)
        files = spec.frr
        return FrrInstance(
            node=node,
            netns=self.ns(node),
            pathspace=self.pathspace(node),
            frr_conf=files.frr_conf,
            daemons_file=files.daemons,
            vtysh_conf=files.vtysh_conf,
            log_dir=self.log_dir / node,
        )

    def frr_conf_path(self, node: str) -> Path:
        """Where FRR of ``node`` keeps its integrated config (``/etc/frr/<pathspace>/frr.conf``);
        ``vtysh -N <ps> -b``, ``write memory`` and a watchfrr-style restart use this file."""
        return self.frr(node).conf_path

    @property
    def frr_nodes(self) -> list[str]:
        return [name for name, node in self.topology.nodes.items() if node.runs_frr]

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()  # up() tears down what it built if it fails

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> Lab:
        """Remove leftovers of this lab, then build it: namespaces, links, exec, FRR.

        A Lab object holds an exclusive lock on its prefix from up() to down(), so a second live
        process using the same prefix waits (``lock_timeout``) instead of tearing down a lab in
        use; a crashed holder's lock is gone with it, and its leftovers are removed here."""
        _require_root()
        started = time.monotonic()
        for note in self.topology.notes:
            log.info("lab %s: %s", self.prefix, note)
        self._lock(self.lock_timeout)
        try:
            self._teardown()
        except BaseException:
            self._unlock()
            raise
        shutil.rmtree(self.log_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "spawned").mkdir(parents=True, exist_ok=True)
        self._write_state()
        try:
            for node in self.topology.nodes:
                self._ip("netns", "add", self.ns(node))
                self._ip("-n", self.ns(node), "link", "set", "dev", "lo", "up")
            for link in self.links:
                self._add_veth(link)
            for name, node in self.topology.nodes.items():
                self._run_exec(name, node)
            frr_nodes = self.frr_nodes
            if frr_nodes:
                with ThreadPoolExecutor(max_workers=len(frr_nodes)) as pool:
                    for future in [pool.submit(self.frr(n).start) for n in frr_nodes]:
                        future.result()
        except BaseException:
            log.error("lab %s: up() failed, tearing down; logs in %s", self.prefix, self.log_dir)
            try:
                self._teardown()
            except Exception:
                log.exception("lab %s: teardown after the failed up() failed too", self.prefix)
            finally:
                self._unlock()
            raise
        self.up_seconds = time.monotonic() - started
        log.info("lab %s up in %.2f s", self.prefix, self.up_seconds)
        return self

    def down(self, timeout: float = 10.0) -> None:
        """Stop everything this lab started and delete its namespaces. Idempotent; works after
        a crash and from another process (it reads the state directory and FRR's pid files, not
        only memory). Refuses while another live process holds the lab (see up())."""
        _require_root()
        self._lock(0.0)
        try:
            self._teardown(timeout)
        finally:
            self._unlock()

    def _lock(self, timeout: float) -> None:
        if self._lock_fd is not None:
            return
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        path = STATE_ROOT / f"{self.prefix}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        deadline = time.monotonic() + timeout
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = path.read_text().strip() or "?"
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LabError(
                        f"lab {self.prefix} is in use by pid {holder} (lock {path}); use another "
                        "prefix, or wait for it to finish"
                    ) from None
                if not logged:
                    log.warning("lab %s is in use by pid %s; waiting", self.prefix, holder)
                    logged = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._lock_fd, 0)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None

    def _teardown(self, timeout: float = 10.0) -> None:
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        state = self._read_state()
        prefix_nodes = set(self.topology.nodes) | set(state.get("nodes", []))
        namespaces = [f"{self.prefix}-{n}" for n in sorted(prefix_nodes)]

        # 1. Processes spawned by the lab (tracked with their start time against pid reuse).
        for sp in self._read_spawned():
            if not pid_alive(sp.pid) or proc_starttime(sp.pid) != sp.starttime:
                continue
            # The spawned process leads its own session: stop its whole process group (socat
            # and other forking servers leave children otherwise).
            pids = [sp.pid, *_group_members(sp.pid)]
            try:
                stop_pids(pids, deadline=deadline)
            except Exception as exc:
                errors.append(f"spawned pid {sp.pid} ({shlex.join(sp.argv)}): {exc}")
        for proc in self._procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        self._procs.clear()

        # 2. FRR daemons of every pathspace of this lab.
        for ns in namespaces:
            node = ns[len(self.prefix) + 1 :]
            inst = (
                self.frr(node)
                if node in self.topology.nodes
                else FrrInstance(node, ns, ns, None, None, None, self.log_dir / node)
            )
            try:
                inst.stop(timeout=max(1.0, deadline - time.monotonic()))
            except Exception as exc:
                errors.append(f"FRR {ns}: {exc}")

        # 3. Anything else still living in the namespaces (an agent a test forgot to stop).
        existing = set(self._netns_list())
        for ns in namespaces:
            if ns not in existing:
                continue
            pids = self._netns_pids(ns)
            if pids:
                log.warning(
                    "lab %s: stopping leftover processes in %s: %s",
                    self.prefix,
                    ns,
                    ", ".join(f"{p} ({shlex.join(proc_argv(p))})" for p in pids),
                )
                try:
                    stop_pids(pids, deadline=max(deadline, time.monotonic() + 2.0))
                except Exception as exc:
                    errors.append(f"processes in {ns}: {exc}")
            proc = subprocess.run(
                ["ip", "netns", "del", ns], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                errors.append(f"ip netns del {ns}: {proc.stderr.strip()}")

        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.links = list(self.topology.links)
        if errors:
            raise LabError(f"lab {self.prefix}: down() left things behind:\n" + "\n".join(errors))

    # --- running things in nodes ------------------------------------------------------------

    def exec(
        self,
        node: str,
        argv: Sequence[str] | str,
        check: bool = True,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = 60.0,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node`` (its namespace, hostname and topology ``env``, plus ``env``)
        and capture its output; a string is split into words like containerlab's exec."""
        args = shlex.split(argv) if isinstance(argv, str) else list(argv)
        cmd = self.node_argv(node, args)
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            input=input,
            env={**os.environ, **self._node(node).env, **(env or {})},
        )
        if check and proc.returncode != 0:
            raise LabCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def spawn(self, node: str | None, argv: Sequence[str], **popen_kw: Any) -> subprocess.Popen:
        """Start a long-running process in ``node``'s namespace (``None``: the host's). It runs
        in its own session and is stopped, with its process group, by ``down()``; its output goes
        to ``<log_dir>/spawned-<pid>.log`` unless ``stdout``/``stderr`` are given."""
        cmd = list(argv) if node is None else self.node_argv(node, argv)
        if node is not None:  # the node's topology env, under what the caller passes
            node_env, base = self._node(node).env, popen_kw.get("env")
            popen_kw["env"] = {**os.environ, **node_env} if base is None else {**node_env, **base}
        popen_kw.setdefault("start_new_session", True)
        popen_kw.setdefault("stdin", subprocess.DEVNULL)
        log_file = None
        if "stdout" not in popen_kw:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"spawned-{time.time_ns()}.log"
            log_file = log_path.open("ab")
            popen_kw["stdout"] = log_file
            popen_kw.setdefault("stderr", subprocess.STDOUT)
        try:
            proc = subprocess.Popen(cmd, **popen_kw)
        finally:
            if log_file is not None:
                log_file.close()
        if log_file is not None:
            log_path.rename(self.log_dir / f"spawned-{proc.pid}.log")
        self._procs[proc.pid] = proc
        record = {
            "pid": proc.pid,
            "node": node,
            "argv": cmd,
            "starttime": proc_starttime(proc.pid),
        }
        spawned_dir = self.state_dir / "spawned"
        spawned_dir.mkdir(parents=True, exist_ok=True)
        (spawned_dir / f"{proc.pid}.json").write_text(json.dumps(record))
        return proc

    def forward(
        self, node: str, listen: str, target: str
    ) -> tuple[subprocess.Popen, subprocess.Popen]:
        """Let processes in ``node`` reach a TCP service of the host (e.g. a Kubernetes API test
        server on 127.0.0.1): ``listen`` (``addr:port`` inside the node) is relayed to ``target``
        (``addr:port`` on the host) through a unix socket, with two tracked socat processes."""
        if shutil.which("socat") is None:
            raise LabError("socat is not installed (apt-get install -y socat)")
        laddr, _, lport = listen.rpartition(":")
        taddr, _, tport = target.rpartition(":")
        sock = self.state_dir / f"fwd-{node}-{lport}.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        host_side = self.spawn(
            None, ["socat", f"UNIX-LISTEN:{sock},fork,unlink-early", f"TCP:{taddr}:{tport}"]
        )
        wait_until(sock.exists, 5.0, f"socat to listen on {sock}", interval=0.02)
        node_side = self.spawn(
            node,
            [
                "socat",
                f"TCP-LISTEN:{lport},bind={laddr or '127.0.0.1'},fork,reuseaddr",
                f"UNIX-CONNECT:{sock}",
            ],
        )
        wait_until(
            lambda: f":{int(lport):04X} " in self.exec(node, ["cat", "/proc/net/tcp"]).stdout,
            5.0,
            f"socat to listen on {listen} in {node}",
            interval=0.02,
        )
        return host_side, node_side

    def vtysh(self, node: str, *commands: str) -> str:
        """Run vtysh commands against ``node``'s FRR; raises LabCommandError if one fails."""
        if not commands:
            raise ValueError("vtysh() needs at least one command")
        args = ["vtysh", "-N", self.pathspace(node)]
        for command in commands:
            args += ["-c", command]
        cmd = self.node_argv(node, args)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise LabCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc.stdout

    def vtysh_json(self, node: str, command: str) -> Any:
        """Run one ``... json`` vtysh command and parse its output. A command that several
        daemons answer (``show ip prefix-list ... json``: zebra and bgpd) prints one object per
        daemon; their keys (``ZEBRA``, ``BGP``) are merged into one object."""
        out = self.vtysh(node, command)
        try:
            return _json_documents(out)
        except (json.JSONDecodeError, TypeError) as exc:
            raise LabError(f"{node}: {command!r} did not return JSON: {out[:500]!r}") from exc

    def ip_json(self, node: str, *args: str) -> Any:
        """``ip -j <args>`` inside ``node``, parsed (e.g. ``lab.ip_json("leaf1", "route")``)."""
        out = self.exec(node, ["ip", "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    def frr_restart(self, node: str, daemon: str, sig: int = signal.SIGKILL) -> int:
        """Kill one FRR daemon of ``node`` (SIGKILL: a crash) and bring it back as watchfrr
        would, loading the saved frr.conf into it. Returns the new pid."""
        return self.frr(node).restart_daemon(daemon, sig=sig)

    # --- cabling ----------------------------------------------------------------------------

    def relink(self, old: str, new: str) -> clab.Link:
        """Recable: unplug the cable at endpoint ``old`` (``node:iface``) and plug its far end
        into ``new``. The veth at ``old`` is deleted (so ``old`` disappears from its node, as an
        interface no link creates does in containerlab); the far end is recreated with its name,
        MAC and MTU and both ends are brought up. Example: move srv2 from leaf1:swp2 to
        leaf1:swp4 with ``relink("leaf1:swp2", "leaf1:swp4")``."""
        old_ep = _endpoint(old)
        new_ep = _endpoint(new)
        self._node(new_ep.node)
        clab.check_ifname(new_ep.iface, f"relink to {new}")
        link = next((lk for lk in self.links if old_ep.key in (lk.a.key, lk.b.key)), None)
        if link is None:
            raise LabError(f"relink: no link at {old} (links: {', '.join(map(str, self.links))})")
        far = link.peer(old_ep.key)
        if any(new_ep.key in (lk.a.key, lk.b.key) for lk in self.links if lk is not link):
            raise LabError(f"relink: {new} is already cabled")
        if self._iface_exists(new_ep.node, new_ep.iface) and new_ep.key != old_ep.key:
            raise LabError(f"relink: {new_ep.iface} already exists in {new_ep.node}")
        far_mac = far.mac or self._iface_mac(far.node, far.iface)
        self._ip("-n", self.ns(old_ep.node), "link", "del", "dev", old_ep.iface)
        new_link = clab.Link(
            a=clab.Endpoint(far.node, far.iface, far_mac),
            b=clab.Endpoint(new_ep.node, new_ep.iface, None),
            mtu=link.mtu,
        )
        self._add_veth(new_link)
        self.links = [new_link if lk is link else lk for lk in self.links]
        return new_link

    # --- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Namespaces, links, FRR daemons and BGP summary of each node (for humans and CLI)."""
        existing = set(self._netns_list())
        nodes: dict[str, Any] = {}
        for node in self.topology.nodes:
            ns = self.ns(node)
            entry: dict[str, Any] = {"namespace": ns, "exists": ns in existing}
            if ns in existing:
                entry["links"] = [
                    {
                        "ifname": lk.get("ifname"),
                        "state": lk.get("operstate"),
                        "mtu": lk.get("mtu"),
                        "mac": lk.get("address"),
                    }
                    for lk in self.ip_json(node, "link", "show")
                    if lk.get("ifname") != "lo"
                ]
            inst = self.frr(node)
            entry["frr"] = inst.pids() if self.topology.nodes[node].runs_frr else None
            if entry["frr"]:
                try:
                    entry["bgp_summary"] = self.vtysh(node, "show bgp summary")
                except Exception as exc:
                    entry["bgp_summary"] = f"(error: {exc})"
            nodes[node] = entry
        return {"lab": self.prefix, "state_dir": str(self.state_dir), "nodes": nodes}

    # --- internals --------------------------------------------------------------------------

    def _ip(self, *args: str) -> None:
        cmd = ["ip", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LabCommandError(proc.returncode, cmd, proc.stdout, proc.stderr)

    def _add_veth(self, link: clab.Link) -> None:
        a, b = link.a, link.b
        args = ["link", "add", "name", a.iface]
        if a.mac:
            args += ["address", a.mac]
        args += ["mtu", str(link.mtu), "netns", self.ns(a.node), "type", "veth", "peer"]
        args += ["name", b.iface]
        if b.mac:
            args += ["address", b.mac]
        args += ["mtu", str(link.mtu), "netns", self.ns(b.node)]
        self._ip(*args)
        for ep in (a, b):
            self._ip("-n", self.ns(ep.node), "link", "set", "dev", ep.iface, "up")

    def _run_exec(self, name: str, node: clab.Node) -> None:
        for key, value in node.sysctls.items():
            self.exec(name, ["sysctl", "-w", f"{key}={value}"])
        for argv in node.exec_argv:
            proc = self.exec(name, argv, check=False)
            if proc.returncode != 0:
                raise LabError(
                    f"{name}: exec {shlex.join(argv)!r} failed (exit {proc.returncode}): "
                    f"{(proc.stdout + proc.stderr).strip()}"
                )

    def _iface_exists(self, node: str, iface: str) -> bool:
        return any(lk.get("ifname") == iface for lk in self.ip_json(node, "link", "show"))

    def _iface_mac(self, node: str, iface: str) -> str | None:
        for lk in self.ip_json(node, "link", "show", "dev", iface):
            return lk.get("address")
        return None

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "prefix": self.prefix,
            "topology": str(self.topology.path) if self.topology.path else None,
            "nodes": list(self.topology.nodes),
            "pid": os.getpid(),
            "started": time.time(),
        }
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2))

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def _read_spawned(self) -> list[Spawned]:
        out = []
        for path in sorted((self.state_dir / "spawned").glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                out.append(Spawned(rec["pid"], rec.get("node"), rec["argv"], rec["starttime"]))
            except (OSError, ValueError, KeyError):
                log.warning("unreadable spawn record %s", path)
        return out

    @staticmethod
    def _netns_list() -> list[str]:
        proc = subprocess.run(
            ["ip", "-j", "netns", "list"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            return []
        return [entry["name"] for entry in json.loads(proc.stdout)]

    @staticmethod
    def _netns_pids(ns: str) -> list[int]:
        proc = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        )
        return [int(p) for p in proc.stdout.split() if p.isdigit() and pid_alive(int(p))]


# --- module helpers ----------------------------------------------------------------------------


def _json_documents(text: str) -> Any:
    """One JSON document, or several objects one after another merged into one object."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text) and docs:
            break
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
    if len(docs) == 1:
        return docs[0]
    merged: dict[str, Any] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            raise TypeError(f"several JSON documents, not all objects: {type(doc).__name__}")
        merged.update(doc)
    return merged


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth pairs, FRR daemons)")


def _endpoint(text: str) -> clab.Endpoint:
    node, sep, iface = text.partition(":")
    if not sep or not node or not iface:
        raise LabError(f"{text!r} is not 'node:interface'")
    return clab.Endpoint(node, iface)


def _group_members(pgid: int) -> list[int]:
    """Live processes (other than ``pgid`` itself) in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pgid:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and pid_alive(int(entry.name)):
            members.append(int(entry.name))
    return members
