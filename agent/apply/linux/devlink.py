"""The ASIC's table sizes as its driver reports them: `devlink -j resource show`, mapped onto
the agent's headroom resources by agent.headroom.devlink. They change when an engineer picks
another forwarding profile (`devlink resource set` + reload), so the applier reads them at start
and every DEVLINK_POLL_SECONDS.
"""

from __future__ import annotations

import json
import logging
import shutil

from agent.headroom.devlink import views
from agent.headroom.resources import Capacity
from agent.process import run_command

log = logging.getLogger(__name__)

DEVLINK_POLL_SECONDS = 300.0


async def discover_devlink() -> dict[str, Capacity]:
    """Per-resource capacities the switch ASIC's driver reports through devlink, if any."""
    devlink = shutil.which("devlink")
    if devlink is None:
        return {}
    try:
        res = await run_command([devlink, "-j", "resource", "show"], limit_seconds=10.0)
        if res.returncode != 0 or not res.stdout.strip():
            return {}
        found: dict[str, Capacity] = {}
        for view in views(json.loads(res.stdout)):
            for note in view.notes:
                log.info("devlink %s", note)
            found.update(view.capacities)
        return found
    except (OSError, ValueError, TimeoutError) as exc:
        log.info("no devlink resources: %s", exc)
        return {}
