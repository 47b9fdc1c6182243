"""The installed agent must carry every subpackage and every template, not only what the source
tree happens to provide when tests run from it, and building it must not warn."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parent.parent
TEMPLATES = REPO / "agent" / "apply" / "frr" / "templates"


def test_wheel_contains_every_package_and_template(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
                          str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    output = res.stdout + res.stderr
    # setuptools warns about package data it had to guess (e.g. a folder of templates without
    # __init__.py); such a warning means the next setuptools may leave the files out.
    assert "Warning" not in output, output[-3000:]
    (wheel,) = tmp_path.glob("kube_fabric_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (REPO / "agent").rglob("__init__.py"):
        rel = init.relative_to(REPO).as_posix()
        assert rel in names, f"{rel} missing from the wheel"
    templates = list(TEMPLATES.rglob("*.j2"))
    assert templates
    for template in templates:
        assert template.relative_to(REPO).as_posix() in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "fabric-agent = agent.cli:main" in text and "fabricctl = agent.fabricctl:main" in text
