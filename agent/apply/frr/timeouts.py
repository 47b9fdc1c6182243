"""How long each FRR helper may take before it is killed ("a hung reload costs 120 s").

One timeout for every command made a hung `frr-reload.py --reload` cost the configured limit
twice (the reload, then the rollback's reload) before the runtime could even retry. Each command
now gets a limit fitting what it does; `frr.command_timeout_seconds` (config) stays the ceiling
of all of them. Measured on the lab leaf (FRR 8.4, 129 lines, namespaces on a shared CI VM):
`vtysh -C` 0.05 s, `show running-config` 0.06 s, `--test` 0.35 s, a whole apply (check, test,
reload, test) 1.3-3.7 s; the limits leave 5x or more above the slowest seen.
"""

from __future__ import annotations

from dataclasses import dataclass

# `vtysh -C -f`: vtysh parses the file itself, no daemon is asked; only a starved CPU makes it
# slow.
CHECK_SECONDS = 10.0
# `frr-reload.py --test`: `show running-config` from every daemon, then a diff in Python; the
# diff grows with the file.
TEST_BASE_SECONDS = 10.0
TEST_SECONDS_PER_1000_LINES = 2.0
# `frr-reload.py --reload`: the --test work, then one vtysh call per changed block; bgpd
# re-evaluating policy for many peers is the slow part, so it scales with the file too.
RELOAD_BASE_SECONDS = 15.0
RELOAD_SECONDS_PER_1000_LINES = 10.0
# The fast path's one vtysh call: the delta's commands (each a round trip to every daemon), then
# `show running-config`; measured 0.05-0.2 s on the lab and a 48-port leaf.
DELTA_BASE_SECONDS = 10.0
DELTA_SECONDS_PER_1000_COMMANDS = 10.0


@dataclass(frozen=True)
class Timeouts:
    """Per-command limits in seconds; every one capped by `ceiling` (the config's)."""

    ceiling: float = 60.0
    check: float = CHECK_SECONDS
    test_base: float = TEST_BASE_SECONDS
    test_per_1000_lines: float = TEST_SECONDS_PER_1000_LINES
    reload_base: float = RELOAD_BASE_SECONDS
    reload_per_1000_lines: float = RELOAD_SECONDS_PER_1000_LINES
    delta_base: float = DELTA_BASE_SECONDS
    delta_per_1000_commands: float = DELTA_SECONDS_PER_1000_COMMANDS

    def for_check(self) -> float:
        return min(self.check, self.ceiling)

    def for_test(self, lines: int) -> float:
        return min(self.test_base + self.test_per_1000_lines * lines / 1000, self.ceiling)

    def for_reload(self, lines: int) -> float:
        return min(self.reload_base + self.reload_per_1000_lines * lines / 1000, self.ceiling)

    def for_delta(self, commands: int) -> float:
        return min(self.delta_base + self.delta_per_1000_commands * commands / 1000,
                   self.ceiling)
