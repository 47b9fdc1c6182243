"""The agent's status as plain data: what it knows, what it did, what it refused.

Built from the informer, the last plan and the appliers' last results; written to a JSON file
(and summarised for systemd's STATUS=) so an engineer can see at once whether the agent is
serving fresh or last-known state.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.apply.frr.reload import ApplyResult
from agent.plan.build import Plan


@dataclass
class KubernetesStatus:
    connected: bool = False
    synced: bool = False
    last_error: str | None = None
    seconds_since_contact: float | None = None
    resource_version: str = ""
    nodes: int = 0


@dataclass
class Status:
    started: float = field(default_factory=time.time)
    kubernetes: KubernetesStatus = field(default_factory=KubernetesStatus)
    frr_last_apply: dict[str, Any] | None = None
    frr_last_error: str | None = None
    dataplane_last_apply: dict[str, Any] | None = None
    last_reconcile_latency_seconds: float | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    lldp_error: str | None = None
    # Routes the ASIC refused (rt_offload_failed), all protocols: forwarded by the CPU.
    offload_failed_routes: dict[str, int] = field(
        default_factory=lambda: {"ipv4": 0, "ipv6": 0})

    @property
    def serving_last_known_state(self) -> bool:
        return self.kubernetes.synced and not self.kubernetes.connected

    def record_plan(self, plan: Plan) -> None:
        self.attachments = [asdict(a) for a in plan.attachments]
        self.refusals = [str(r) for r in plan.refusals]

    def record_apply(self, result: ApplyResult) -> None:
        if result.action == "unchanged":
            return
        self.frr_last_apply = {
            "ok": result.ok,
            "action": result.action,
            "at": result.started,
            "duration_seconds": round(result.duration, 3),
            "error": result.error,
            "changes": len(result.delta.to_add) + len(result.delta.to_delete),
        }
        if not result.ok:
            self.frr_last_error = result.error

    def summary(self) -> str:
        k = self.kubernetes
        if not k.synced:
            api = "waiting for the Kubernetes API" + (f" ({k.last_error})" if k.last_error else "")
        elif not k.connected:
            api = "Kubernetes API unreachable, serving last known state"
        else:
            api = "Kubernetes API connected"
        frr = "no FRR apply yet"
        if self.frr_last_apply:
            frr = f"FRR {self.frr_last_apply['action']}"
            if not self.frr_last_apply["ok"]:
                frr += ", keeping the last good config"
        return (f"{api}; {len(self.attachments)} attachments, {len(self.refusals)} refusals; "
                f"{frr}")[:400]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["serving_last_known_state"] = self.serving_last_known_state
        data["summary"] = self.summary()
        return data


def write_status_file(path: str | Path, status: Status) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(status.to_json(), f, indent=2, sort_keys=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
