"""The runtime's side of the applier contract, for backend tests: a Feedback that records every
call (agent.runtime.reconcile.RuntimeFeedback is the real one, tested in tests/test_runtime.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.apply.contract import HardwareReading


class RecordingFeedback:
    def __init__(self) -> None:
        self.replans: list[str] = []
        self.readings: list[HardwareReading] = []
        self.offload: list[dict[int, int]] = []

    def replan(self, reason: str) -> None:
        self.replans.append(reason)

    def hardware(self, reading: HardwareReading) -> None:
        self.readings.append(reading)

    def offload_failed(self, per_family: Mapping[int, int]) -> None:
        self.offload.append(dict(per_family))
