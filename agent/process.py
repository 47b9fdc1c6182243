"""Running helper programs (vtysh, frr-reload.py, lldpcli, devlink) without blocking the event
loop, each in a process group of its own: on a timeout or a cancellation the whole group is
killed, so no grandchild (frr-reload.py runs vtysh) is left holding pipes or running on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

# After a kill, how long to wait for the helper to be reaped before giving up on it.
REAP_SECONDS = 5.0


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


async def run_command(argv: list[str], limit_seconds: float) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group: see kill_group()
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except (TimeoutError, asyncio.CancelledError):
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), REAP_SECONDS)
        raise
    return CommandResult(argv, proc.returncode or 0, out.decode(errors="replace"),
                         err.decode(errors="replace"))


def kill_group(pgid: int) -> None:
    """SIGKILL a helper's process group. A helper that already exited (its group with it) is
    not an error: killing it raised ProcessLookupError, which ended the loop that ran it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
