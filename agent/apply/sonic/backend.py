"""The SONiC backend: the data plane in APPL_DB (as swss-common's producers write it), FRR
through frr-reload.py in the split routing config modes, or not at all where bgpcfgd owns it."""

from __future__ import annotations

from agent.apply.backends import Backend
from agent.apply.contract import Feedback
from agent.apply.frr.reload import FrrApplier
from agent.apply.frr.unmanaged import UnmanagedFrr
from agent.apply.sonic.applier import SonicDataplane
from agent.apply.sonic.startup import prepare
from agent.config import AgentConfig


async def open_backend(config: AgentConfig) -> Backend:
    """Opens SONiC's databases and completes the switch's identity from CONFIG_DB (StartupError
    when that fails). The data plane applier owns the databases from then on and closes them."""
    start = await prepare(config)
    frr = (FrrApplier(start.config.frr) if start.frr_refusal is None
           else UnmanagedFrr(start.frr_refusal))

    def make_dataplane(feedback: Feedback) -> SonicDataplane:
        return SonicDataplane.from_start(start, feedback)

    async def close() -> None:
        await start.db.close()  # harmless after the applier closed it

    return Backend(start.config, frr, make_dataplane, close)
