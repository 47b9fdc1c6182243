"""The FRR applier against a real FRR 8.4 leaf (no agent, no Kubernetes): what it saves as FRR's
startup config, and how it behaves while a daemon is down or being restarted.

The case behind this file: frr-reload.py --reload ends with `vtysh write` whenever the file it
loads is not `<confdir>/frr.conf` (always, under a pathspace). A repair that ran while bgpd was
dead saved a frr.conf without `router bgp`; the restarted bgpd loaded it and stayed empty, and
the agent then saw no drift at all (file and FRR agreed). CI caught it once in a few runs.

And "one value freezes everyone": a node's value FRR refuses must cost only that node's change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.apply.frr import reload as reload_module
from agent.apply.frr.reload import FrrApplier
from agent.config import FrrConfig
from agent.plan.model import FrrDesired, ServerPeer
from agent.process import CommandResult, run_command
from agent.runtime.reconcile import settled_resync
from lab.agent_lab import CLAB_FILE, LEAF
from lab.frr import pid_alive, read_pid
from lab.netns import Lab
from lab.topotest import wait_until

APPLIED = """frr defaults datacenter
hostname leaf1
log syslog informational
service integrated-vtysh-config
!
ip prefix-list KFA-TEST-V4 seq 5 permit 10.244.0.0/16
!
router bgp 65101
 bgp router-id 10.0.0.1
 neighbor swp51 interface remote-as external
 address-family ipv4 unicast
  network 10.0.0.1/32
 exit-address-family
exit
!
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.from_file(CLAB_FILE, prefix="kfaf") as lab:
        yield lab


@pytest.fixture
def applier(lab: Lab) -> FrrApplier:
    cfg = FrrConfig(pathspace=lab.pathspace(LEAF), config_file=str(lab.frr_conf_path(LEAF)),
                    command_timeout_seconds=30)
    return FrrApplier(cfg, drift_settle_seconds=0.5)


def running(lab: Lab) -> str:
    return lab.vtysh(LEAF, "show running-config")


def kill_bgpd(lab: Lab) -> None:
    """A crash: SIGKILL, nothing restarts it until the test does (as watchfrr would)."""
    pid = read_pid(lab.frr(LEAF).pidfile("bgpd"))
    assert pid is not None and pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10.0, "bgpd gone")


def restart_bgpd(lab: Lab) -> None:
    """What watchfrr does: start bgpd and load the SAVED frr.conf into it (vtysh -b -d bgpd)."""
    lab.frr_restart(LEAF, "bgpd")


def stage_leftovers(lab: Lab) -> list[Path]:
    return list(lab.frr_conf_path(LEAF).parent.glob(".kfa-*"))


async def test_apply_saves_exactly_the_confirmed_config(lab: Lab, applier: FrrApplier) -> None:
    result = await applier.apply_text(APPLIED)
    assert result.ok and result.action == "applied", result
    assert lab.frr_conf_path(LEAF).read_text() == APPLIED
    assert "router bgp 65101" in running(lab)
    assert "ip prefix-list KFA-TEST-V4 seq 5 permit 10.244.0.0/16" in running(lab)
    assert (await applier.apply_text(APPLIED)).action == "unchanged"
    assert stage_leftovers(lab) == []


async def test_repair_while_bgpd_is_down_never_saves_a_config_without_it(
    lab: Lab, applier: FrrApplier
) -> None:
    assert (await applier.apply_text(APPLIED)).ok
    kill_bgpd(lab)
    try:
        # bgpd's part is missing from the running config: drift that outlives the settle time.
        # Whatever the repair manages with bgpd dead, FRR's startup file must stay the applied
        # config -- it is what the restarted bgpd will load.
        await settled_resync(applier)
        assert lab.frr_conf_path(LEAF).read_text() == APPLIED
    finally:
        restart_bgpd(lab)
    wait_until(lambda: "router bgp 65101" in running(lab), 15.0,
               "the restarted bgpd running the saved config")
    assert await settled_resync(applier) is None, "FRR runs the applied config again"
    assert stage_leftovers(lab) == []


async def test_drift_that_frr_repairs_itself_is_left_alone(
    lab: Lab, applier: FrrApplier, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await applier.apply_text(APPLIED)).ok
    applier.drift_settle_seconds = 8.0
    kill_bgpd(lab)
    caplog.set_level(logging.INFO, logger="agent.apply.frr.reload")
    task = asyncio.create_task(settled_resync(applier))
    try:
        for _ in range(200):  # until the applier has seen the drift and is settling
            if "checking again" in caplog.text or task.done():
                break
            await asyncio.sleep(0.1)
        assert "checking again" in caplog.text, caplog.text
    finally:
        await asyncio.to_thread(restart_bgpd, lab)  # watchfrr's restart, within the settle time
    assert await task is None, "no repair: the restarted bgpd loaded the applied config itself"
    assert "drifted from the applied config" not in caplog.text  # the repair's warning
    assert "router bgp 65101" in running(lab)


async def test_hand_edit_saved_with_write_memory_is_undone(
    lab: Lab, applier: FrrApplier
) -> None:
    assert (await applier.apply_text(APPLIED)).ok
    lab.vtysh(LEAF, "configure terminal",
              "no ip prefix-list KFA-TEST-V4 seq 5 permit 10.244.0.0/16",
              "ip prefix-list HAND-MADE seq 5 permit 192.0.2.0/24")
    lab.vtysh(LEAF, "write memory")
    assert "HAND-MADE" in lab.frr_conf_path(LEAF).read_text()
    result = await settled_resync(applier)
    assert result is not None and result.ok and result.action == "repaired", result
    assert lab.frr_conf_path(LEAF).read_text() == APPLIED
    config = running(lab)
    assert "KFA-TEST-V4" in config and "HAND-MADE" not in config


def peers_desired(*accept: tuple[str, ...]) -> FrrDesired:
    """The lab leaf's three servers (srv1..3 on swp1..3), each accepting `accept[i]`."""
    return FrrDesired(
        hostname="leaf1", asn=65101, router_id="10.0.0.1",
        server_peers=tuple(ServerPeer(f"swp{i}", f"srv{i}", a) for i, a in enumerate(accept, 1)),
        uplinks=("swp51",), advertise_v4=("10.244.0.0/16",), advertise_v6=(), aggregate_v4=(),
        aggregate_v6=(), max_prefixes=100, max_prefix_restart_minutes=5)


async def test_a_value_frr_refuses_costs_only_its_node(lab: Lab, applier: FrrApplier) -> None:
    first = await applier.apply(peers_desired(
        ("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.3.0/24",)))
    assert first.ok, first
    # srv1 and srv3 gain a prefix; srv2's new value passes the token filter, FRR refuses it.
    result = await applier.apply(peers_desired(
        ("10.244.1.0/24", "10.244.11.0/24"), ("10.244.2.0/40",),
        ("10.244.3.0/24", "10.244.33.0/24")))
    assert result.ok and result.action == "applied-narrowed", result
    assert first.refused == {} and set(result.refused) == {"srv2"}
    assert "Unknown command" in result.refused["srv2"]  # FRR's words
    assert "10.244.2.0/40" in result.refused["srv2"]
    config = running(lab)
    assert "ip prefix-list KFA-NODE-swp1-V4 seq 20 permit 10.244.11.0/24" in config
    assert "ip prefix-list KFA-NODE-swp3-V4 seq 20 permit 10.244.33.0/24" in config
    # What was programmed for srv2 stays, in FRR and in the file a restarted FRR loads.
    assert "ip prefix-list KFA-NODE-swp2-V4 seq 10 permit 10.244.2.0/24" in config
    assert "10.244.2.0/40" not in config
    saved = lab.frr_conf_path(LEAF).read_text()
    assert "permit 10.244.2.0/24" in saved and "permit 10.244.33.0/24" in saved
    # The same desired state again: nothing to do, still refused.
    again = await applier.apply(peers_desired(
        ("10.244.1.0/24", "10.244.11.0/24"), ("10.244.2.0/40",),
        ("10.244.3.0/24", "10.244.33.0/24")))
    assert again.action == "unchanged" and set(again.refused) == {"srv2"}, again
    # srv2's value fixed: a clean apply, and the refusal is gone by itself.
    fixed = await applier.apply(peers_desired(
        ("10.244.1.0/24", "10.244.11.0/24"), ("10.244.22.0/24",),
        ("10.244.3.0/24", "10.244.33.0/24")))
    assert fixed.ok and fixed.action == "applied" and fixed.refused == {}, fixed
    config = running(lab)
    assert "ip prefix-list KFA-NODE-swp2-V4 seq 10 permit 10.244.22.0/24" in config
    assert "permit 10.244.2.0/24" not in config
    assert stage_leftovers(lab) == []


async def test_a_refused_global_line_fails_the_apply_as_before(
    lab: Lab, applier: FrrApplier
) -> None:
    good = peers_desired(("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.3.0/24",))
    assert (await applier.apply(good)).ok
    result = await applier.apply(FrrDesired(**{**good.__dict__, "router_id": "10.0.0.1/40",
                                               "server_peers": peers_desired(
                                                   ("10.244.1.0/24", "10.244.11.0/24"),
                                                   ("10.244.2.0/24",),
                                                   ("10.244.3.0/24",)).server_peers}))
    # Not a node's line: nothing is narrowed, no change reaches FRR (as before narrowing).
    assert not result.ok and result.action == "rejected", result
    assert "10.244.11.0/24" not in running(lab)
    assert result.refused == {}


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every helper the applier runs (argv), recorded on the way to the real one."""
    seen: list[list[str]] = []

    async def recording(argv: list[str], limit: float) -> CommandResult:
        seen.append(argv)
        return await run_command(argv, limit)

    monkeypatch.setattr(reload_module, "run_command", recording)
    return seen


def reload_runs(commands: list[list[str]]) -> int:
    return sum(1 for argv in commands if argv[0].endswith("frr-reload.py"))


async def test_a_change_after_a_confirmed_apply_is_its_delta_in_one_vtysh_call(
    lab: Lab, applier: FrrApplier, commands: list[list[str]]
) -> None:
    """The fast path: after the syntax check, one vtysh call carries the delta and the
    `show running-config` that confirms it; frr-reload.py does not run."""
    assert (await applier.apply(peers_desired(
        ("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.3.0/24",)))).ok
    commands.clear()
    # srv3's prefix replaced under the same seq, srv1 gains one, srv2 is cordoned.
    desired = peers_desired(("10.244.1.0/24", "10.244.11.0/24"), ("10.244.2.0/24",),
                            ("10.244.33.0/24",))
    desired = replace(desired, server_peers=tuple(
        replace(p, draining=True) if p.node == "srv2" else p for p in desired.server_peers))
    result = await applier.apply(desired)
    assert result.ok and result.action == "applied", result
    assert reload_runs(commands) == 0 and len(commands) == 2, commands  # vtysh -C, the delta
    assert "-C" in commands[0] and commands[1][-1] == "show running-config no-header"
    config = running(lab)
    assert "ip prefix-list KFA-NODE-swp3-V4 seq 10 permit 10.244.33.0/24" in config
    assert "10.244.3.0/24" not in config
    assert "ip prefix-list KFA-NODE-swp1-V4 seq 20 permit 10.244.11.0/24" in config
    assert "set local-preference 0" in config
    # Confirmed means frr-reload.py itself finds nothing left to do; the startup file is the
    # candidate, written by the agent only.
    with applier._staged(applier.last_applied or "") as staged:
        assert (await applier.delta(staged, 200)).empty
    assert lab.frr_conf_path(LEAF).read_text() == applier.last_applied
    assert stage_leftovers(lab) == []


async def test_a_hand_edit_since_the_last_apply_makes_the_fast_path_take_the_full_path(
    lab: Lab, applier: FrrApplier, commands: list[list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The in-process diff starts from the last confirmed text; FRR running anything else is
    seen by the confirmation, and the full path (frr-reload.py, from FRR's own running config)
    applies the change and undoes the edit."""
    assert (await applier.apply(peers_desired(
        ("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.3.0/24",)))).ok
    lab.vtysh(LEAF, "configure terminal", "ip prefix-list HAND-MADE seq 5 permit 192.0.2.0/24")
    commands.clear()
    caplog.set_level(logging.INFO, logger="agent.apply.frr.reload")
    result = await applier.apply(peers_desired(
        ("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.34.0/24",)))
    assert result.ok and result.action == "applied", result
    assert "fast FRR apply missed" in caplog.text and "HAND-MADE" in caplog.text
    assert reload_runs(commands) == 3  # --test, --reload, --test
    config = running(lab)
    assert "permit 10.244.34.0/24" in config and "HAND-MADE" not in config


async def test_the_running_config_parses_in_process_as_frr_reload_parses_it(
    lab: Lab, applier: FrrApplier
) -> None:
    """The fast path's confirmation reads `show running-config` without vtysh -m: the same
    contexts as frr-reload.py's own load_from_show_running (which pipes it through vtysh -m)."""
    assert (await applier.apply(peers_desired(
        ("10.244.1.0/24",), ("10.244.2.0/24",), ("10.244.3.0/24",)))).ok
    fast = await applier._fast_path()
    assert fast is not None
    module = fast.library.module
    marked = module.Config(module.Vtysh("/usr/bin", pathspace=lab.pathspace(LEAF)))
    marked.load_from_show_running(None)
    # As the fast path asks (from the agent's namespace: the host name FRR shows is its own).
    shown = await run_command([*fast.vtysh, "-c", "show running-config no-header"], 60)
    ours = fast.library.parse_running(shown.stdout)
    assert [(k, c.lines) for k, c in ours.contexts.items()] == [
        (k, c.lines) for k, c in marked.contexts.items()]
    assert any(k[0].startswith("router bgp") for k in ours.contexts)
