"""Render the desired FRR state into a complete frr.conf with the jinja2 templates of templates/.

frr.conf.j2 is the only template that sees the whole FrrDesired; every other file defines one
macro with explicit parameters, imported without context, so each piece can be rendered alone
(tests/test_templates.py does, against tests/golden/pieces/).

Values reaching a template were validated when they were read; the `token` filter checks once
more at the last moment, so a validator bug cannot turn into an injected FRR command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources

import jinja2

from agent.plan.model import FrrDesired

_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,253}$")


class UnsafeValue(ValueError):
    pass


def _token(value: object) -> str:
    text = str(value)
    if not _TOKEN_RE.fullmatch(text):  # not `$`: it matches before a trailing newline
        raise UnsafeValue(f"refusing to render {text!r} into FRR configuration")
    return text


@cache
def _environment() -> jinja2.Environment:
    root = resources.files("agent.apply.frr") / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # FRR config, not HTML; safety comes from `token`
    )
    env.filters["token"] = _token
    env.filters["numbered"] = numbered
    return env


# A permit entry of one of our prefix lists, as rendered and as `show running-config` prints it.
_ENTRY_RE = re.compile(r"^ipv?6? ?prefix-list (KFA-[A-Za-z0-9_.-]+) seq (\d+) permit (\S+)$",
                       re.M)
Seqs = dict[str, dict[str, int]]


def previous_seqs(text: str | None) -> Seqs:
    """Per prefix list, the seq each permitted prefix has in `text` (a config we rendered)."""
    seqs: Seqs = {}
    for name, seq, prefix in _ENTRY_RE.findall(text or ""):
        seqs.setdefault(name, {})[prefix] = int(seq)
    return seqs


def numbered(prefixes: Iterable[str], name: str, seqs: Mapping[str, Mapping[str, int]]
             ) -> list[tuple[int, str]]:
    """(seq, prefix) entries of list `name`, in seq order. A prefix keeps the seq it had in the
    previous config, a new one takes the lowest free multiple of 10: one prefix coming or going
    is one line of delta, where numbering by position shifted every entry after it (on a
    48-port leaf ~94 commands per change, ~5 ms each). The lists only permit exact prefixes, so
    their order decides nothing. Without a previous config: 10, 20, 30... in the given order."""
    old = seqs.get(name, {})
    out: dict[str, int] = {}
    for prefix in prefixes:
        # Only a positive int is a seq we wrote (previous_seqs parses digits); anything else
        # is not trusted into a line of FRR config.
        seq = old.get(prefix)
        if prefix not in out and type(seq) is int and seq > 0 and seq not in out.values():
            out[prefix] = seq
    used = set(out.values())
    seq = 10
    for prefix in prefixes:
        if prefix in out:
            continue
        while seq in used:
            seq += 10
        out[prefix] = seq
        used.add(seq)
    return sorted((seq, prefix) for prefix, seq in out.items())


def render_frr(frr: FrrDesired, previous: str | None = None) -> str:
    """The complete frr.conf. `previous`: the config last applied, whose prefix-list seqs are
    kept (see `numbered`); None numbers every list afresh."""
    text = _environment().get_template("frr.conf.j2").render(frr=frr,
                                                             seqs=previous_seqs(previous))
    # Collapse runs of "!" separators the pieces leave behind; FRR ignores them, humans don't.
    text = re.sub(r"(?:^!\n){2,}", "!\n", text, flags=re.M)
    return text
