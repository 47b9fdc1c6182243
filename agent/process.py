"""Running helper programs (vtysh, frr-reload.py, lldpcli) without blocking the event loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


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
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return CommandResult(argv, proc.returncode or 0, out.decode(errors="replace"),
                         err.decode(errors="replace"))
