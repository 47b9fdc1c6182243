"""frr-reload.py's diff run in-process (agent.apply.frr.library) against the installed script
itself: the fast path must keep frr-reload.py's semantics. Needs FRR's vtysh and
frr-pythontools (scripts/setup.sh installs both); no daemon runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.apply.frr.delta import parse_delta
from agent.apply.frr.library import Library, LibraryUnavailable, check_versions, load

GOLDEN = sorted(Path(__file__).parent.joinpath("golden").glob("*/frr.conf"))
SCRIPT = Path("/usr/lib/frr/frr-reload.py")
VERSIONS = {"frr": "8.4.4-1.1~deb12u2", "frr-pythontools": "8.4.4-1.1~deb12u2"}


@pytest.fixture(scope="module")
def lib() -> Library:
    return load(SCRIPT, VERSIONS)


def contexts(config: object) -> list[tuple[tuple[str, ...], list[str]]]:
    return [(k, list(c.lines)) for k, c in config.contexts.items()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.parent.name)
def test_in_process_parse_equals_frr_reload_parse_through_vtysh_mark(
    lib: Library, path: Path
) -> None:
    """The one step replaced (vtysh -m) changes nothing the parser sees in our configs."""
    marked = lib.module.Config(lib.module.Vtysh("/usr/bin"))
    marked.load_from_file(str(path))
    assert contexts(lib.parse(path.read_text())) == contexts(marked)


def script_test_output(tmp_path: Path, running: str, candidate: str) -> str:
    """`frr-reload.py --test --input running candidate`: the real script, no daemon asked."""
    (tmp_path / "running.conf").write_text(running)
    (tmp_path / "frr.conf").write_text(candidate)
    res = subprocess.run(["python3", str(SCRIPT), "--test", "--confdir", str(tmp_path),
                          "--input", str(tmp_path / "running.conf"), str(tmp_path / "frr.conf")],
                         capture_output=True, text=True, timeout=60, check=True)
    return res.stdout


def changed(text: str) -> str:
    """A node's prefix replaced under the same seq, one gained, one cordoned, one peer gone."""
    return (text.replace("seq 10 permit 10.244.1.0/24", "seq 10 permit 10.244.101.0/24")
            .replace("ip prefix-list KFA-NODE-swp2-V4 seq 10 permit 10.244.2.0/24",
                     "ip prefix-list KFA-NODE-swp2-V4 seq 10 permit 10.244.2.0/24\n"
                     "ip prefix-list KFA-NODE-swp2-V4 seq 20 permit 10.244.22.0/24")
            .replace(" neighbor swp1 description", " neighbor swp1 description x"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.parent.name)
def test_in_process_delta_is_what_frr_reload_test_prints(
    lib: Library, path: Path, tmp_path: Path
) -> None:
    old, new = path.read_text(), changed(path.read_text())
    add, delete = lib.compare(lib.parse(new), lib.parse(old))
    ours = parse_delta(lib.test_output(add, delete))
    assert ours == parse_delta(script_test_output(tmp_path, old, new))
    if "10.244.1.0/24" in old:
        assert not ours.empty


def test_a_prefix_replaced_under_its_seq_is_removed_before_the_new_one_is_added(
    lib: Library,
) -> None:
    """frr-reload.py lists `no <old entry>` after `<new entry>`; sent in that order in one pass,
    the `no` deletes the seq FRR just replaced (--reload repairs it in its second pass)."""
    old = "ip prefix-list KFA-NODE-swp3-V4 seq 10 permit 10.244.3.0/24\n"
    new = "ip prefix-list KFA-NODE-swp3-V4 seq 10 permit 10.244.33.0/24\n"
    add, delete = lib.compare(lib.parse(new), lib.parse(old))
    commands = lib.commands(add, delete)
    assert commands.index("no ip prefix-list KFA-NODE-swp3-V4 seq 10 permit 10.244.3.0/24") \
        < commands.index("ip prefix-list KFA-NODE-swp3-V4 seq 10 permit 10.244.33.0/24")
    assert commands[0] == "configure terminal" and commands[-1] == "end"


def test_every_change_is_entered_from_the_top(lib: Library) -> None:
    old = ("route-map KFA-NODE-swp2-IN-V4 permit 10\n match ip address prefix-list X\nexit\n"
           "router bgp 65101\n address-family ipv4 unicast\n"
           "  neighbor swp2 maximum-prefix 100 restart 5 force\n exit-address-family\nexit\n")
    new = old.replace("match ip address prefix-list X", "match ip address prefix-list X\n"
                      " set local-preference 0").replace("100 restart", "99 restart")
    add, delete = lib.compare(lib.parse(new), lib.parse(old))
    commands = lib.commands(add, delete)
    # Each change starts at the top and names its blocks; nothing relies on falling back from
    # the block the previous change left vtysh in.
    for i, command in enumerate(commands):
        if command.startswith(("route-map", "router bgp")):
            assert commands[i - 1] == "configure terminal", commands


def test_versions_are_checked_with_clear_errors() -> None:
    assert check_versions(VERSIONS) == VERSIONS["frr-pythontools"]
    with pytest.raises(LibraryUnavailable, match="frr-pythontools is not installed"):
        check_versions({"frr": "8.4.4-1"})
    with pytest.raises(LibraryUnavailable, match="not from the installed FRR release"):
        check_versions({"frr": "9.1.0-1", "frr-pythontools": "8.4.4-1"})
    with pytest.raises(LibraryUnavailable, match=r"older than 8\.2"):
        check_versions({"frr": "7.5.1-1", "frr-pythontools": "7.5.1-1"})


def test_a_missing_or_foreign_script_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(LibraryUnavailable, match="install frr-pythontools"):
        load(tmp_path / "frr-reload.py", VERSIONS)
    # A script that runs at import (no __main__ guard) is never imported: it would exit.
    unguarded = tmp_path / "unguarded.py"
    marker = tmp_path / "ran"
    unguarded.write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(LibraryUnavailable, match="no __main__ guard"):
        load(unguarded, VERSIONS)
    assert not marker.exists()
    other = tmp_path / "other.py"
    other.write_text("if __name__ == '__main__':\n    pass\n")
    with pytest.raises(LibraryUnavailable, match="lacks Config"):
        load(other, VERSIONS)
