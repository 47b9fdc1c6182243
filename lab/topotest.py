"""Polling helpers in the style of FRR's topotests (tests/topotests/lib/topotest.py).

Tests never sleep a fixed time: they poll a command until its output matches, with a deadline,
and fail with the last difference seen. To prove that something does not happen, ``hold`` checks
an invariant at every poll of a window (for some seconds, or until something else happened).

``json_cmp(output, expected)`` follows FRR's semantics:

* ``expected`` is a subset: every key of an expected object must be in the output object with a
  matching value; extra keys in the output are fine;
* an expected value of ``None`` means the key must be ABSENT from the output;
* an expected value of ``"*"`` means the key (or a list element) must exist, any value;
* lists: every expected element must match a distinct output element, in any order; if the
  expected list starts with ``"__ordered__"``, matches must also be in the same order;
* anything else (strings, numbers, booleans) compares with ``==``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

ORDERED = "__ordered__"
ANY = "*"


def json_cmp(output: Any, expected: Any) -> str | None:
    """``None`` if ``expected`` is a subset of ``output`` (see module docs), else a report of
    every difference, one ``path: problem`` per line."""
    errors: list[str] = []
    _cmp(output, expected, "$", errors)
    return "\n".join(errors) if errors else None


def _cmp(out: Any, exp: Any, path: str, errors: list[str]) -> None:
    if isinstance(exp, str) and exp == ANY:
        return
    if isinstance(exp, dict):
        if not isinstance(out, dict):
            errors.append(f"{path}: expected an object, got {_short(out)}")
            return
        for key, value in exp.items():
            sub = f"{path}.{key}"
            if value is None:
                if key in out:
                    errors.append(f"{sub}: expected absent, got {_short(out[key])}")
                continue
            if key not in out:
                errors.append(f"{sub}: missing (expected {_short(value)})")
                continue
            _cmp(out[key], value, sub, errors)
        return
    if isinstance(exp, list):
        if not isinstance(out, list):
            errors.append(f"{path}: expected a list, got {_short(out)}")
            return
        ordered = bool(exp) and exp[0] == ORDERED
        items = exp[1:] if ordered else exp
        if len(items) > len(out):
            errors.append(f"{path}: expected at least {len(items)} elements, got {len(out)}")
            return
        used: set[int] = set()
        start = 0
        for i, item in enumerate(items):
            candidates = range(start, len(out)) if ordered else range(len(out))
            match = next(
                (j for j in candidates if j not in used and json_cmp(out[j], item) is None), None
            )
            if match is None:
                errors.append(
                    f"{path}[{i}]: no {'later ' if ordered and i else ''}element matches "
                    f"{_short(item)}"
                )
                continue
            used.add(match)
            start = match + 1
        return
    if out != exp:
        errors.append(f"{path}: expected {_short(exp)}, got {_short(out)}")


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_and_expect(
    func: Callable[[], Any],
    expected: Any,
    timeout: float,
    interval: float = 0.25,
    desc: str | None = None,
) -> Any:
    """Call ``func`` until its result matches ``expected`` -- with :func:`json_cmp` when
    ``expected`` is a dict or list, with ``==`` otherwise -- and return that result. An
    exception from ``func`` counts as a mismatch (e.g. vtysh while a daemon restarts). Raises
    AssertionError with the last difference when ``timeout`` seconds pass."""
    last = "never called"

    def check() -> tuple[bool, Any]:
        nonlocal last
        result = func()
        if isinstance(expected, (dict, list)):
            diff = json_cmp(result, expected)
        else:
            diff = None if result == expected else f"expected {expected!r}, got {result!r}"
        if diff is None:
            return True, result
        last = diff
        return False, result

    return _poll(
        check, timeout, interval, desc or getattr(func, "__name__", repr(func)), lambda: last
    )


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    desc: str,
    interval: float = 0.25,
) -> T:
    """Call ``pred`` until it returns something truthy and return that. Exceptions count as
    false. Raises AssertionError naming ``desc`` (and the last value or error) on timeout."""
    last = "never called"

    def check() -> tuple[bool, Any]:
        nonlocal last
        value = pred()
        last = f"last value: {_short(value)}"
        return bool(value), value

    return _poll(check, timeout, interval, desc, lambda: last)


def hold(
    invariant: Callable[[], None],
    seconds: float | None = None,
    until: Callable[[], T] | None = None,
    timeout: float | None = None,
    desc: str = "",
    interval: float = 0.25,
) -> T | int:
    """Check that something does NOT happen: call ``invariant`` (which raises AssertionError on
    a violation; raised at once, never retried) every ``interval`` seconds, either for
    ``seconds`` (returns how many checks passed, at least two: one at the start, one at the end)
    or until ``until`` returns something truthy (checked after each invariant; returns it),
    failing after ``timeout`` seconds. An exception from ``until`` counts as false."""
    if (seconds is None) == (until is None):
        raise ValueError("hold() needs either seconds or until")
    if until is not None and timeout is None:
        raise ValueError("hold(until=...) needs a timeout")
    started = time.monotonic()
    limit = started + (seconds if seconds is not None else timeout or 0.0)
    checks = 0
    last = "never called"
    while True:
        now = time.monotonic()
        try:
            invariant()
        except AssertionError as exc:
            raise AssertionError(f"after {now - started:.1f} s of {desc or 'the window'}: "
                                 f"{exc}") from exc
        checks += 1
        if until is not None:
            try:
                value = until()
                last = f"last value: {_short(value)}"
            except Exception as exc:
                value, last = None, f"last error: {type(exc).__name__}: {exc}"
            if value:
                return value
            if now >= limit:
                raise AssertionError(f"timed out after {now - started:.1f} s waiting for "
                                     f"{desc}\n{last}")
        elif now >= limit:
            return checks
        time.sleep(min(interval, max(0.0, limit - time.monotonic())))


def _poll(
    check: Callable[[], tuple[bool, Any]],
    timeout: float,
    interval: float,
    desc: str,
    last: Callable[[], str],
) -> Any:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    error: str | None = None
    while True:
        try:
            ok, value = check()
            error = None
            if ok:
                return value
        except Exception as exc:
            error = f"last error: {type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {time.monotonic() - started:.1f} s waiting for {desc}\n"
                f"{error or last()}"
            )
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
