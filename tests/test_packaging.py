"""The installed agent must carry every subpackage and every template, not only what the source
tree happens to provide when tests run from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parent.parent


def test_wheel_contains_every_package_and_template(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("kube_fabric_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO / "agent").rglob("__init__.py"):
        rel = init.relative_to(REPO).as_posix()
        if "/templates/" not in rel:
            assert rel in names, f"{rel} missing from the wheel"
    for template in (REPO / "templates").rglob("*.j2"):
        assert f"agent/templates/{template.relative_to(REPO / 'templates').as_posix()}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "fabric-agent = agent.cli:main" in text and "fabricctl = agent.fabricctl:main" in text
