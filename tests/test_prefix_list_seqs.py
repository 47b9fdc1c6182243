"""Prefix-list entries keep their seq from the config applied last (render.numbered): a prefix
coming or going is one line of delta, not a renumbering of every entry after it."""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.apply.frr.reload import FrrApplier
from agent.apply.frr.render import numbered, previous_seqs, render_frr
from agent.cli import plan_cluster_file
from agent.config import FrrConfig, load_config
from agent.plan.model import FrrDesired
from tests.fuzz_profiles import FUZZ
from tests.test_golden import GOLDEN


def services_case() -> FrrDesired:
    case = GOLDEN / "services"
    return plan_cluster_file(load_config(case / "config.yaml"), str(case / "cluster.yaml")).frr


def _changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_without_a_previous_config_entries_are_numbered_by_position() -> None:
    assert numbered(["b/32", "a/32", "c/32"], "L", {}) == [(10, "b/32"), (20, "a/32"),
                                                            (30, "c/32")]


def test_kept_prefixes_keep_their_seq_and_new_ones_fill_the_lowest_gap() -> None:
    previous = {"L": {"a/32": 10, "gone/32": 20, "c/32": 30}, "other": {"new/32": 40}}
    assert numbered(["new/32", "a/32", "c/32", "d/32"], "L", previous) == [
        (10, "a/32"), (20, "new/32"), (30, "c/32"), (40, "d/32")]


def test_render_reads_back_its_own_seqs() -> None:
    frr = services_case()
    text = render_frr(frr)
    assert render_frr(frr, previous=text) == text
    seqs = previous_seqs(text)
    assert seqs and all(seq % 10 == 0 for entries in seqs.values() for seq in entries.values())


def test_one_prefix_more_on_the_uplink_is_one_line_of_delta() -> None:
    """The uplink list holds every pod CIDR of the rack in order: numbered by position, a CIDR
    sorting first shifted every other entry (2 lines each); kept seqs make it one line."""
    frr = services_case()
    before = render_frr(frr)
    grown = replace(frr, advertise_v4=("10.0.0.0/24", *frr.advertise_v4))
    assert len(frr.advertise_v4) >= 3, "the case must have entries to shift"
    renumbered = _changed_lines(before, render_frr(grown))
    kept = _changed_lines(before, render_frr(grown, previous=before))
    assert len(renumbered) > 2 * len(frr.advertise_v4) - 1
    assert kept == ["+ip prefix-list KFA-UPLINK-OUT-V4 seq "
                    f"{10 * (len(frr.advertise_v4) + 1)} permit 10.0.0.0/24"], kept


prefixes = st.lists(st.sampled_from([f"10.0.{i}.0/24" for i in range(12)]), unique=True,
                    max_size=12)


@settings(FUZZ)
@given(old=prefixes, new=prefixes)
def test_numbering_is_unique_complete_and_keeps_what_stays(old: list[str], new: list[str]
                                                           ) -> None:
    previous = {"L": {p: s for s, p in numbered(old, "L", {})}}
    entries = numbered(new, "L", previous)
    seqs = [s for s, _ in entries]
    assert sorted({p for _, p in entries}) == sorted(new)
    assert len(set(seqs)) == len(seqs) and seqs == sorted(seqs)
    assert all(s > 0 and s % 10 == 0 for s in seqs)
    for seq, prefix in entries:
        if prefix in previous["L"]:
            assert seq == previous["L"][prefix]


def test_a_restarted_applier_keeps_the_seqs_of_the_config_it_saved(tmp_path: Path) -> None:
    """After churn the saved config's seqs are not positional; a restarted agent renders
    exactly that text again (no renumbering delta at its first apply) from the file alone."""
    frr = services_case()
    churned = render_frr(frr, render_frr(frr).replace(" seq 10 permit", " seq 70 permit"))
    assert churned != render_frr(frr)
    saved = tmp_path / "frr.conf"
    saved.write_text(churned)
    applier = FrrApplier(FrrConfig(config_file=str(saved)))
    assert render_frr(frr, applier._seq_source()) == churned
    assert FrrApplier(FrrConfig(config_file=str(tmp_path / "none")))._seq_source() == ""
