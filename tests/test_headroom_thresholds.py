"""CRM-like thresholds with hysteresis (agent/headroom/thresholds.py)."""

from __future__ import annotations

import pytest

from agent.headroom.thresholds import Threshold, ThresholdTracker, measure


def kinds(tracker: ThresholdTracker, resource: str, used: int, capacity: int | None) -> list[str]:
    return [c.kind for c in tracker.update(resource, used, capacity)]


def test_defaults_are_crms() -> None:
    t = ThresholdTracker().threshold("ipv4_routes")
    assert (t.type, t.high, t.low) == ("percentage", 85.0, 70.0)


def test_rise_once_hold_between_levels_clear_once_rise_again() -> None:
    tracker = ThresholdTracker()
    assert tracker.state("ipv4_routes") == "unknown"
    assert kinds(tracker, "ipv4_routes", 50, 100) == []
    assert tracker.state("ipv4_routes") == "ok"
    assert kinds(tracker, "ipv4_routes", 84, 100) == []  # just below high
    assert kinds(tracker, "ipv4_routes", 85, 100) == ["raised"]  # reaching high raises
    assert kinds(tracker, "ipv4_routes", 95, 100) == []  # once only
    assert kinds(tracker, "ipv4_routes", 85, 100) == []
    for used in (80, 71, 84, 71):  # between low and high: stays raised, no flapping
        assert kinds(tracker, "ipv4_routes", used, 100) == []
        assert tracker.state("ipv4_routes") == "raised"
    assert kinds(tracker, "ipv4_routes", 70, 100) == ["cleared"]  # to or below low clears
    assert tracker.state("ipv4_routes") == "ok"
    assert kinds(tracker, "ipv4_routes", 60, 100) == []
    assert kinds(tracker, "ipv4_routes", 84, 100) == []  # below high after clearing: quiet
    assert kinds(tracker, "ipv4_routes", 90, 100) == ["raised"]  # and raises again


def test_resources_are_independent() -> None:
    tracker = ThresholdTracker()
    assert kinds(tracker, "remote_vteps", 120, 128) == ["raised"]
    assert kinds(tracker, "fdb_entries", 120, 128) == ["raised"]
    assert kinds(tracker, "remote_vteps", 10, 128) == ["cleared"]
    assert tracker.state("fdb_entries") == "raised"


def test_used_type() -> None:
    tracker = ThresholdTracker({"neighbors": Threshold("used", high=40, low=30)})
    assert kinds(tracker, "neighbors", 39, None) == []  # needs no capacity
    assert kinds(tracker, "neighbors", 40, None) == ["raised"]
    assert kinds(tracker, "neighbors", 31, None) == []
    assert kinds(tracker, "neighbors", 30, None) == ["cleared"]


def test_free_type_raises_when_little_is_free() -> None:
    tracker = ThresholdTracker({"remote_vteps": Threshold("free", high=20, low=10)})
    assert kinds(tracker, "remote_vteps", 100, 128) == []  # 28 free
    assert kinds(tracker, "remote_vteps", 118, 128) == ["raised"]  # 10 free
    assert kinds(tracker, "remote_vteps", 110, 128) == []  # 18 free: still raised
    assert kinds(tracker, "remote_vteps", 108, 128) == ["cleared"]  # 20 free


def test_unknown_capacity_keeps_the_state() -> None:
    tracker = ThresholdTracker()
    assert kinds(tracker, "ipv6_routes", 90, 100) == ["raised"]
    assert kinds(tracker, "ipv6_routes", 0, None) == []  # unknown is not a recovery
    assert tracker.state("ipv6_routes") == "raised"


def test_zero_capacity_is_full_as_soon_as_used() -> None:
    assert measure(Threshold(), 0, 0) == 0
    assert measure(Threshold(), 1, 0) == 100


def test_crossing_message_names_numbers() -> None:
    tracker = ThresholdTracker()
    (crossing,) = tracker.update("remote_vteps", 110, 128)
    text = str(crossing)
    assert "remote_vteps" in text and "exceeded" in text and "110 used of 128" in text
    assert "level 85" in text
    (cleared,) = tracker.update("remote_vteps", 64, 128)
    assert "clear" in str(cleared) and "level 70" in str(cleared)


def test_update_all_in_report_order() -> None:
    tracker = ThresholdTracker()
    crossings = tracker.update_all({"remote_vteps": 128, "ipv4_routes": 99},
                                   {"remote_vteps": 128, "ipv4_routes": 100})
    assert [c.resource for c in crossings] == ["ipv4_routes", "remote_vteps"]


@pytest.mark.parametrize("args", [
    ("percentage", 70, 70), ("percentage", 60, 70), ("percentage", 120, 70),
    ("bytes", 85, 70), ("used", 5, -1),
])
def test_invalid_thresholds(args: tuple[str, float, float]) -> None:
    with pytest.raises(ValueError):
        Threshold(*args)  # type: ignore[arg-type]


def test_unknown_resource_is_an_error() -> None:
    with pytest.raises(ValueError):
        ThresholdTracker({"routes": Threshold()})
    with pytest.raises(ValueError):
        ThresholdTracker().update("routes", 1, 2)
