"""fabricctl's bash completion (debian/completion/fabricctl, shipped by the package) offers
exactly the commands and options fabricctl's parser accepts: run in real bash with
bash-completion, compared with the parser."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import fabricctl
from agent.vocabulary import EVENT_KINDS

COMPLETION = Path(__file__).parent.parent / "debian" / "completion" / "fabricctl"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")

# Completes the words of $1 as bash would after TAB, one candidate a line.
DRIVER = r"""
source /usr/share/bash-completion/bash_completion
source "$COMPLETION"
COMP_LINE=$1; COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_fabricctl fabricctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(line: str) -> set[str]:
    assert BASH_COMPLETION.exists(), "bash-completion is installed by scripts/setup.sh"
    res = subprocess.run([shutil.which("bash") or "bash", "-c", DRIVER, "driver", line],
                         env={"COMPLETION": str(COMPLETION), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return {word for word in res.stdout.splitlines() if word}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_commands() -> None:
    parser = fabricctl.build_parser()
    assert complete("fabricctl ") == set(_subparsers(parser))
    assert complete("fabricctl --socket /tmp/s ev") == {"events"}


def test_options_before_the_command() -> None:
    assert complete("fabricctl -") == _options(fabricctl.build_parser())


@pytest.mark.parametrize("command", sorted(_subparsers(fabricctl.build_parser())))
def test_options_after_each_command(command: str) -> None:
    sub = _subparsers(fabricctl.build_parser())[command]
    assert complete(f"fabricctl --json {command} -") == _options(sub)


def test_event_kinds() -> None:
    assert complete("fabricctl events --kind ") == set(EVENT_KINDS)
