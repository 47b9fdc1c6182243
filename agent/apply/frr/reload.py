"""Apply a rendered frr.conf the way frr-reload.py does, and confirm FRR took it.

A change after a confirmed apply first takes the fast path (agent.apply.frr.fast): after the
syntax check (step 2), frr-reload.py's diff runs in-process against the last confirmed text, the
delta is sent in one vtysh call and one `show running-config` confirms it; a miss there, and
every first apply and drift repair, takes the full path below. Its steps, each a mistake seen
in other projects that drive FRR by reloading it (MetalLB, frr-k8s):
1. unchanged text since the last confirmed apply -> nothing to do (no reload, no flap);
2. `vtysh -C -f candidate` checks syntax before anything touches FRR;
3. `frr-reload.py --test` computes the delta; an empty delta is not reloaded;
4. `frr-reload.py --reload` applies only that delta (pathspace aware);
5. `frr-reload.py --test` again must come back empty: FRR took every line;
6. only then the candidate replaces the config file (atomic rename), so a restarted FRR loads
   the last config that was known good, never a half-applied one.
A failure after step 4 reloads the last good file and reports the error with FRR's words.
A candidate FRR refuses (step 2, or lines step 5 finds not taken) is narrowed to the nodes whose
lines it refuses: those keep what was programmed and are reported refused, the others' changes
apply (agent.apply.frr.narrow). Each helper has its own timeout (agent.apply.frr.timeouts).
The same delta check, run periodically, finds drift (a restarted bgpd, a hand edit) and repairs it.

frr-reload.py ends every --reload with `vtysh write` (FRR's running config saved over its startup
file) unless the file it was given is `<confdir>/frr.conf`; under a pathspace it never is. A write
while a daemon restarts saves a config without that daemon's part, and the next restart loads it:
a bgpd killed during a repair came back with no `router bgp` at all. So frr-reload.py only ever
sees a staged copy named frr.conf in a private folder given as --confdir, and never writes; the
agent alone replaces the startup file, and only with a confirmed config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from agent.apply.contract import ApplyResult, NothingOfItsOwn, TableCounts
from agent.apply.frr import library, narrow
from agent.apply.frr.delta import Delta, parse_delta
from agent.apply.frr.fast import FastPath, Miss
from agent.apply.frr.narrow import Complaint
from agent.apply.frr.render import UnsafeValue, render_frr
from agent.apply.frr.timeouts import Timeouts
from agent.config import FrrConfig
from agent.plan.model import FrrDesired
from agent.process import CommandResult, run_command

log = logging.getLogger(__name__)

# Where FRR keeps vtysh.conf (Debian, SONiC, Cumulus); with a pathspace in a folder of its name.
FRR_SYSCONFDIR = Path("/etc/frr")
# Drift must outlive this before it is repaired: a daemon that watchfrr restarts reloads the
# startup file itself within a second or two, and a repair racing that reload only adds churn.
DRIFT_SETTLE_SECONDS = 2.0
# Narrowing re-checks a candidate with the refused peers put back; FRR's parser reports every bad
# line in one pass, so a second round is only for what the first one could not see.
NARROW_ROUNDS = 2
# When FRR names no line, changed peers are checked one at a time (one `vtysh -C` each, ~50 ms):
# beyond this many changed at once, the apply fails as before rather than take seconds.
ELIMINATION_MAX = 16


class FrrApplyError(Exception):
    pass


class FrrRejected(FrrApplyError):
    """FRR's syntax check refused the candidate; `output` is what it said."""

    def __init__(self, output: str) -> None:
        super().__init__(f"FRR rejects the rendered configuration: {output}")
        self.output = output


@dataclass(frozen=True)
class Objection:
    """Why FRR refused a candidate, line by line: from the syntax check (`checked`: the
    candidate can be checked again cheaply, so elimination may be tried) or from a reload that
    left lines not taken."""

    complaints: list[Complaint]
    checked: bool


def _result(ok: bool, action: str, started: float, t0: float, delta: Delta | None = None,
            error: str | None = None, recheck_after: float | None = None) -> ApplyResult:
    """An ApplyResult of the FRR applier: its counts are the lines changed."""
    counts, details = {}, {}
    if delta is not None and not delta.empty:
        counts = {"lines": TableCounts(added=len(delta.to_add), removed=len(delta.to_delete))}
        details = {"delta": (*(f"- {x}" for x in delta.to_delete),
                             *(f"+ {x}" for x in delta.to_add))}
    return ApplyResult("frr", ok, action, started, time.monotonic() - t0, counts, error, details,
                       recheck_after)


class FrrApplier(NothingOfItsOwn):
    """Owns FRR's configuration (agent.apply.contract). Not reentrant: the reconcile loop
    serialises calls. FRR's sessions are observed by BgpObserver, not here."""

    name = "frr"

    def __init__(self, cfg: FrrConfig, drift_settle_seconds: float = DRIFT_SETTLE_SECONDS,
                 timeouts: Timeouts | None = None, fast: bool = True) -> None:
        self.cfg = cfg
        self.config_file = Path(cfg.config_file)
        self.drift_settle_seconds = drift_settle_seconds
        self.timeouts = timeouts or Timeouts(ceiling=cfg.command_timeout_seconds)
        self.last_applied: str | None = None
        self._suspected: Delta | None = None  # drift seen by resync(), waiting to settle
        # The FrrDesired FRR was last confirmed to run (narrowed, if it was): a refused peer is
        # put back as it is here. None until apply() confirms one.
        self.confirmed: FrrDesired | None = None
        # Nodes whose desired lines FRR refused, with its words, while last_applied is a
        # narrowed candidate; every result of apply() carries them (the status lists them).
        self.refused: dict[str, str] = {}
        # (rendered desired, the narrowed text applied for it): the same desired again is
        # "unchanged", not another round of checks.
        self._narrowed: tuple[str, str] | None = None
        # The fast path, loaded on first use (start() or the first change after a confirmed
        # apply); False once it is known unavailable, or if the caller wants the full path only.
        self._fast: FastPath | bool | None = None if fast else False
        self._saved: str | None = None  # the config file as found at start (_seq_source)

    async def start(self) -> None:
        await self._fast_path()

    def _seq_source(self) -> str | None:
        """The config whose prefix-list seqs a render keeps (render.numbered): the last one
        applied, or after a restart the file it saved, so a restarted agent renders exactly
        what FRR runs instead of renumbering every list."""
        if self.last_applied is not None:
            return self.last_applied
        if self._saved is None:
            try:
                self._saved = self.config_file.read_text()
            except (OSError, UnicodeDecodeError):
                self._saved = ""  # nothing saved yet: number afresh
        return self._saved

    async def _fast_path(self) -> FastPath | None:
        if self._fast is None:
            try:
                lib = await asyncio.to_thread(library.load, Path(self.cfg.reload_script))
                self._fast = FastPath(lib, [self.cfg.vtysh, *self._pathspace()], self.timeouts,
                                      self._run)
            except library.LibraryUnavailable as exc:
                log.warning("FRR fast apply path off, every change takes frr-reload.py's full "
                            "path (~1 s): %s", exc)
                self._fast = False
        return self._fast or None

    def _pathspace(self) -> list[str]:
        return ["-N", self.cfg.pathspace] if self.cfg.pathspace else []

    async def _run(self, argv: list[str], limit: float, what: str) -> CommandResult:
        try:
            return await run_command(argv, limit)
        except TimeoutError:
            # run_command killed its process group: nothing of it is left running.
            raise FrrApplyError(f"{what}: no answer within {limit:g} s; killed") from None

    async def check_syntax(self, path: Path) -> None:
        res = await self._run([self.cfg.vtysh, *self._pathspace(), "-C", "-f", str(path)],
                              self.timeouts.for_check(), "vtysh -C")
        if res.returncode != 0:
            raise FrrRejected(res.output)

    def _reload_argv(self, mode: str, staged: Path) -> list[str]:
        # --confdir is the staging folder, so the file is "<confdir>/frr.conf" and frr-reload.py
        # does not save the running config over FRR's startup file (module docstring).
        return [self.cfg.reload_script, mode, *(["--stdout"] if mode == "--reload" else []),
                "--confdir", str(staged.parent), *self._pathspace(), str(staged)]

    async def delta(self, staged: Path, lines: int) -> Delta:
        res = await self._run(self._reload_argv("--test", staged),
                              self.timeouts.for_test(lines), "frr-reload.py --test")
        if res.returncode != 0:
            raise FrrApplyError(f"frr-reload.py --test failed: {_tail(res.output)}")
        # The delta is printed on stdout; stderr carries frr-reload.py's and vtysh's log lines.
        return parse_delta(res.stdout)

    async def _reload(self, staged: Path, lines: int) -> None:
        res = await self._run(self._reload_argv("--reload", staged),
                              self.timeouts.for_reload(lines), "frr-reload.py --reload")
        if res.returncode != 0:
            raise FrrApplyError(f"frr-reload.py --reload failed: {_tail(res.output)}")

    async def apply(self, desired: FrrDesired) -> ApplyResult:
        """Render `desired` and apply it. A value the templates refuse (UnsafeValue: a validator
        let something through) is a rejected apply: nothing reaches FRR, it keeps running the
        last good config. A candidate FRR refuses is narrowed (module docstring): every
        result says which nodes' lines FRR runs without (ApplyResult.refused)."""
        started, t0 = time.time(), time.monotonic()
        try:
            text = render_frr(desired, self._seq_source())
        except UnsafeValue as exc:
            return self._with_refused(
                _result(False, "rejected", started, t0, error=f"not rendered: {exc}"))
        if self._narrowed == (text, self.last_applied):
            return self._with_refused(_result(True, "unchanged", started, t0))
        result, objection = await self._attempt(text)
        if result.ok:
            self._confirm(desired, {}, None)
            return result
        if objection is None:
            return self._with_refused(result)  # not a refusal (a timeout, a full disk)
        try:
            return await self._narrow(desired, text, result, objection, started, t0)
        except (FrrApplyError, OSError) as exc:
            # An elimination check hung or could not be staged: FRR's refusal of the whole
            # stands, with why it could not be narrowed.
            log.warning("could not narrow FRR's refusal: %s", exc)
            return self._with_refused(result)

    async def _narrow(self, desired: FrrDesired, text: str, refused_result: ApplyResult,
                      objection: Objection, started: float, t0: float) -> ApplyResult:
        """Apply `desired` without the peers whose lines FRR refused (they stay as confirmed
        last); `refused_result` (FRR's refusal of the whole) if that cannot be done."""
        refused: dict[str, str] = {}
        candidate = desired
        for _ in range(NARROW_ROUNDS):
            blamed = await self._blame(candidate, objection)
            if not blamed:
                break
            narrowed = narrow.revert(candidate, blamed, self.confirmed)
            if narrowed == candidate:
                break  # those peers are already as confirmed: the refusal is not their change
            refused.update(narrow.refused_by_node(candidate, blamed))
            candidate = narrowed
            result, next_objection = await self._attempt(
                render_frr(candidate, self._seq_source()))
            if result.ok:
                self._confirm(candidate, refused, text)
                log.warning("FRR refused the lines of %s; applied everyone else's changes",
                            ", ".join(sorted(refused)))
                return replace(result, action="applied-narrowed", refused=dict(refused),
                               started=started, duration=time.monotonic() - t0,
                               error="; ".join(
                                   f"{node}: {why}" for node, why in sorted(refused.items())))
            if next_objection is None:
                return self._with_refused(result)
            objection = next_objection
        return self._with_refused(refused_result)

    async def _blame(self, desired: FrrDesired, objection: Objection) -> dict[str, str] | None:
        """FRR's words per server port whose lines it refused; None if a line is not a server
        peer's (nothing to narrow) or none could be found."""
        ports = {p.port for p in desired.server_peers}
        if objection.complaints:
            return narrow.blame(objection.complaints, ports)
        if objection.checked:
            return await self._eliminate(desired)
        return None

    async def _eliminate(self, desired: FrrDesired) -> dict[str, str] | None:
        """FRR refused the candidate without naming a line: with every changed peer put back
        the candidate must pass (else the fault is elsewhere: None); then each changed peer
        alone on top of that finds who is refused. Bounded by ELIMINATION_MAX checks."""
        changed = narrow.changed_ports(desired, self.confirmed)
        if not changed or len(changed) > ELIMINATION_MAX:
            return None
        if await self._refusal(narrow.revert(desired, changed, self.confirmed)) is not None:
            return None
        found = {}
        for port in changed:
            others = [p for p in changed if p != port]
            words = await self._refusal(narrow.revert(desired, others, self.confirmed))
            if words is not None:
                found[port] = narrow.words_of([words])
        return found or None

    async def _refusal(self, desired: FrrDesired) -> str | None:
        """FRR's words if its syntax check refuses `desired`, else None."""
        with self._staged(render_frr(desired, self._seq_source())) as candidate:
            try:
                await self.check_syntax(candidate)
            except FrrRejected as exc:
                return exc.output
        return None

    def _confirm(self, desired: FrrDesired, refused: dict[str, str],
                 narrowed_from: str | None) -> None:
        self.confirmed, self.refused = desired, refused
        self._narrowed = (narrowed_from, self.last_applied) if narrowed_from else None

    def _with_refused(self, result: ApplyResult) -> ApplyResult:
        # What FRR runs still lacks those nodes' values, whatever this result says.
        return replace(result, refused=dict(self.refused)) if self.refused else result

    async def apply_text(self, text: str) -> ApplyResult:
        return (await self._attempt(text))[0]

    async def _attempt(self, text: str) -> tuple[ApplyResult, Objection | None]:
        """Apply `text`; with the result, why FRR refused it if it did (None otherwise)."""
        started, t0 = time.time(), time.monotonic()
        if text == self.last_applied:
            return _result(True, "unchanged", started, t0), None
        self._suspected = None  # whatever drift was seen, this apply decides anew
        try:
            return await self._apply_text(text, started, t0)
        except OSError as exc:
            # A full disk or a read-only /etc/frr: FRR keeps running what it runs, and the
            # file it loads at restart stays the last good one. Reported, never fatal.
            return _result(False, "failed", started, t0,
                           error=f"cannot stage or save {self.config_file}: {exc}"), None

    async def _apply_text(self, text: str, started: float,
                          t0: float) -> tuple[ApplyResult, Objection | None]:
        lines = _lines(text)
        with self._staged(text) as candidate:
            try:
                await self.check_syntax(candidate)
            except FrrRejected as exc:
                objection = Objection(narrow.check_complaints(text, exc.output), checked=True)
                return _result(False, "rejected", started, t0, error=str(exc)), objection
            except FrrApplyError as exc:  # vtysh hung: not a refusal
                return _result(False, "failed", started, t0, error=str(exc)), None
            fast = await self._fast_path() if self.last_applied is not None else None
            if fast is not None and self.last_applied is not None:
                try:
                    applied = await fast.apply(self.last_applied, text)
                except (Miss, FrrApplyError) as exc:
                    # FRR may run part of the delta: the full path diffs against what it runs.
                    log.info("fast FRR apply missed, taking the full path: %s", exc)
                else:
                    _atomic_replace(candidate, self.config_file)
                    self.last_applied = text
                    return _result(True, "applied" if not applied.empty else "in-sync",
                                   started, t0, applied), None
            objection = None
            try:
                before = await self.delta(candidate, lines)
                if not before.empty:
                    await self._reload(candidate, lines)
                    after = await self.delta(candidate, lines)
                    if not after.empty:
                        objection = Objection(
                            narrow.delta_complaints(after.to_delete, after.to_add), checked=False)
                        raise FrrApplyError(f"FRR did not take: {after.summary()}")
            except (FrrApplyError, TimeoutError) as exc:
                await self._rollback()
                return _result(False, "failed", started, t0, error=str(exc) or "timed out"), \
                    objection
            _atomic_replace(candidate, self.config_file)
        self.last_applied = text
        action = "applied" if not before.empty else "in-sync"
        return _result(True, action, started, t0, before), None

    async def resync(self) -> ApplyResult | None:
        """Repair drift between the last applied config and what FRR runs, and put the startup
        file back if something (`write memory` after a hand edit) replaced it; None if in sync.
        Drift is repaired only if it outlives a short settle time: a daemon watchfrr restarts
        reloads the startup file itself, and repairing while it does only adds churn. So the
        first call that sees drift returns "drift-suspected" with `recheck_after`; the caller
        (the reconcile loop, which holds the apply lock only while FRR is checked or changed,
        never while settling) calls again then, and that call repairs what still differs."""
        started, t0 = time.time(), time.monotonic()
        try:
            return await self._resync(started, t0)
        except OSError as exc:
            return _result(False, "failed", started, t0,
                           error=f"cannot stage or save {self.config_file}: {exc}")

    async def _resync(self, started: float, t0: float) -> ApplyResult | None:
        if self._suspected is not None:
            self._suspected = None
            return await self._repair()
        drift = await self._drift()
        if drift is None:
            return None
        if self.drift_settle_seconds <= 0:
            return await self._repair()
        log.info("FRR differs from the applied config (%s); checking again in %.1fs before "
                 "repairing", drift.summary(3), self.drift_settle_seconds)
        self._suspected = drift
        return _result(True, "drift-suspected", started, t0, drift,
                       recheck_after=self.drift_settle_seconds)

    async def _drift(self) -> Delta | None:
        """What FRR runs differs from the last applied config by this; None if in sync or if
        nothing was applied yet. A failed check counts as drift, so _repair reports why."""
        if self.last_applied is None:
            return None
        self._restore_startup_file(self.last_applied)
        with self._staged(self.last_applied) as staged:
            try:
                drift = await self.delta(staged, _lines(self.last_applied))
            except (FrrApplyError, TimeoutError) as exc:
                log.debug("drift check failed: %s", exc)
                return Delta((), (f"(FRR could not be compared: {exc})",))
        return None if drift.empty else drift

    async def _repair(self) -> ApplyResult | None:
        """Check again and repair what still differs; None if FRR got back in sync alone."""
        if self.last_applied is None:
            return None
        started, t0 = time.time(), time.monotonic()
        with self._staged(self.last_applied) as staged:
            try:
                drift = await self.delta(staged, _lines(self.last_applied))
                if drift.empty:
                    log.info("FRR back in sync without a repair (a restarted daemon reloaded "
                             "%s)", self.config_file)
                    return None
                log.warning("FRR drifted from the applied config (%s); repairing",
                            drift.summary())
                await self._reload(staged, _lines(self.last_applied))
                after = await self.delta(staged, _lines(self.last_applied))
                if not after.empty:
                    raise FrrApplyError(f"FRR did not take: {after.summary()}")
            except (FrrApplyError, TimeoutError) as exc:
                return _result(False, "failed", started, t0, error=str(exc) or "timed out")
        return _result(True, "repaired", started, t0, drift)

    async def _rollback(self) -> None:
        if self.last_applied is None:
            return
        try:
            with self._staged(self.last_applied) as staged:
                await self._reload(staged, _lines(self.last_applied))
        except (FrrApplyError, TimeoutError) as exc:
            log.error("rollback to the last good FRR configuration failed: %s", exc)

    def _restore_startup_file(self, text: str) -> None:
        try:
            if self.config_file.read_text() == text:
                return
            log.warning("%s differs from the applied config (saved by hand?); restoring it, "
                        "so a restarted FRR loads what runs", self.config_file)
        except FileNotFoundError:
            log.warning("%s is missing; restoring the applied config", self.config_file)
        except OSError as exc:
            log.error("cannot read %s: %s", self.config_file, exc)
            return
        with self._staged(text) as staged:
            _atomic_replace(staged, self.config_file)

    @contextmanager
    def _staged(self, text: str) -> Iterator[Path]:
        """``text`` as ``frr.conf`` in a private folder beside the config file (same file
        system, so it can be renamed over it), with FRR's vtysh.conf linked where vtysh looks
        for it under --confdir. The folder is removed on exit."""
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".kfa-stage-", dir=self.config_file.parent))
        try:
            path = folder / "frr.conf"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            ps = self.cfg.pathspace
            vtysh_conf = FRR_SYSCONFDIR / ps / "vtysh.conf" if ps else FRR_SYSCONFDIR / "vtysh.conf"
            if vtysh_conf.exists():
                link_dir = folder / ps if ps else folder
                link_dir.mkdir(exist_ok=True)
                (link_dir / "vtysh.conf").symlink_to(vtysh_conf)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)


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


def _lines(text: str) -> int:
    return text.count("\n")


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
