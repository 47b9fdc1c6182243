"""Helpers run with a deadline: a timeout kills the helper's whole process group (no
grandchild left running or holding pipes), and killing one that already exited is no error."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from agent.process import kill_group, run_command


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for its new parent to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_timeout_kills_the_helpers_children_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        # Like frr-reload.py running vtysh: a grandchild that would outlive its parent.
        await run_command(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], 0.5)
    assert time.monotonic() - started < 5.0
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5.0
    while not gone(child):
        assert time.monotonic() < deadline, "the helper's child is still running"
        await asyncio.sleep(0.05)


async def test_killing_a_helper_that_already_exited_is_no_error() -> None:
    result = await run_command(["true"], 5.0)
    assert result.returncode == 0
    proc = await asyncio.create_subprocess_exec("true", start_new_session=True)
    await proc.wait()
    kill_group(proc.pid)  # raised ProcessLookupError before
    assert os.getpid() > 0
