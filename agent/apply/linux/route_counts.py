"""Every route the kernel holds (FRR's BGP routes too, not only the agent's), counted cheaply
from procfs without a netlink dump: the hardware route tables fill with all of them, so the
headroom's USED column takes the larger of this and the agent's own count.
"""

from __future__ import annotations

from pathlib import Path

# /proc/net/ipv6_route flags (the kernel's uapi header linux/ipv6_route.h).
_RTF_CACHE = 0x01000000


def _ipv6_route_takes_a_slot(fields: list[str]) -> bool:
    """Whether a switchdev driver programs this IPv6 route, by mlxsw's rule
    (mlxsw_sp_fib6_rt_should_ignore, since Linux 5.8: multicast destinations and cached
    clones are ignored; link-local host entries are programmed as traps), and not the
    loopback's own entries (::1, the null route)."""
    if len(fields) < 10:
        return False
    dst, flags, dev = fields[0].lower(), int(fields[8], 16), fields[9]
    return not (dev == "lo" or dst.startswith("ff") or flags & _RTF_CACHE)


def kernel_route_counts(proc: Path = Path("/proc/net")) -> dict[str, int]:
    """Routes the kernel holds, counted cheaply from procfs (no dump over netlink): the main
    IPv4 table, and the IPv6 routes an ASIC would hold (_ipv6_route_takes_a_slot)."""
    counts: dict[str, int] = {}
    try:
        with open(proc / "route") as f:
            counts["ipv4_routes"] = max(0, sum(1 for _ in f) - 1)  # minus the header
    except OSError:
        pass
    try:
        with open(proc / "ipv6_route") as f:
            counts["ipv6_routes"] = sum(1 for line in f
                                        if _ipv6_route_takes_a_slot(line.split()))
    except OSError:
        pass
    return counts
