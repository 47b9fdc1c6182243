"""Apply a rendered frr.conf the way frr-reload.py does, and confirm FRR took it.

Steps, each a reason a peer project got wrong (../shared/reference/frr-and-peers.md):
1. unchanged text since the last confirmed apply -> nothing to do (no reload, no flap);
2. `vtysh -C -f candidate` checks syntax before anything touches FRR;
3. `frr-reload.py --test` computes the delta; an empty delta is not reloaded;
4. `frr-reload.py --reload` applies only that delta (pathspace aware);
5. `frr-reload.py --test` again must come back empty: FRR took every line;
6. only then the candidate replaces the config file (atomic rename), so a restarted FRR loads
   the last config that was known good, never a half-applied one.
A failure after step 4 reloads the last good file and reports the error with FRR's words.
The same delta check, run periodically, finds drift (a restarted bgpd, a hand edit) and repairs it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import FrrConfig
from agent.process import CommandResult, run_command

log = logging.getLogger(__name__)

# Lines frr-reload.py always reports but that can never converge: under a pathspace FRR shows the
# system hostname whatever `hostname` says, and the version/defaults lines cannot be removed.
_ALWAYS_DIFFERENT = re.compile(r"^(no )?(hostname |frr version |frr defaults )")


@dataclass(frozen=True)
class Delta:
    to_delete: tuple[str, ...]
    to_add: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.to_delete and not self.to_add

    def summary(self, limit: int = 12) -> str:
        lines = [f"- {x}" for x in self.to_delete] + [f"+ {x}" for x in self.to_add]
        more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
        return "; ".join(lines[:limit]) + more


def parse_delta(output: str) -> Delta:
    """The 'Lines To Delete' / 'Lines To Add' sections of `frr-reload.py --test`."""
    sections: dict[str, list[str]] = {"delete": [], "add": []}
    current: str | None = None
    context: list[str] = []
    for raw in output.splitlines():
        if raw.startswith("Lines To Delete"):
            current, context = "delete", []
            continue
        if raw.startswith("Lines To Add"):
            current, context = "add", []
            continue
        if current is None or not raw.strip() or set(raw.strip()) == {"="}:
            continue
        if re.match(r"^\d{4}-\d\d-\d\d ", raw):  # a log line interleaved by frr-reload.py
            continue
        depth = len(raw) - len(raw.lstrip(" "))
        context = context[:depth] if depth else []
        line = raw.strip()
        # Nested lines only mean something with their context ("router bgp 65101" > ...).
        full = " > ".join([*context, line]) if depth else line
        if depth:
            context.append(line)
        else:
            context = [line]
        if not _ALWAYS_DIFFERENT.match(line):
            sections[current].append(full)
    # A context line is listed only because a nested line changed; keep only the leaves.
    def leaves(items: list[str]) -> tuple[str, ...]:
        return tuple(x for x in items if not any(y.startswith(x + " > ") for y in items))
    return Delta(leaves(sections["delete"]), leaves(sections["add"]))


@dataclass
class ApplyResult:
    ok: bool
    action: str  # "unchanged", "in-sync", "applied", "rejected", "failed", "repaired"
    started: float  # wall clock (time.time())
    duration: float
    delta: Delta = field(default_factory=lambda: Delta((), ()))
    error: str | None = None


class FrrApplyError(Exception):
    pass


class FrrApplier:
    """Owns FRR's configuration. Not reentrant: the caller serialises calls (ApplyLoop)."""

    def __init__(self, cfg: FrrConfig) -> None:
        self.cfg = cfg
        self.config_file = Path(cfg.config_file)
        self.last_applied: str | None = None
        self.last_result: ApplyResult | None = None

    def _pathspace(self) -> list[str]:
        return ["-N", self.cfg.pathspace] if self.cfg.pathspace else []

    async def _run(self, argv: list[str]) -> CommandResult:
        return await run_command(argv, self.cfg.command_timeout_seconds)

    async def check_syntax(self, path: Path) -> None:
        res = await self._run([self.cfg.vtysh, *self._pathspace(), "-C", "-f", str(path)])
        if res.returncode != 0:
            raise FrrApplyError(f"FRR rejects the rendered configuration: {res.output}")

    async def delta(self, path: Path) -> Delta:
        res = await self._run(
            [self.cfg.reload_script, "--test", *self._pathspace(), str(path)]
        )
        if res.returncode != 0:
            raise FrrApplyError(f"frr-reload.py --test failed: {_tail(res.output)}")
        return parse_delta(res.stdout + "\n" + res.stderr)

    async def _reload(self, path: Path) -> None:
        res = await self._run(
            [self.cfg.reload_script, "--reload", "--stdout", *self._pathspace(),
             str(path)]
        )
        if res.returncode != 0:
            raise FrrApplyError(f"frr-reload.py --reload failed: {_tail(res.output)}")

    async def apply(self, text: str) -> ApplyResult:
        started, t0 = time.time(), time.monotonic()
        if text == self.last_applied:
            return self._done(ApplyResult(True, "unchanged", started, 0.0))
        candidate = self._write_candidate(text)
        try:
            try:
                await self.check_syntax(candidate)
            except FrrApplyError as exc:
                return self._done(ApplyResult(False, "rejected", started,
                                              time.monotonic() - t0, error=str(exc)))
            try:
                before = await self.delta(candidate)
                if not before.empty:
                    await self._reload(candidate)
                    after = await self.delta(candidate)
                    if not after.empty:
                        raise FrrApplyError(f"FRR did not take: {after.summary()}")
            except (FrrApplyError, TimeoutError) as exc:
                await self._rollback()
                return self._done(ApplyResult(False, "failed", started, time.monotonic() - t0,
                                              error=str(exc) or "timed out"))
            _atomic_replace(candidate, self.config_file)
            candidate = None
            self.last_applied = text
            action = "applied" if not before.empty else "in-sync"
            return self._done(ApplyResult(True, action, started, time.monotonic() - t0, before))
        finally:
            if candidate is not None:
                candidate.unlink(missing_ok=True)

    async def resync(self) -> ApplyResult | None:
        """Repair drift between the last applied config and what FRR runs; None if in sync."""
        if self.last_applied is None:
            return None
        started, t0 = time.time(), time.monotonic()
        try:
            drift = await self.delta(self.config_file)
            if drift.empty:
                return None
            log.warning("FRR drifted from the applied config (%s); repairing", drift.summary())
            await self._reload(self.config_file)
            after = await self.delta(self.config_file)
            if not after.empty:
                raise FrrApplyError(f"FRR did not take: {after.summary()}")
        except (FrrApplyError, TimeoutError) as exc:
            return self._done(ApplyResult(False, "failed", started, time.monotonic() - t0,
                                          error=str(exc) or "timed out"))
        return self._done(ApplyResult(True, "repaired", started, time.monotonic() - t0, drift))

    async def _rollback(self) -> None:
        if self.last_applied is None or not self.config_file.exists():
            return
        try:
            await self._reload(self.config_file)
        except (FrrApplyError, TimeoutError) as exc:
            log.error("rollback to the last good FRR configuration failed: %s", exc)

    def _write_candidate(self, text: str) -> Path:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".kfa-", suffix=".conf", dir=self.config_file.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o640)
        return Path(name)

    def _done(self, result: ApplyResult) -> ApplyResult:
        if result.action != "unchanged":
            self.last_result = result
            level = logging.INFO if result.ok else logging.ERROR
            log.log(level, "FRR %s in %.2fs%s", result.action, result.duration,
                    f": {result.error}" if result.error else "")
        return result


def _atomic_replace(src: Path, dst: Path) -> None:
    """rename(2) over the old file, then fsync the directory so the rename survives power loss."""
    try:
        st = dst.stat()
        os.chown(src, st.st_uid, st.st_gid)  # FRR reads it as user frr
    except FileNotFoundError:
        pass
    except PermissionError:
        log.debug("cannot keep ownership of %s", dst)
    os.replace(src, dst)
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
