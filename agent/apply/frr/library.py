"""frr-reload.py's own diff, loaded once into the daemon and run in-process.

frr-reload.py knows how FRR's configuration nests and which changes need which commands (a
prefix-list entry replaced by seq, a `no` that must drop words, lines FRR adds by itself). The
agent keeps exactly those semantics by importing the installed script (frr-pythontools) instead
of re-implementing them; what it saves is the Python start-up, the parsing and the
`show running-config` that every `frr-reload.py` run pays (~0.3 s each, three runs per apply).

The only step of frr-reload.py replaced is vtysh's marking (`vtysh -m`), which inserts `end`
where a block closes. FRR (8.2 on) prints an explicit `exit` after every block and the agent's
templates do too, so the marking adds nothing the parser uses: the text is fed to frr-reload.py's
own `Config.load_from_file` / `load_from_show_running` through a stand-in that returns the text
unmarked (tests/test_frr_library.py checks the result equals vtysh -m's for every golden config).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# The script's API this module uses; a release without them is refused, not half-used.
_API = ("Config", "compare_context_objects", "lines_to_config")
# From this release on, show running-config closes every block with `exit` (see the docstring).
MIN_FRR = (8, 2)
# frr-reload.py logs each load at INFO; once per apply that is noise in the agent's journal.
_QUIET_LOGGER = "kfa_frr_reload"

# (ctx_keys, line) as frr-reload.py's compare_context_objects returns them; line None for a
# whole context.
Change = tuple[tuple[str, ...], str | None]


class LibraryUnavailable(Exception):
    """The fast path cannot be used; the message says why and what to install."""


class _Unmarked:
    """Stands in for frr-reload.py's Vtysh: hands the parser the text as vtysh -m would have,
    with the closing `end` vtysh -m appends."""

    def __init__(self, text: str) -> None:
        self.text = text

    def mark_file(self, filename: str) -> str:
        return self.text + "\nend\n"

    def mark_show_run(self, daemon: str | None = None) -> str:
        return self.text + "\nend\n"


@dataclass(frozen=True)
class Library:
    """frr-reload.py's module, loaded from `path`, and the FRR version it was checked against."""

    module: ModuleType
    path: Path
    version: str

    def parse(self, text: str) -> Any:
        """A rendered frr.conf, parsed as `frr-reload.py` parses the file it is given."""
        config = self.module.Config(_Unmarked(text))
        config.load_from_file("-")
        return config

    def parse_running(self, text: str) -> Any:
        """`show running-config` output, parsed as `frr-reload.py` parses FRR's running config."""
        config = self.module.Config(_Unmarked(text))
        config.load_from_show_running(None)
        return config

    def compare(self, new: Any, old: Any) -> tuple[list[Change], list[Change]]:
        """(lines to add, lines to delete) to turn `old` into `new`: frr-reload.py's diff."""
        add, delete = self.module.compare_context_objects(new, old)
        return list(add), list(delete)

    def test_output(self, add: Sequence[Change], delete: Sequence[Change]) -> str:
        """What `frr-reload.py --test` prints for this diff (its __main__, line for line), so
        the applier reads the in-process delta with the same parser as the script's."""
        out = []
        if delete:
            out += ["", "Lines To Delete", "==============="]
            out += ["\n".join(self.module.lines_to_config(k, line, True))
                    for k, line in delete if line != "!"]
        if add:
            out += ["", "Lines To Add", "============"]
            out += ["\n".join(self.module.lines_to_config(k, line, False))
                    for k, line in add if line != "!"]
        return "\n".join(out) + "\n"

    def commands(self, add: Sequence[Change], delete: Sequence[Change]) -> list[str]:
        """The vtysh commands that apply the diff, in configure mode, each change entered from
        the top (`end` + `configure terminal` between them: no command is ever tried in the
        wrong block). Order: deletions, then the `no` forms frr-reload.py lists as additions
        (a prefix-list entry replaced under the same seq), then additions. frr-reload.py's
        --reload sends the same commands but re-adds what a later `no` removed in a second pass
        over a fresh `show running-config`; removing first gets there in one pass, and the
        confirmation catches any case where it does not (the full path then runs)."""
        lines_to_config = self.module.lines_to_config
        blocks = [lines_to_config(k, line, True) for k, line in delete if line != "!"]
        nos = [(k, line) for k, line in add if k[0].startswith("no ")]
        rest = [(k, line) for k, line in add if not k[0].startswith("no ")]
        blocks += [lines_to_config(k, line, False) for k, line in [*nos, *rest] if line != "!"]
        out = ["configure terminal"]
        for i, block in enumerate(blocks):
            if i:
                out += ["end", "configure terminal"]
            out += [c.strip() for c in block]
        return [*out, "end"]


def frr_versions(packages: Sequence[str] = ("frr", "frr-pythontools")) -> dict[str, str]:
    """Installed Debian package versions (FRR's packaging on Debian, SONiC and Cumulus)."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version} ${Status}\\n",
                              *packages], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for row in res.stdout.splitlines():
        name, _, rest = row.partition(" ")
        version, _, status = rest.partition(" ")
        if status.endswith(" installed"):
            found[name] = version
    return found


def _release(version: str) -> tuple[int, ...]:
    """'8.4.4-1.1~deb12u2' -> (8, 4, 4); () when it is no FRR version."""
    m = re.match(r"^(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(x) for x in m.groups() if x is not None) if m else ()


def check_versions(versions: dict[str, str]) -> str:
    """The FRR version the fast path may run against, or LibraryUnavailable saying why not:
    frr-pythontools must be installed, from the same FRR release as the daemons (its parser
    knows that release's blocks), and FRR must be 8.2 or later (the docstring's `exit`)."""
    tools = versions.get("frr-pythontools")
    if tools is None:
        raise LibraryUnavailable(
            "frr-pythontools is not installed (dpkg has no frr-pythontools package): the fast "
            "FRR apply path loads its frr-reload.py; install frr-pythontools of the same "
            "version as frr")
    frr = versions.get("frr")
    if frr is not None and _release(frr)[:3] != _release(tools)[:3]:
        raise LibraryUnavailable(
            f"frr-pythontools {tools} is not from the installed FRR release ({frr}): its "
            "frr-reload.py may not know this FRR's configuration blocks")
    if not _release(tools) or _release(tools)[:2] < MIN_FRR:
        raise LibraryUnavailable(
            f"FRR {tools} is older than {'.'.join(map(str, MIN_FRR))}: its running config does "
            "not close every block with `exit`")
    return tools


def load(path: Path, versions: dict[str, str] | None = None) -> Library:
    """Import frr-reload.py from `path` once; LibraryUnavailable with the reason otherwise."""
    version = check_versions(frr_versions() if versions is None else versions)
    try:
        source = path.read_text()
    except OSError as exc:
        raise LibraryUnavailable(
            f"cannot read {path} ({exc.strerror}): install frr-pythontools, which provides "
            "frr-reload.py, or set frr.reload_script") from None
    # The script parses its arguments and runs under `if __name__ == "__main__":` only; one
    # without that guard would run (and exit) when imported, so it is not imported at all.
    if not re.search(r'^if __name__ == .__main__.:', source, re.M):
        raise LibraryUnavailable(f"{path} has no __main__ guard: it cannot be imported")
    spec = importlib.util.spec_from_file_location(_QUIET_LOGGER, path)
    if spec is None or spec.loader is None:
        raise LibraryUnavailable(f"{path} cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        with warnings.catch_warnings():
            # FRR's regexes are plain strings with \s: Python warns at compile time, per import.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            spec.loader.exec_module(module)
    except Exception as exc:  # a broken or foreign script: say so, the full path still works
        raise LibraryUnavailable(f"importing {path} failed: {exc!r}") from None
    missing = [name for name in _API if not hasattr(module, name)]
    if missing:
        raise LibraryUnavailable(f"{path} lacks {', '.join(missing)}: not a known frr-reload.py")
    logging.getLogger(_QUIET_LOGGER).setLevel(logging.WARNING)
    log.info("FRR fast apply path: frr-reload.py of frr-pythontools %s loaded from %s",
             version, path)
    return Library(module, path, version)
