"""The Linux backend: FRR through frr-reload.py, the data plane through rtnetlink."""

from __future__ import annotations

from agent.apply.backends import Backend
from agent.apply.contract import Feedback
from agent.apply.frr.reload import FrrApplier
from agent.apply.linux.applier import LinuxDataplane
from agent.config import AgentConfig


async def _nothing() -> None:
    """Nothing opened before the appliers; they close their own sockets."""


async def open_backend(config: AgentConfig) -> Backend:
    def make_dataplane(feedback: Feedback) -> LinuxDataplane:
        return LinuxDataplane(config.dataplane, feedback)

    return Backend(config, FrrApplier(config.frr), make_dataplane, _nothing)
