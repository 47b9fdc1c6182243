"""The shipped unit must be one systemd accepts, and keep the properties the README promises."""

from __future__ import annotations

import configparser
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


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of the machine image (package systemd)"
    # verify checks that ExecStart binaries exist; point them at one that does.
    text = UNIT.read_text().replace("/usr/local/bin/fabric-agent", shutil.which("true") or "")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if UNIT.name in line or "Unknown" in line]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr
