"""Golden files per template piece, and the rules that keep the pieces self-contained.

Every template except frr.conf.j2 defines exactly one macro. Its cases are in
tests/golden/pieces/<template path without .j2>/<case>/: input.yaml holds the macro's arguments
by name, as plain data (a `server_peers` list is turned into ServerPeer objects here), and
expected.txt the macro's output. Each case calls the macro alone, with exactly the arguments it
declares, in the agent's own environment (StrictUndefined, the `token` filter), so a piece that
reads a variable it was not given fails here. UPDATE_GOLDEN=1 rewrites expected.txt; review the
diff before committing it.

A piece alone is not a configuration FRR would load (route maps without their prefix lists,
neighbour lines without `router bgp`), so `vtysh -C -f` is run on the whole files only, in
tests/test_golden.py.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from jinja2 import meta
from jinja2.runtime import Macro

from agent.apply.frr.render import UnsafeValue, _environment
from agent.plan.model import ServerPeer

PIECES = Path(__file__).parent / "golden" / "pieces"
WHOLE_FILE = "frr.conf.j2"
# Arguments that are lists of dataclasses in the real call; everything else is passed as read.
DATACLASS_LISTS: dict[str, type] = {"server_peers": ServerPeer}
# A value `token` must refuse: a space and a newline would start a second FRR command.
HOSTILE = "evil\nrouter bgp 1"

ENV = _environment()
TEMPLATES = sorted(t for t in ENV.list_templates() if t.endswith(".j2") and t != WHOLE_FILE)


def _macro(template: str) -> Macro:
    macros = [v for v in vars(ENV.get_template(template).module).values()
              if isinstance(v, Macro)]
    assert len(macros) == 1, f"{template} must define exactly one macro, has {len(macros)}"
    return macros[0]


def _golden_dir(template: str) -> Path:
    return PIECES / template.removesuffix(".j2")


def _cases() -> list[tuple[str, str]]:
    return [(t, case.name) for t in TEMPLATES if _golden_dir(t).is_dir()
            for case in sorted(_golden_dir(t).iterdir()) if (case / "input.yaml").exists()]


CASES = _cases()


def _read_input(template: str, case: str) -> dict[str, Any]:
    raw = yaml.safe_load((_golden_dir(template) / case / "input.yaml").read_text()) or {}
    assert isinstance(raw, dict), f"{template} {case}: input.yaml must be a mapping"
    return raw


def _arguments(raw: dict[str, Any]) -> dict[str, Any]:
    """The plain data of input.yaml as the macro receives it from frr.conf.j2: tuples, and
    ServerPeer objects (built with their own constructor, so a misspelt field fails)."""
    def plain(value: Any) -> Any:
        return tuple(plain(v) for v in value) if isinstance(value, list) else value

    args: dict[str, Any] = {}
    for name, value in raw.items():
        if name in DATACLASS_LISTS:
            args[name] = tuple(DATACLASS_LISTS[name](**{k: plain(v) for k, v in item.items()})
                               for item in value)
        else:
            args[name] = plain(value)
    return args


def _render(template: str, raw: dict[str, Any]) -> str:
    return str(_macro(template)(**_arguments(raw)))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
        if path[-1] not in DATACLASS_LISTS:
            yield (*path, len(value))  # one more item: empty lists get a hostile value too
    else:
        yield path


def _replaced(raw: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    result = copy.deepcopy(raw)
    target: Any = result
    for step in path[:-1]:
        target = target[step]
    if isinstance(target, list) and path[-1] == len(target):
        target.append(new)
    else:
        target[path[-1]] = new
    return result


def test_environment_is_strict() -> None:
    # An undefined variable must raise, never render as "": the checks below rely on it.
    assert ENV.undefined is jinja2.StrictUndefined
    assert "token" in ENV.filters


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_piece_is_one_macro_with_named_parameters(template: str) -> None:
    macro = _macro(template)
    # No *varargs / **kwargs / caller(): the declared parameters are all a piece can receive.
    assert not (macro.catch_varargs or macro.catch_kwargs or macro.caller), template


@pytest.mark.parametrize("template", [*TEMPLATES, WHOLE_FILE])
def test_pieces_read_nothing_but_their_parameters(template: str) -> None:
    """Static: every name a template reads, in any branch, is a parameter of its macro, a loop
    or `set` variable, or an imported piece. Only frr.conf.j2 reads `frr` and `seqs`, from
    render_frr()."""
    source = ENV.loader.get_source(ENV, template)[0]  # type: ignore[union-attr]
    undeclared = meta.find_undeclared_variables(ENV.parse(source))
    assert undeclared == ({"frr", "seqs"} if template == WHOLE_FILE else set()), template


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_piece_has_golden_cases(template: str) -> None:
    assert any(t == template for t, _ in CASES), f"no case in {_golden_dir(template)}"


def test_no_golden_case_without_its_template() -> None:
    known = {_golden_dir(t) / case for t, case in CASES}
    orphans = [p.parent for p in PIECES.rglob("input.yaml") if p.parent not in known]
    assert not orphans, f"golden cases of no template: {orphans}"


@pytest.mark.parametrize(("template", "case"), CASES, ids=[f"{t[:-3]}/{c}" for t, c in CASES])
def test_piece_matches_golden(template: str, case: str) -> None:
    """The macro alone, given exactly the arguments it declares (no fewer: a missing one is
    StrictUndefined and raises when read; no more: nothing else could reach it anyway)."""
    raw = _read_input(template, case)
    assert sorted(raw) == sorted(_macro(template).arguments), (
        f"{template} {case}: input.yaml must give exactly {_macro(template).arguments}")
    text = _render(template, raw)
    expected = _golden_dir(template) / case / "expected.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(text)
    assert text == expected.read_text()


@pytest.mark.parametrize(("template", "case"), CASES, ids=[f"{t[:-3]}/{c}" for t, c in CASES])
def test_every_value_passes_token(template: str, case: str) -> None:
    """Each input value in turn replaced by one that would inject a command: the piece refuses
    it (UnsafeValue from `token`) or does not print it (values only compared, like `af`)."""
    raw = _read_input(template, case)
    for path in _leaves(raw):
        try:
            text = _render(template, _replaced(raw, path, HOSTILE))
        except UnsafeValue:
            continue
        assert "evil" not in text, f"{template} {case}: {path} reaches FRR without `token`"
