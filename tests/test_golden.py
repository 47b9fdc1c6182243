"""Golden files: each tests/golden/<case>/ holds config.yaml + cluster.yaml (input: Nodes, and
Services and EndpointSlices where a case has them) and frr.conf + refusals.txt (expected), planned
as `fabric-agent render` plans them. The rendered config must match byte for byte, and FRR itself
(`vtysh -C -f`) must accept every expected frr.conf. UPDATE_GOLDEN=1 rewrites the expectations;
review the diff before committing it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.apply.frr.render import render_frr
from agent.cli import plan_cluster_file
from agent.config import load_config

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.yaml").exists())


def _render(case: Path) -> tuple[str, str]:
    cfg = load_config(case / "config.yaml")
    result = plan_cluster_file(cfg, str(case / "cluster.yaml"))
    refusals = "".join(f"{r}\n" for r in result.refusals)
    return render_frr(result.frr), refusals


@pytest.mark.parametrize("name", CASES)
def test_rendered_config_matches_golden(name: str) -> None:
    case = GOLDEN / name
    conf, refusals = _render(case)
    if os.environ.get("UPDATE_GOLDEN"):
        (case / "frr.conf").write_text(conf)
        (case / "refusals.txt").write_text(refusals)
    assert conf == (case / "frr.conf").read_text()
    assert refusals == (case / "refusals.txt").read_text()


@pytest.mark.parametrize("name", CASES)
def test_frr_accepts_golden(name: str) -> None:
    vtysh = shutil.which("vtysh")
    assert vtysh, "vtysh not found: the test command installs frr (see README)"
    res = subprocess.run([vtysh, "-C", "-f", str(GOLDEN / name / "frr.conf")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_case_is_complete() -> None:
    assert len(CASES) >= 5
    for name in CASES:
        for f in ("cluster.yaml", "frr.conf", "refusals.txt"):
            assert (GOLDEN / name / f).exists(), f"{name}/{f} missing"
