"""``python -m lab up|down|status FILE [--prefix P]``: the namespace lab from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from .clab import TopologyError
from .netns import Lab, LabError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="Realize a containerlab topology file in network namespaces (needs root).",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("topology", help="containerlab topology file (*.clab.yml)")
    parser.add_argument("--prefix", help="namespace prefix (default: the lab name)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        lab = Lab.from_file(args.topology, prefix=args.prefix)
        if args.command == "up":
            lab.up()
            print(f"lab {lab.prefix} up in {lab.up_seconds:.2f} s")
            for node in lab.topology.nodes:
                print(f"  {node:10} netns {lab.ns(node):16} frr -N {lab.pathspace(node)}")
            print(f"logs: {lab.log_dir}   down: python -m lab down {args.topology}")
        elif args.command == "down":
            lab.down()
            print(f"lab {lab.prefix} down")
        else:
            print_status(lab)
    except (TopologyError, LabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def print_status(lab: Lab) -> None:
    status = lab.status()
    print(f"lab {status['lab']} (state {status['state_dir']})")
    for node, entry in status["nodes"].items():
        print(f"\n== {node}: netns {entry['namespace']} {'' if entry['exists'] else '(absent)'}")
        for link in entry.get("links", []):
            print(f"   {link['ifname']:10} {link['state']:8} mtu {link['mtu']:<5} {link['mac']}")
        frr = entry.get("frr")
        if frr is None:
            print("   FRR: not configured for this node")
            continue
        daemons = ", ".join(f"{d}={pid}" for d, pid in sorted(frr.items())) or "none running"
        print(f"   FRR daemons: {daemons}")
        if "bgp_summary" in entry:
            for line in entry["bgp_summary"].strip().splitlines():
                print(f"   | {line}")


if __name__ == "__main__":
    sys.exit(main())
