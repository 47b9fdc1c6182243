"""Integration tests run as root in network namespaces with real FRR. Without root they fail
with the reason instead of skipping: CI runs as root, and a silent skip would hide a regression."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.agent_lab import AgentLab
from tests.integration.measurements import MEASUREMENTS, record


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "integration tests need root (network namespaces, FRR): run the README's "
            "test command as root",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[AgentLab]:
    """One lab per test module, against a real kube-apiserver + etcd (bringing it up costs
    ~10 s, most of it the API server's start); tests leave it as they found it or say in their
    name what they change."""
    with AgentLab(prefix="kfat", api="real") as lab_env:
        record(request.config, lab_env.api_description())
        try:
            yield lab_env
        finally:
            log = lab_env.agent_log
            if log.exists():
                print("---- agent log (tail) ----")
                print(log.read_text()[-4000:])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(MEASUREMENTS, [])
    if lines:
        terminalreporter.section("kube-fabric-agent measurements")
        for line in lines:
            terminalreporter.write_line(line)
