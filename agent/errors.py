"""Exit codes of `fabric-agent` and the error that carries one out of library code.

Library code never calls sys.exit: it raises StartupError, and only agent.cli turns it into the
process's exit status (systemd and check-config's callers read it).
"""

from __future__ import annotations

EXIT_FAILURE = 1  # a dependency is unreachable at start (the unit restarts the agent)
EXIT_CONFIG = 2  # the configuration (file, or SONiC's CONFIG_DB values) is refused
EXIT_INPUT = 3  # an input file of an offline command cannot be read


class StartupError(Exception):
    """The agent cannot start; `problems` are logged one per line, then it exits with
    `exit_code`."""

    def __init__(self, problems: list[str] | str, exit_code: int = EXIT_FAILURE) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.exit_code = exit_code
        super().__init__("; ".join(self.problems))
