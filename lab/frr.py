"""Start and stop one FRR instance per lab node, the way FRR's init scripts do it.

Each node runs its own daemons inside its network namespace with ``-N <pathspace>``. The
pathspace (FRR 8.4, checked on this machine) moves:

* sockets and pid files to ``/var/run/frr/<pathspace>/`` (must exist and belong to frr),
* the configuration folder to ``/etc/frr/<pathspace>/``: ``vtysh -N <ps>`` reads
  ``vtysh.conf`` there and ``vtysh -N <ps> -b`` loads ``frr.conf`` from there.

Daemons do NOT read the integrated ``frr.conf`` themselves; like ``frrinit.sh`` the harness
starts zebra, then the other enabled daemons (FRR's order from ``frrcommon.sh``), waits until
each answers on its vty socket, then pushes the config with ``vtysh -N <ps> -b``.

FRR takes its hostname from uname() and ignores ``hostname`` lines in an integrated config (a
long-standing quirk, FRR issue #7583). In a container the hostname is the node name; to keep
that (``show running-config``, BGP's hostname capability) each daemon is started in its own UTS
namespace whose hostname is the node name.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FRR_BIN = Path("/usr/lib/frr")
FRR_RUN = Path("/var/run/frr")
FRR_ETC = Path("/etc/frr")
VTYSH = "vtysh"
#: FRR's daemon order (frrcommon.sh DAEMONS); zebra first, staticd after the routing daemons.
DAEMON_ORDER = (
    "zebra bgpd ripd ripngd ospfd ospf6d isisd babeld pimd pim6d ldpd nhrpd eigrpd sharpd "
    "pbrd staticd bfdd fabricd vrrpd pathd"
).split()
#: Started whatever the daemons file says (frrcommon.sh does the same).
ALWAYS_ON = ("zebra", "staticd")
#: Profile for zebra when the daemons file sets none (frr-and-peers.md).
DEFAULT_ZEBRA_PROFILE = "datacenter"
DEFAULT_VTYSH_CONF = "service integrated-vtysh-config\n"


class FrrError(RuntimeError):
    """FRR could not be started, configured or stopped."""


@dataclass
class DaemonsFile:
    """What the harness takes from an FRR ``daemons`` file."""

    enabled: list[str]
    options: dict[str, list[str]] = field(default_factory=dict)
    profile: str | None = None

    @classmethod
    def parse(cls, text: str, source: str = "daemons") -> DaemonsFile:
        values: dict[str, str] = {}
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep or not name.replace("_", "").isalnum():
                raise FrrError(
                    f"{source}:{lineno}: {raw!r} is not a 'name=value' line; the harness reads "
                    "daemons files without running them through a shell"
                )
            try:
                words = shlex.split(value, comments=True)
            except ValueError as exc:
                raise FrrError(f"{source}:{lineno}: cannot parse {raw!r}: {exc}") from exc
            values[name] = " ".join(words)
        enabled = [
            d for d in DAEMON_ORDER if d in ALWAYS_ON or values.get(d, "no") not in ("", "no", "0")
        ]
        unknown = [
            d
            for d, v in values.items()
            if v not in ("", "no", "0")
            and d.isalnum()
            and d.endswith("d")
            and d not in DAEMON_ORDER
            and d not in ("watchfrr",)
        ]
        if unknown:
            raise FrrError(f"{source}: unknown daemons enabled: {', '.join(unknown)}")
        options = {d: shlex.split(values.get(f"{d}_options", "")) for d in enabled}
        return cls(enabled=enabled, options=options, profile=values.get("frr_profile") or None)


DEFAULT_DAEMONS = DaemonsFile(enabled=["zebra", "bgpd", "staticd"])


@dataclass
class FrrInstance:
    """The FRR daemons of one node: namespace ``netns``, pathspace ``pathspace``."""

    node: str
    netns: str
    pathspace: str
    frr_conf: Path | None
    daemons_file: Path | None
    vtysh_conf: Path | None
    log_dir: Path

    @property
    def run_dir(self) -> Path:
        return FRR_RUN / self.pathspace

    @property
    def conf_dir(self) -> Path:
        return FRR_ETC / self.pathspace

    @property
    def conf_path(self) -> Path:
        return self.conf_dir / "frr.conf"

    def pidfile(self, daemon: str) -> Path:
        return self.run_dir / f"{daemon}.pid"

    def daemons(self) -> DaemonsFile:
        if self.daemons_file is None:
            return DEFAULT_DAEMONS
        return DaemonsFile.parse(self.daemons_file.read_text(), str(self.daemons_file))

    # --- lifecycle --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the run and config folders and copy the node's files into the config one."""
        frr_uid, frr_gid = _frr_ids()
        for path, mode in ((self.run_dir, 0o755), (self.conf_dir, 0o750), (self.log_dir, 0o755)):
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, frr_uid, frr_gid)
            path.chmod(mode)
        files = {
            "frr.conf": self.frr_conf.read_text() if self.frr_conf else None,
            "daemons": self.daemons_file.read_text() if self.daemons_file else None,
            "vtysh.conf": self.vtysh_conf.read_text() if self.vtysh_conf else DEFAULT_VTYSH_CONF,
        }
        for name, text in files.items():
            if text is None:
                continue
            target = self.conf_dir / name
            target.write_text(text)
            os.chown(target, frr_uid, frr_gid)
            target.chmod(0o640)

    def start(self, timeout: float = 15.0) -> None:
        """Start every daemon (zebra first), wait until each answers, then load frr.conf."""
        deadline = time.monotonic() + timeout
        self.prepare()
        daemons = self.daemons()
        for daemon in daemons.enabled:
            self.start_daemon(daemon, daemons)
            if daemon == "zebra":
                self.wait_ready(["zebra"], deadline)
        self.wait_ready(daemons.enabled, deadline)
        self.load_config()

    def start_daemon(self, daemon: str, daemons: DaemonsFile | None = None) -> None:
        daemons = daemons or self.daemons()
        binary = FRR_BIN / daemon
        if not os.access(binary, os.X_OK):
            raise FrrError(f"{self.node}: {binary} is not installed")
        pidfile = self.pidfile(daemon)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        argv = [str(binary), "-d", "-N", self.pathspace]
        profile = daemons.profile or (DEFAULT_ZEBRA_PROFILE if daemon == "zebra" else None)
        if profile:
            argv += ["-F", profile]
        argv += ["-i", str(pidfile), "--log", f"file:{self.log_dir / daemon}.log"]
        argv += daemons.options.get(daemon, [])
        cmd = node_command(self.netns, self.node, argv)
        start_log = self.log_dir / f"{daemon}.start.log"
        with start_log.open("ab") as out:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        if proc.returncode != 0:
            raise FrrError(
                f"{self.node}: {daemon} failed to start (exit {proc.returncode}): "
                f"{shlex.join(argv)}\n{_tail(start_log)}{_tail(self.log_dir / f'{daemon}.log')}"
            )
        log.debug("%s: started %s", self.node, shlex.join(argv))

    def wait_ready(self, daemons: Iterable[str], deadline: float) -> None:
        """Poll until every daemon answers ``show version`` on its vty socket."""
        pending = list(daemons)
        last = ""
        while pending:
            daemon = pending[0]
            proc = self.vtysh_run(["-d", daemon, "-c", "show version"])
            if proc.returncode == 0:
                pending.pop(0)
                continue
            last = (proc.stdout + proc.stderr).strip()
            if time.monotonic() > deadline:
                alive = self.running()
                raise FrrError(
                    f"{self.node}: {daemon} does not answer on {self.run_dir} "
                    f"(running: {alive or 'none'}): {last}\n"
                    f"{_tail(self.log_dir / f'{daemon}.log')}"
                )
            time.sleep(0.05)

    def load_config(self, daemon: str | None = None) -> None:
        """``vtysh -N <ps> -b [-d daemon]``: apply the saved frr.conf, as frrinit.sh does."""
        if not self.conf_path.exists():
            return
        args = ["-b"] + (["-d", daemon] if daemon else [])
        proc = self.vtysh_run(args)
        if proc.returncode != 0:
            raise FrrError(
                f"{self.node}: loading {self.conf_path} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )

    def restart_daemon(self, daemon: str, timeout: float = 15.0, sig: int = signal.SIGKILL) -> int:
        """Kill one daemon and bring it back like watchfrr does: start it, then
        ``vtysh -b -d <daemon>`` (the SAVED frr.conf, not what ran before). Returns the new pid."""
        deadline = time.monotonic() + timeout
        pid = read_pid(self.pidfile(daemon))
        if pid is not None and self._owns(pid):
            stop_pids([pid], deadline=time.monotonic() + 5.0, sig=sig)
        self.start_daemon(daemon)
        self.wait_ready([daemon], deadline)
        self.load_config(daemon)
        new_pid = read_pid(self.pidfile(daemon))
        if new_pid is None:
            raise FrrError(f"{self.node}: {daemon} restarted but wrote no pid file")
        return new_pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every daemon of this pathspace (zebra last), then remove its folders."""
        pids = self.pids()
        zebra = pids.pop("zebra", None)
        deadline = time.monotonic() + timeout
        stop_pids(pids.values(), deadline=deadline)
        if zebra is not None:
            stop_pids([zebra], deadline=deadline)
        for path in (self.run_dir, self.conf_dir):
            shutil.rmtree(path, ignore_errors=True)

    # --- inspection -------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Live daemons of this pathspace: from pid files, and from /proc for any daemon
        whose pid file is gone (a crashed harness, a half-finished restart)."""
        found: dict[str, int] = {}
        if self.run_dir.is_dir():
            for pidfile in self.run_dir.glob("*.pid"):
                pid = read_pid(pidfile)
                if pid is not None and self._owns(pid):
                    found[pidfile.stem] = pid
        for pid, daemon in find_pathspace_daemons(self.pathspace):
            found.setdefault(daemon, pid)
            if found[daemon] != pid:
                found[f"{daemon}[{pid}]"] = pid
        return found

    def running(self) -> dict[str, int]:
        return self.pids()

    def _owns(self, pid: int) -> bool:
        argv = proc_argv(pid)
        return bool(argv) and _pathspace_of(argv) == self.pathspace and pid_alive(pid)

    def vtysh_run(self, args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            node_command(self.netns, self.node, [VTYSH, "-N", self.pathspace, *args]),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


# --- process helpers ---------------------------------------------------------------------------


def node_command(netns: str, hostname: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run as inside a container: in network namespace ``netns`` (``ip netns exec``,
    which also mounts that namespace's /sys) and in a UTS namespace whose hostname is the node
    name. Every step execs the next, so a Popen's pid is the pid of ``argv`` itself."""
    return [
        "ip", "netns", "exec", netns,
        "unshare", "--uts", "--",
        "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv,
    ]  # fmt: skip


def _frr_ids() -> tuple[int, int]:
    try:
        return pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
    except KeyError as exc:
        raise FrrError("user/group 'frr' missing: is the Debian frr package installed?") from exc


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def proc_argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def proc_starttime(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (a zombie still answers kill(pid, 0))."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pathspace_of(argv: Sequence[str]) -> str | None:
    if not argv or not argv[0].startswith(f"{FRR_BIN}/"):
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-N", "--pathspace"):
            return argv[i + 1]
    for arg in argv:
        if arg.startswith("--pathspace="):
            return arg.split("=", 1)[1]
    return None


def find_pathspace_daemons(pathspace: str) -> list[tuple[int, str]]:
    """(pid, daemon) of every live FRR daemon started with exactly ``-N <pathspace>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = proc_argv(pid)
        if _pathspace_of(argv) == pathspace and pid_alive(pid):
            found.append((pid, Path(argv[0]).name))
    return found


def stop_pids(pids: Iterable[int], *, deadline: float, sig: int = signal.SIGTERM) -> None:
    """Signal each pid, wait until all are gone, SIGKILL whatever is left at the deadline."""
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    _reap(pids)
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            for pid in pids:
                if pid_alive(pid):
                    log.warning("pid %d ignored signal %d, sending SIGKILL", pid, sig)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while any(pid_alive(p) for p in pids):
                if time.monotonic() > deadline:
                    raise FrrError(f"pids {[p for p in pids if pid_alive(p)]} survive SIGKILL")
                _reap(pids)
                time.sleep(0.02)
            return
        _reap(pids)
        time.sleep(0.02)


def _reap(pids: Iterable[int]) -> None:
    """Collect children among ``pids`` so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return f"--- {path} ---\n" + "\n".join(tail) + "\n" if tail else ""
