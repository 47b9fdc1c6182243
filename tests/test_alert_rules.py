"""The Prometheus alert rules (deploy/prometheus/) pass promtool's own unit tests on synthetic
series, and those series and rules name only metrics and labels the agent really exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from agent.status.metrics import Metrics

RULES_DIR = Path(__file__).parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "kube-fabric-agent.rules.yaml"
TESTS = RULES_DIR / "kube-fabric-agent.tests.yaml"
# Labels Prometheus adds when it scrapes, not the agent.
TARGET_LABELS = {"job", "instance"}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (scripts/setup.sh)"
    return promtool


def test_rules_are_valid() -> None:
    res = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    res = subprocess.run([_promtool(), "test", "rules", TESTS.name], cwd=RULES_DIR,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def _exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a real Metrics with one child per labelled metric."""
    m = Metrics()
    m.observe_apply("frr", False, "apply", 0.1)
    m.observe_reconcile(0.1)
    m.bgp_session_up.labels("swp1", "node-a").set(1)
    m.bgp_sessions.labels("established").set(1)
    m.attachments.labels("bgp").set(1)
    for gauge in (m.headroom_used, m.headroom_desired, m.headroom_nodes_left):
        gauge.labels("ipv4_routes").set(1)
    m.headroom_capacity.labels("ipv4_routes", "config").set(1)
    m.update_offload({4: 1})
    return {s.name: set(s.labels) for family in m.registry.collect() for s in family.samples}


def test_synthetic_series_have_the_agents_names_and_labels() -> None:
    exported = _exported()
    series = [s["series"] for t in yaml.safe_load(TESTS.read_text())["tests"]
              for s in t["input_series"]]
    checked = 0
    for text in series:
        match = re.fullmatch(r"(\w+)\{(.*)\}", text)
        assert match, text
        name, labels = match[1], set(re.findall(r"(\w+)=", match[2]))
        if not name.startswith("kube_fabric_agent_"):
            continue  # up (Prometheus), kube_node_status_condition (kube-state-metrics)
        assert name in exported, f"{name} is not exported by agent/status/metrics.py"
        assert labels - TARGET_LABELS == exported[name], (name, labels, exported[name])
        checked += 1
    assert checked >= 5


def test_rules_name_only_exported_metrics() -> None:
    exported = _exported()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    names = {n for expr in exprs for n in re.findall(r"kube_fabric_agent_\w+", expr)}
    assert names
    assert names <= exported.keys(), names - exported.keys()
