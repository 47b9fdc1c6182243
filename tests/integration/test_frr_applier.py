"""The FRR applier against a real FRR 8.4 leaf (no agent, no Kubernetes): what it saves as FRR's
startup config, and how it behaves while a daemon is down or being restarted.

The case behind this file: frr-reload.py --reload ends with `vtysh write` whenever the file it
loads is not `<confdir>/frr.conf` (always, under a pathspace). A repair that ran while bgpd was
dead saved a frr.conf without `router bgp`; the restarted bgpd loaded it and stayed empty, and
the agent then saw no drift at all (file and FRR agreed). CI caught it once in a few runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.apply.frr.reload import FrrApplier
from agent.config import FrrConfig
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
