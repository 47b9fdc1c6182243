"""The daemon's side of offload failures: crafted route messages carrying RTM_F_OFFLOAD_FAILED
fed to LinuxDataplane's event reader, turned by the daemon into a data plane health failure and
one event. No switchdev here, so no kernel route ever carries the flag: the messages are packed
by hand (tests/test_linux_offload_wiring.py holds the applier's own offload tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest

from agent.apply.linux.applier import LinuxDataplane
from agent.apply.linux.offload import RTM_DELROUTE, RTM_F_OFFLOAD
from agent.config import parse_config
from agent.informers.kubeapi import KubeApi
from agent.runtime.daemon import Agent
from tests.test_linux_fakes import FakeEvents
from tests.test_linux_offload_wiring import BGP, FAILED, feed, make_plane, msg


@pytest.fixture
def plane() -> tuple[LinuxDataplane, FakeEvents]:
    return make_plane()


def linux_agent(tmp_path: Path) -> Agent:
    config = parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": {"server_ports": ["swp1"], "pod_supernets": ["10.244.0.0/16"]},
        "kubernetes": {"watch_pods": False},
        "status": {"state_file": str(tmp_path / "status.json")},
    })
    agent = Agent(config, cast(KubeApi, object()))
    agent.nodes.synced = agent.nodes.connected = True
    return agent


async def test_daemon_reports_offload_failures_in_health_and_one_event(
    plane: tuple[LinuxDataplane, FakeEvents], tmp_path: Path
) -> None:
    dp, events = plane
    agent = linux_agent(tmp_path)
    agent._offload_counts = dp.offload_failed_counts  # what start_dataplane() wires
    agent._check_offload()
    assert agent.view.status().health == "ok"

    await feed(dp, events, msg("10.244.1.0/24", FAILED), msg("fd00:1::/64", FAILED, proto=BGP))
    agent._check_offload()
    status = agent.view.status()
    assert status.health == "degraded"
    assert status.health_reasons == (
        "last dataplane apply failed: 2 routes not offloaded to the ASIC (rt_offload_failed): "
        "IPv4 1, IPv6 1",)
    await feed(dp, events, msg("10.244.2.0/24", FAILED))
    agent._check_offload()
    agent._check_offload()
    assert "3 routes not offloaded" in agent.view.status().health_reasons[0]
    agent.publish_status()
    on_disk = json.loads((tmp_path / "status.json").read_text())
    assert on_disk["offload_failed_routes"] == {"ipv4": 2, "ipv6": 1}

    await feed(dp, events, msg("10.244.1.0/24", event=RTM_DELROUTE),
               msg("10.244.2.0/24", RTM_F_OFFLOAD), msg("fd00:1::/64", proto=BGP,
                                                         event=RTM_DELROUTE))
    agent._check_offload()
    assert agent.view.status().health == "ok"
    crossed = [e for e in agent.events.history() if e.kind == "threshold_crossed"]
    assert [(e.subject, e.message) for e in crossed] == [
        ("rt_offload_failed",
         "2 routes not offloaded to the ASIC (rt_offload_failed): IPv4 1, IPv6 1"),
        ("rt_offload_failed",
         "every route is offloaded to the ASIC again (no rt_offload_failed)"),
    ]
    agent.events.close()
