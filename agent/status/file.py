"""The status file and systemd's STATUS= line, both rendered from the observed state.

The file (`status.state_file`, JSON) lets an engineer, a lab or a monitoring script see at once
whether the agent serves fresh or last-known state, what it applied and what it refused,
without a gRPC client. Its keys are read by the lab and its tests: keep them.
"""

from __future__ import annotations

import grp
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agent.status.services import services_summary, state_counts
from agent.status.state import ObservedState
from agent.status.view import AgentView

SUMMARY_MAX = 400  # systemd shows STATUS= on one line


def _last_apply(state: ObservedState, applier: str) -> dict[str, Any] | None:
    result = state.results.get(applier)
    if result is None:
        return None
    summary = result.summary()
    del summary["applier"]
    return summary


def summary_line(state: ObservedState) -> str:
    """systemd's STATUS=: the API connection, attachments, refusals, Service VIPs by state
    (when there are any), FRR's last apply."""
    k = state.kubernetes()
    if not k.synced:
        api = "waiting for the Kubernetes API" + (f" ({k.last_error})" if k.last_error else "")
    elif not k.connected:
        api = "Kubernetes API unreachable, serving last known state"
    else:
        api = "Kubernetes API connected"
    frr = "no FRR apply yet"
    last = state.results.get("frr")
    if last is not None:
        frr = f"FRR {last.action}"
        if not last.ok:
            frr += ", keeping the last good config"
    attachments = len(state.plan.attachments) if state.plan else 0
    refusals = len(state.refusals())
    vips = ""
    if state.plan is not None and state.plan.services:
        counts = state_counts(AgentView(state).services())
        vips = f"; {len(state.plan.services)} Service VIPs (" + ", ".join(
            f"{n} {word}" for word, n in counts.items() if n) + ")"
    return f"{api}; {attachments} attachments, {refusals} refusals{vips}; {frr}"[:SUMMARY_MAX]


def status_document(state: ObservedState) -> dict[str, Any]:
    k = state.kubernetes()
    plan = state.plan
    return {
        "started": state.started_at,
        "kubernetes": {
            "connected": k.connected, "synced": k.synced, "last_error": k.last_error,
            "seconds_since_contact": k.seconds_since_contact,
            "resource_version": k.resource_version, "nodes": k.nodes,
        },
        "serving_last_known_state": k.serving_last_known_state,
        "frr_last_apply": _last_apply(state, "frr"),
        "frr_last_error": state.frr_last_error,
        "dataplane_last_apply": _last_apply(state, "dataplane"),
        "last_reconcile_latency_seconds": state.last_reconcile_latency,
        "attachments": [asdict(a) for a in plan.attachments] if plan else [],
        "refusals": [str(r) for r in state.refusals()],
        "lldp_error": state.lldp_error,
        # Routes the ASIC refused (rt_offload_failed), all protocols: forwarded by the CPU.
        "offload_failed_routes": {"ipv4": state.offload_failed.get(4, 0),
                                  "ipv6": state.offload_failed.get(6, 0)},
        # Service VIPs: counts by state, and the first SUMMARY_MAX_VIPS (problems first).
        "services": services_summary(AgentView(state).services()),
        "summary": summary_line(state),
    }


def group_id(group: str | int | None) -> int:
    """A group name or id as a gid; -1 for none (chown leaves the group as it is)."""
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"status socket group {group!r} does not exist") from None


def write_status_file(path: str | Path, state: ObservedState, gid: int = -1) -> None:
    """Atomically: a reader never sees half a file. Mode 0640, group `gid` (the status
    socket's): the file names nodes and prefixes, which the socket shows only to that group."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status_document(state), f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o640)
        if gid >= 0:
            os.chown(tmp, -1, gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
