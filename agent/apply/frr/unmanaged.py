"""The FRR applier for a switch whose FRR belongs to someone else (SONiC's unified and separated
routing config modes: bgpcfgd renders FRR from CONFIG_DB, and a full-file reload would delete
its sessions). It writes nothing and says so in every result.

Its result fails only while some node wants a BGP session it cannot get: a rack of static and
VXLAN nodes is served fully by the data plane, and its health is then ok.
"""

from __future__ import annotations

import time

from agent.apply.contract import ApplyResult, NothingOfItsOwn
from agent.plan.model import FrrDesired


class UnmanagedFrr(NothingOfItsOwn):
    name = "frr"

    def __init__(self, reason: str) -> None:
        self.reason = reason  # why FRR is not managed here, for the status and STATE_DB

    async def apply(self, desired: FrrDesired) -> ApplyResult:
        wants_bgp = any(p.node for p in desired.server_peers)
        return ApplyResult("frr", not wants_bgp, "not-managed", time.time(), 0.0,
                           error=self.reason)

    async def resync(self) -> ApplyResult | None:
        return None  # nothing of ours to drift
