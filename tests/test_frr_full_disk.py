"""FRR's startup file on a full disk (a real tmpfs filled to the last byte): the apply fails
with the reason and the agent goes on; nothing escapes as an exception (it used to end the
agent). Needs root for the mount; without it the test fails with the reason (CI runs as root,
a skip would hide it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.apply.frr.reload import FrrApplier
from agent.config import FrrConfig

CONFIG = "frr defaults traditional\nhostname leaf1\n!\n"


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs: run the README's test command as root",
                    pytrace=False)
    mount = tmp_path / "etc-frr"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:  # ENOSPC: the disk is full
            pass
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_is_a_failed_apply_not_a_crash(full_disk: Path) -> None:
    applier = FrrApplier(FrrConfig(config_file=str(full_disk / "frr.conf")))
    result = await applier.apply_text(CONFIG)
    assert not result.ok and result.action == "failed"
    assert result.error is not None and "No space left on device" in result.error
    assert applier.last_applied is None  # nothing counts as applied
    assert sorted(os.listdir(full_disk)) == ["filler"]  # no frr.conf, no staging left over
