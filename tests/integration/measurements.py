"""Numbers the integration tests measure, printed in pytest's terminal summary (and so in CI)."""

from __future__ import annotations

import pytest

MEASUREMENTS = pytest.StashKey[list[str]]()


def record(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(MEASUREMENTS, []).append(line)
