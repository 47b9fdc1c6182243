"""DeltaTracker (agent/apply/linux/delta.py) on plain data, as Calico felix tests its own: the
difference between desired and dataplane, kept up to date by whole-table replaces (dumps, a new
plan) and by single-key changes (acknowledged writes, kernel events)."""

from __future__ import annotations

from agent.apply.linux.delta import DeltaTracker


def tracker(desired: dict[str, str], dataplane: dict[str, str]) -> DeltaTracker[str, str]:
    t: DeltaTracker[str, str] = DeltaTracker()
    t.replace_desired(dict(desired))
    t.replace_dataplane(dict(dataplane))
    return t


def pending(t: DeltaTracker[str, str]) -> tuple[dict[str, str], set[str]]:
    return dict(t.pending_updates()), set(t.pending_deletions())


def test_empty_is_in_sync() -> None:
    t: DeltaTracker[str, str] = DeltaTracker()
    assert t.in_sync and pending(t) == ({}, set())


def test_desired_against_an_empty_dataplane_is_all_updates() -> None:
    t = tracker({"a": "1", "b": "2"}, {})
    assert pending(t) == ({"a": "1", "b": "2"}, set())
    assert not t.in_sync


def test_a_dump_leaves_only_the_difference() -> None:
    # a matches, b has another value, c is missing, x is ours and nobody wants it
    t = tracker({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "x": "7"})
    assert pending(t) == ({"b": "2", "c": "3"}, {"x"})


def test_acknowledged_writes_and_deletes_bring_it_in_sync() -> None:
    t = tracker({"a": "1", "b": "2"}, {"b": "9", "x": "7"})
    for key, value in t.pending_updates():  # a snapshot: safe to write through
        t.dataplane_set(key, value)
    for key in t.pending_deletions():
        t.dataplane_delete(key)
    assert t.in_sync and pending(t) == ({}, set())
    assert dict(t.dataplane) == {"a": "1", "b": "2"}


def test_a_desired_key_changed_or_removed_behind_our_back_is_pending_again() -> None:
    t = tracker({"a": "1", "b": "2"}, {"a": "1", "b": "2"})
    assert t.in_sync
    t.dataplane_set("a", "other")  # an event: someone changed it
    t.dataplane_delete("b")  # an event: someone deleted it
    assert pending(t) == ({"a": "1", "b": "2"}, set())


def test_a_stray_owned_key_learned_from_an_event_is_a_pending_deletion() -> None:
    """(d): a route of the agent's own protocol that nobody desires, learned of through an event
    (dataplane_set of a key not desired), must be deleted by the next pass."""
    t = tracker({"a": "1"}, {"a": "1"})
    assert t.in_sync
    t.dataplane_set("stray", "5")
    assert pending(t) == ({}, {"stray"})
    assert not t.in_sync
    t.dataplane_delete("stray")  # its deletion acknowledged (or an event saying it went)
    assert t.in_sync


def test_deleting_an_unknown_key_changes_nothing() -> None:
    t = tracker({"a": "1"}, {"a": "1"})
    t.dataplane_delete("never-seen")
    assert t.in_sync and "never-seen" not in t.dataplane


def test_a_new_desired_state_rediffs_against_what_is_held() -> None:
    t = tracker({"a": "1", "b": "2"}, {"a": "1", "b": "2"})
    t.replace_desired({"a": "1", "c": "3"})  # b no longer wanted, c new
    assert pending(t) == ({"c": "3"}, {"b"})
    t.replace_desired({"a": "1", "b": "2"})  # back again: nothing to do
    assert t.in_sync


def test_a_key_becoming_desired_stops_being_a_deletion() -> None:
    t = tracker({}, {"x": "7"})
    assert pending(t) == ({}, {"x"})
    t.replace_desired({"x": "7"})
    assert t.in_sync
    t.replace_desired({"x": "8"})
    assert pending(t) == ({"x": "8"}, set())


def test_a_full_dump_forgets_what_it_does_not_list() -> None:
    t = tracker({"a": "1"}, {"a": "1", "x": "7"})
    t.replace_dataplane({"y": "3"})  # a and x are gone from the kernel, y appeared
    assert pending(t) == ({"a": "1"}, {"y"})
    assert dict(t.dataplane) == {"y": "3"}


def test_single_key_changes_agree_with_a_whole_table_diff() -> None:
    """The incremental path (_recompute) and the whole-table one (_rediff) must never disagree:
    replay a sequence of changes both ways and compare after each."""
    steps: list[tuple[str, str, str | None]] = [
        ("set", "a", "1"), ("set", "b", "0"), ("set", "x", "7"), ("del", "a", None),
        ("set", "a", "1"), ("set", "b", "2"), ("del", "x", None), ("del", "c", None),
        ("set", "c", "3"), ("set", "y", "1"),
    ]
    desired = {"a": "1", "b": "2", "c": "3"}
    incremental = tracker(desired, {})
    plane: dict[str, str] = {}
    for op, key, value in steps:
        if op == "set":
            assert value is not None
            incremental.dataplane_set(key, value)
            plane[key] = value
        else:
            incremental.dataplane_delete(key)
            plane.pop(key, None)
        assert pending(incremental) == pending(tracker(desired, plane)), (op, key)
