"""Rate limiting of repeating log lines (agent/logs.py), through a real logging handler."""

from __future__ import annotations

import io
import logging

from agent import cli
from agent.logs import RepeatFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logger_writing_to(stream: io.StringIO, repeat: RepeatFilter) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(repeat)
    log = logging.getLogger(f"test-logs-{id(stream)}")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.DEBUG)
    return log


def test_a_repeating_warning_is_written_once_per_window_with_the_count() -> None:
    clock, out = Clock(), io.StringIO()
    log = logger_writing_to(out, RepeatFilter(window=60.0, clock=clock))
    for _ in range(400):  # an API server refusing, again and again
        log.warning("API server unreachable: %s", "connection refused")
        clock.now += 0.125
    log.warning("cannot stage /etc/frr/frr.conf: no space left")  # another line still passes
    clock.now += 12.0
    log.warning("API server unreachable: %s", "connection refused")
    assert out.getvalue().splitlines() == [
        "WARNING API server unreachable: connection refused",
        "WARNING cannot stage /etc/frr/frr.conf: no space left",
        "WARNING API server unreachable: connection refused (and 399 more times in the last "
        "62s)",
    ]


def test_progress_lines_are_never_held_back() -> None:
    clock, out = Clock(), io.StringIO()
    log = logger_writing_to(out, RepeatFilter(window=60.0, clock=clock))
    for _ in range(3):
        log.info("frr unchanged in 0.00s")
    assert len(out.getvalue().splitlines()) == 3


def test_what_it_remembers_is_bounded() -> None:
    clock, out = Clock(), io.StringIO()
    repeat = RepeatFilter(window=60.0, clock=clock, max_remembered=10)
    log = logger_writing_to(out, repeat)
    for i in range(1000):  # a hostile cluster: many distinct refusal lines
        log.warning("refused: node-%d", i)
    assert len(repeat._seen) == 10
    assert len(out.getvalue().splitlines()) == 1000


def test_the_agent_installs_it_on_its_log_handler(monkeypatch, tmp_path) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(root, "handlers", [handler])
    cli.main(["run", "--config", str(tmp_path / "absent.yaml")])
    assert any(isinstance(f, RepeatFilter) for f in handler.filters)
    install(handler)
    assert sum(isinstance(f, RepeatFilter) for f in handler.filters) == 1
