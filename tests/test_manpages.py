"""The man pages the package ships (debian/manpages.py writes them at build time from the
commands' argument parsers) name every command and option, and groff reads them cleanly."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from agent import cli, fabricctl

REPO = Path(__file__).parent.parent


def _pages(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764720000", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "debian" / "manpages.py"), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return {p.name: p.read_text() for p in tmp_path.iterdir()}


def _words(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string and command name of parser and its subcommands."""
    words = set()
    for action in parser._actions:
        words |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words |= {name} | _words(sub)
    return words - {"-h", "--help"}


def test_pages_name_every_command_and_option(tmp_path: Path) -> None:
    pages = _pages(tmp_path)
    assert set(pages) == {"fabric-agent.8", "fabricctl.1"}
    for name, parser in (("fabric-agent.8", cli.build_parser()),
                         ("fabricctl.1", fabricctl.build_parser())):
        text = pages[name]
        assert text.startswith(f'.TH {parser.prog.upper()} {name[-1]} "2025-12-03"')
        for word in _words(parser):
            assert word.replace("-", "\\-") in text, f"{word} missing from {name}"


def test_groff_reads_them_without_warnings(tmp_path: Path) -> None:
    groff = shutil.which("groff")
    assert groff, "groff comes with man-db (scripts/setup.sh)"
    _pages(tmp_path)
    for page in tmp_path.iterdir():
        res = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and not res.stderr, (page.name, res.stderr)
