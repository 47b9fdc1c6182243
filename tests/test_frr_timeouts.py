"""Each FRR helper has a timeout fitting what it does (a hung reload used to cost 120 s: the
config's one limit for the reload, then again for the rollback). A helper that hangs is killed,
its children with it, and the apply fails saying which command and after how long; the runtime
retries it with backoff (agent.runtime.reconcile).

FAKE HELPERS: nothing real hangs on demand, so the hanging vtysh / frr-reload.py here are shell
scripts written by the test (see `hanging`). Everything else is real: vtysh -C judges the
candidate where the fake is not the vtysh, and run_command kills real process groups.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.apply.frr.reload import FrrApplier
from agent.apply.frr.timeouts import Timeouts
from agent.config import FrrConfig
from agent.plan.model import FrrDesired, ServerPeer

LINE = "ip prefix-list X seq 5 permit 10.0.0.0/8"
CONFIG = f"frr defaults traditional\nhostname leaf1\n!\n{LINE}\n!\n"
# Short limits, each different, so the error says whose limit applied (not a wall-clock check).
SHORT = Timeouts(ceiling=60.0, check=0.4, test_base=0.7, test_per_1000_lines=0.0,
                 reload_base=0.9, reload_per_1000_lines=0.0)


def hanging(tmp_path: Path, name: str, hang_on: str) -> tuple[Path, Path]:
    """A FAKE helper: for the argument `hang_on` it starts a child that sleeps (as frr-reload.py
    runs vtysh) and waits; for --test it prints a one-line delta, so a reload follows."""
    pidfile = tmp_path / f"{name}.child.pid"
    script = tmp_path / name
    script.write_text(f"""#!/bin/sh
# FAKE {name} for tests/test_frr_timeouts.py: hangs on {hang_on}.
for arg in "$@"; do
  if [ "$arg" = "{hang_on}" ]; then sleep 600 & echo $! > {pidfile}; wait; fi
done
if [ "$1" = "--test" ]; then printf 'Lines To Add\\n============\\n{LINE}\\n'; fi
exit 0
""")
    script.chmod(0o755)
    return script, pidfile


async def gone(pid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _state(pid) != "Z":
        assert time.monotonic() < deadline, f"the hung helper's child {pid} is still running"
        await asyncio.sleep(0.05)


def _state(pid: int) -> str:
    """The process's state letter; "Z" (done) also when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


@pytest.mark.parametrize(("helper", "hang_on", "command", "limit"), [
    ("reload", "--reload", "frr-reload.py --reload", SHORT.reload_base),
    ("reload", "--test", "frr-reload.py --test", SHORT.test_base),
    ("vtysh", "-C", "vtysh -C", SHORT.check),
])
async def test_a_hung_helper_is_killed_at_its_own_timeout(
    tmp_path: Path, helper: str, hang_on: str, command: str, limit: float
) -> None:
    fake, pidfile = hanging(tmp_path, f"fake-{helper}", hang_on)
    reload_script, _ = (fake, None) if helper == "reload" else hanging(tmp_path, "quiet", "-")
    cfg = FrrConfig(config_file=str(tmp_path / "frr.conf"), reload_script=str(reload_script),
                    vtysh=str(fake) if helper == "vtysh" else "/usr/bin/vtysh")
    applier = FrrApplier(cfg, timeouts=SHORT)
    result = await applier.apply_text(CONFIG)
    assert not result.ok and result.action == "failed", result
    assert result.error == f"{command}: no answer within {limit:g} s; killed"
    assert applier.last_applied is None and not (tmp_path / "frr.conf").exists()
    await gone(int(pidfile.read_text()))


def test_each_command_gets_a_limit_fitting_its_work_under_the_configured_ceiling() -> None:
    t = Timeouts(ceiling=60.0)
    assert t.for_check() == 10.0
    assert t.for_test(0) == 10.0 and t.for_test(2000) == 14.0
    assert t.for_reload(150) == pytest.approx(16.5)  # the lab leaf: ~150 lines
    assert t.for_reload(4000) == 55.0 and t.for_reload(100_000) == 60.0  # capped
    assert Timeouts(ceiling=5.0).for_reload(150) == 5.0
    # The applier's default: the config's command_timeout_seconds is the ceiling.
    applier = FrrApplier(FrrConfig(command_timeout_seconds=30.0))
    assert applier.timeouts == Timeouts(ceiling=30.0)


async def test_a_check_that_hangs_while_narrowing_leaves_the_refusal_standing(
    tmp_path: Path,
) -> None:
    """FAKE vtysh: refuses the first candidate naming no line (so changed peers are checked one
    by one), then hangs. The apply is FRR's refusal, reported; nothing escapes apply()."""
    marker, pidfile = tmp_path / "refused-once", tmp_path / "vtysh.child.pid"
    fake = tmp_path / "fake-vtysh"
    fake.write_text(f"""#!/bin/sh
# FAKE vtysh for tests/test_frr_timeouts.py: refuses once without a line number, then hangs.
if [ ! -e {marker} ]; then touch {marker}; echo '% Configuration refused'; exit 1; fi
sleep 600 & echo $! > {pidfile}; wait
""")
    fake.chmod(0o755)
    cfg = FrrConfig(config_file=str(tmp_path / "frr.conf"), vtysh=str(fake))
    applier = FrrApplier(cfg, timeouts=SHORT)
    desired = FrrDesired(hostname="leaf1", asn=65101, router_id="10.0.0.1",
                         server_peers=(ServerPeer("swp1", "srv1", ("10.244.1.0/24",)),),
                         uplinks=(), advertise_v4=(), advertise_v6=(), aggregate_v4=(),
                         aggregate_v6=(), max_prefixes=100, max_prefix_restart_minutes=5)
    result = await applier.apply(desired)
    assert not result.ok and result.action == "rejected", result
    assert result.error is not None and "% Configuration refused" in result.error
    await gone(int(pidfile.read_text()))
