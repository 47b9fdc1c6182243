"""The shipped unit must be one systemd accepts, and keep the properties the README promises."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).parent.parent / "systemd" / "kube-fabric-agent.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_is_notify_with_watchdog_and_least_privilege() -> None:
    svc = _unit()["Service"]
    assert svc["Type"] == "notify"
    assert svc["Restart"] == "always"
    assert svc["WatchdogSec"]
    assert svc["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert svc["User"] != "root" and svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict"


def test_unit_runs_the_packaged_binary_once_configured() -> None:
    # The Debian package installs /usr/bin/fabric-agent and enables the unit before anyone has
    # written a configuration: without the condition it would fail and restart every 2 s.
    unit = _unit()
    assert unit["Unit"]["ConditionPathExists"] == "/etc/kube-fabric-agent/config.yaml"
    assert unit["Service"]["ExecStart"].startswith("/usr/bin/fabric-agent run ")


def _analyze() -> str:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of the machine image (package systemd)"
    return analyze


def _checkable_copy(tmp_path: Path) -> Path:
    # systemd-analyze checks that ExecStart binaries exist; point them at one that does.
    text = UNIT.read_text().replace("/usr/bin/fabric-agent", shutil.which("true") or "")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    return unit


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _checkable_copy(tmp_path)
    # --man=no: the man page in Documentation= comes with the package (tests/test_deb_package.py
    # verifies the installed unit with it); the source tree has none installed.
    res = subprocess.run([_analyze(), "verify", "--man=no", str(unit)], capture_output=True,
                         text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if UNIT.name in line or "Unknown" in line]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_syscall_filter_drops_privileged_and_resources_but_chown() -> None:
    # Several SystemCallFilter= lines edit one set in order (configparser keeps only the last).
    lines = [line.partition("=")[2] for line in UNIT.read_text().splitlines()
             if line.startswith("SystemCallFilter=")]
    assert lines == ["@system-service", "~@privileged @resources", "@chown"]


def test_systemd_analyze_security(tmp_path: Path) -> None:
    """systemd's own reading of the hardening (offline: no running systemd needed)."""
    unit = _checkable_copy(tmp_path)
    res = subprocess.run([_analyze(), "security", "--offline=yes", "--json=short", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    checks = {c["name"]: c["set"] for c in json.loads(res.stdout)}
    for name in ("ProtectProc=", "PrivateMounts=", "RemoveIPC=", "SystemCallFilter=~@resources",
                 "NoNewPrivileges=", "ProtectSystem=", "MemoryDenyWriteExecute="):
        assert checks[name], name
    # Not set, on purpose: it would hide /proc/net (headroom route counts) and /proc/sys
    # (fib_notify_on_flag_change), which the agent reads; the unit says so.
    assert not checks["ProcSubset="]
    # The overall exposure (x10) must not grow back: 2.2 before ProtectProc, PrivateMounts,
    # RemoveIPC and the narrower system call filter; 1.7 with them.
    res = subprocess.run([_analyze(), "security", "--offline=yes", "--threshold=17", str(unit)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-300:]
