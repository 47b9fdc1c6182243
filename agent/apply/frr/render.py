"""Render the desired FRR state into a complete frr.conf with the jinja2 templates of templates/.

frr.conf.j2 is the only template that sees the whole FrrDesired; every other file defines one
macro with explicit parameters, imported without context, so each piece can be rendered alone
(tests/test_templates.py does, against tests/golden/pieces/).

Values reaching a template were validated when they were read; the `token` filter checks once
more at the last moment, so a validator bug cannot turn into an injected FRR command.
"""

from __future__ import annotations

import re
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
    return env


def render_frr(frr: FrrDesired) -> str:
    text = _environment().get_template("frr.conf.j2").render(frr=frr)
    # Collapse runs of "!" separators the pieces leave behind; FRR ignores them, humans don't.
    text = re.sub(r"(?:^!\n){2,}", "!\n", text, flags=re.M)
    return text
