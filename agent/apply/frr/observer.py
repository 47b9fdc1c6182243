"""What FRR says about the sessions: state and accepted prefixes per neighbour.

Read periodically (`show bgp summary json`) so that status requests answer from memory and
never wait on vtysh, and so that session up/down becomes an event.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from agent.process import run_command

log = logging.getLogger(__name__)

_STATES = {
    "idle": "idle", "connect": "connect", "active": "active", "opensent": "open_sent",
    "openconfirm": "open_confirm", "established": "established",
}


@dataclass(frozen=True)
class PeerState:
    state: str  # one of agent.vocabulary.BGP_STATES
    accepted: int  # prefixes accepted (after the inbound policy), all address families
    uptime_ms: int = 0  # of an established session: going backwards means it flapped


def parse_summary(text: str) -> dict[str, PeerState]:
    """neighbour (the port, for unnumbered sessions) -> state, from `show bgp summary json`."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    peers: dict[str, PeerState] = {}
    for family in data.values() if isinstance(data, dict) else []:
        for name, peer in (family.get("peers") or {}).items() if isinstance(family, dict) else []:
            if not isinstance(peer, dict):
                continue
            raw = str(peer.get("state", "")).lower()
            state = _STATES.get(raw.split(" ")[0], "unknown")
            accepted = peer.get("pfxRcd", 0) if isinstance(peer.get("pfxRcd"), int) else 0
            uptime = peer.get("peerUptimeMsec", 0) if isinstance(peer.get("peerUptimeMsec"),
                                                                 int) else 0
            old = peers.get(name)
            peers[name] = PeerState(state, accepted + (old.accepted if old else 0),
                                    max(uptime, old.uptime_ms if old else 0))
    return peers


class BgpObserver:
    def __init__(self, vtysh: str, pathspace: str) -> None:
        self.argv = [vtysh, *(["-N", pathspace] if pathspace else []), "-c",
                     "show bgp summary json"]
        self.peers: dict[str, PeerState] = {}
        self.error: str | None = None

    async def poll(self) -> list[tuple[str, str]]:
        """Refresh; returns (neighbour, "session_up" | "session_down") in the order they
        happened. A session that went down and came back between two polls shows as an
        established session whose uptime went backwards: both events are reported."""
        try:
            res = await run_command(self.argv, limit_seconds=10.0)
            if res.returncode != 0:
                raise RuntimeError(res.output or f"exit {res.returncode}")
            fresh = parse_summary(res.stdout)
        except (OSError, RuntimeError, TimeoutError) as exc:
            if self.error is None:
                log.warning("cannot read BGP state from FRR: %s", exc)
            self.error = str(exc)
            return []
        self.error = None
        changes = session_changes(self.peers, fresh)
        self.peers = fresh
        return changes


def session_changes(before: dict[str, PeerState], after: dict[str, PeerState]
                    ) -> list[tuple[str, str]]:
    """(neighbour, "session_up" | "session_down") between two polls, in order."""
    changes: list[tuple[str, str]] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        was_up = old is not None and old.state == "established"
        up = new is not None and new.state == "established"
        if old is not None and new is not None and was_up and up and (
                new.uptime_ms < old.uptime_ms):
            changes += [(name, "session_down"), (name, "session_up")]
        elif was_up != up:
            changes.append((name, "session_up" if up else "session_down"))
    return changes
