"""The change between two FRR configurations, as `frr-reload.py --test` reports it."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lines frr-reload.py always reports but that can never converge: under a pathspace FRR shows the
# system hostname whatever `hostname` says, and the version/defaults lines cannot be removed.
_ALWAYS_DIFFERENT = re.compile(r"^(no )?(hostname |frr version |frr defaults )")

@dataclass(frozen=True)
class Delta:
    to_delete: tuple[str, ...]
    to_add: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.to_delete and not self.to_add

    def summary(self, limit: int = 12) -> str:
        lines = [f"- {x}" for x in self.to_delete] + [f"+ {x}" for x in self.to_add]
        more = f" (+{len(lines) - limit} more)" if len(lines) > limit else ""
        return "; ".join(lines[:limit]) + more


def parse_delta(output: str) -> Delta:
    """The 'Lines To Delete' / 'Lines To Add' sections of `frr-reload.py --test`."""
    sections: dict[str, list[str]] = {"delete": [], "add": []}
    current: str | None = None
    context: list[str] = []
    for raw in output.splitlines():
        if raw.startswith("Lines To Delete"):
            current, context = "delete", []
            continue
        if raw.startswith("Lines To Add"):
            current, context = "add", []
            continue
        if current is None or not raw.strip() or set(raw.strip()) == {"="}:
            continue
        if re.match(r"^\d{4}-\d\d-\d\d ", raw):  # a log line interleaved by frr-reload.py
            continue
        depth = len(raw) - len(raw.lstrip(" "))
        context = context[:depth] if depth else []
        line = raw.strip()
        # Nested lines only mean something with their context ("router bgp 65101" > ...).
        full = " > ".join([*context, line]) if depth else line
        if depth:
            context.append(line)
        else:
            context = [line]
        if not _ALWAYS_DIFFERENT.match(line):
            sections[current].append(full)
    # A context line is listed only because a nested line changed; keep only the leaves.
    def leaves(items: list[str]) -> tuple[str, ...]:
        return tuple(x for x in items if not any(y.startswith(x + " > ") for y in items))
    return Delta(leaves(sections["delete"]), leaves(sections["add"]))
