"""Writes fabric-agent.8 and fabricctl.1 from the commands' own argument parsers.

Run at package build time with the virtualenv's python (it imports the agent as installed), so
a page cannot drift from the options the command accepts. Written here rather than with
argparse-manpage: Debian 12's (1.2.2) cuts the synopsis at the first ':' (fabricctl's
--address HOST:PORT) and always writes section 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

from agent import cli, fabricctl

FILES_AGENT = (
    "/etc/kube-fabric-agent/config.yaml: the configuration; the systemd unit starts only once "
    "it exists. /usr/share/doc/kube-fabric-agent/examples/: an example configuration, "
    "kubeconfig, RBAC and Prometheus alert rules. /usr/lib/sysctl.d/60-kube-fabric-agent.conf: "
    "the sysctl settings the hardened unit cannot set itself."
)
PAGES = {
    "fabric-agent": (8, "makes this leaf switch Kubernetes-aware (daemon and offline tools)", [
        ("FILES", FILES_AGENT),
        ("EXIT STATUS", "0 on success. check-config exits non-zero with one line per problem "
                        "naming the key path."),
        ("SEE ALSO", "fabricctl(1), /usr/share/doc/kube-fabric-agent/README.md"),
    ]),
    "fabricctl": (1, "show what kube-fabric-agent on this switch knows", [
        ("FILES", f"{fabricctl.DEFAULT_SOCKET}: the agent's status socket."),
        ("SEE ALSO", "fabric-agent(8), /usr/share/doc/kube-fabric-agent/README.md"),
    ]),
}


def esc(text: str) -> str:
    """roff-safe text: backslashes, hyphens (else typeset as hyphens), a leading control char."""
    text = " ".join(text.split()).replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def invocation(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{esc(s)}\\fR" for s in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (action.dest.upper() if action.option_strings else action.dest)
    return f"{names} \\fI{esc(str(metavar))}\\fR".strip()


def options(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    out = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if set(action.option_strings) & skip or action.help == argparse.SUPPRESS:
            continue
        text = formatter._expand_help(action) if action.help else ""
        if action.choices:  # listed in the text, where lines can break between them
            text += f" (one of: {', '.join(map(str, action.choices))})"
        out += [".TP", invocation(action), esc(text)]
    return out


def page(parser: argparse.ArgumentParser) -> str:
    section, summary, extra = PAGES[parser.prog]
    # SOURCE_DATE_EPOCH (dpkg-buildpackage sets it from debian/changelog): reproducible pages.
    epoch = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    day = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d")
    source = f"kube-fabric-agent {version('kube-fabric-agent')}"
    lines = [f'.TH {parser.prog.upper()} {section} "{day}" "{source}" "kube-fabric-agent"',
             ".SH NAME", f"{esc(parser.prog)} \\- {esc(summary)}",
             ".SH SYNOPSIS", f"\\fB{esc(parser.prog)}\\fR [\\fIoptions\\fR] \\fICOMMAND\\fR "
             "[\\fIcommand options\\fR]"]
    if parser.description:
        lines += [".SH DESCRIPTION", esc(parser.description)]
    top = options(parser, set())
    if top:
        lines += [".SH OPTIONS", *top]
    lines.append(".SH COMMANDS")
    skip = {s for a in parser._actions for s in a.option_strings}
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help for a in subparsers._choices_actions}
    for name, sub in subparsers.choices.items():
        lines += [".TP", f"\\fB{esc(parser.prog)} {esc(name)}\\fR", esc(helps.get(name) or "")]
        own = options(sub, skip)
        if own:
            lines += [".RS", *own, ".RE"]
    if parser.epilog:  # fabricctl's: "exit status: 0 ok, ..."
        head, _, text = parser.epilog.partition(":")
        lines += [f".SH {head.upper()}", esc(text)]
    for heading, text in extra:
        lines += [f".SH {heading}", esc(text)]
    return "\n".join(lines) + "\n"


def main(out: str) -> None:
    for parser in (cli.build_parser(), fabricctl.build_parser()):
        section = PAGES[parser.prog][0]
        (Path(out) / f"{parser.prog}.{section}").write_text(page(parser))


if __name__ == "__main__":
    main(sys.argv[1])
