"""lab.topotest.hold, the window the integration tests prove "nothing happened" with. No lab:
plain functions, here because the tests of this folder are the ones that rely on it."""

from __future__ import annotations

import time

import pytest

from lab.topotest import hold


def test_hold_for_seconds_checks_at_the_start_and_at_the_end() -> None:
    seen: list[float] = []
    started = time.monotonic()
    checks = hold(lambda: seen.append(time.monotonic()), seconds=0.5, interval=0.1)
    assert checks == len(seen) >= 5
    assert seen[0] - started < 0.05 and seen[-1] - started >= 0.5


def test_a_violation_fails_at_once_and_is_never_retried() -> None:
    calls = []

    def invariant() -> None:
        calls.append(1)
        assert len(calls) < 3, "changed"
    started = time.monotonic()
    with pytest.raises(AssertionError, match="changed"):
        hold(invariant, seconds=10.0, interval=0.01)
    assert len(calls) == 3 and time.monotonic() - started < 1.0


def test_hold_until_returns_the_value_and_checks_the_invariant_each_time() -> None:
    polls = iter([None, ValueError("not yet"), 0, "done"])
    checks = []

    def until() -> object:
        value = next(polls)
        if isinstance(value, Exception):
            raise value
        return value
    assert hold(lambda: checks.append(1), until=until, timeout=5.0, interval=0.01) == "done"
    assert len(checks) == 4


def test_hold_until_times_out_with_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the thing\nlast value: 0"):
        hold(lambda: None, until=lambda: 0, timeout=0.2, desc="the thing", interval=0.05)


def test_hold_needs_one_kind_of_window() -> None:
    with pytest.raises(ValueError):
        hold(lambda: None)
    with pytest.raises(ValueError):
        hold(lambda: None, seconds=1.0, until=lambda: True)
    with pytest.raises(ValueError):
        hold(lambda: None, until=lambda: True)
