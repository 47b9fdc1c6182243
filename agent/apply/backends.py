"""Which appliers run here: `dataplane.backend` names a backend package (agent.apply.linux,
agent.apply.sonic), whose `open_backend(config)` prepares what the backend needs and returns
the appliers. The runtime never asks which backend it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.apply.contract import Applier, Feedback
from agent.config import AgentConfig
from agent.plan.model import DataplaneDesired, FrrDesired


@dataclass
class Backend:
    config: AgentConfig  # as the backend completed it (SONiC: identity from CONFIG_DB)
    frr: Applier[FrrDesired]
    # The data plane applier talks back through the runtime's Feedback, made after this.
    make_dataplane: Callable[[Feedback], Applier[DataplaneDesired]]
    close: Callable[[], Awaitable[None]]  # releases what open_backend opened (not the state)


async def open_backend(config: AgentConfig) -> Backend:
    """Raises agent.errors.StartupError when the backend cannot run here."""
    module = importlib.import_module(f"agent.apply.{config.dataplane.backend}.backend")
    backend: Backend = await module.open_backend(config)
    return backend
