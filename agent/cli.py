"""`fabric-agent`: run (the daemon), check-config, render (offline, same plan and templates)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from agent import logs
from agent.apply.frr.render import UnsafeValue, render_frr
from agent.cluster.nodes import cluster_state
from agent.cluster.selector import select
from agent.cluster.services import service_state
from agent.config import AgentConfig, ConfigError, config_warnings, load_config
from agent.errors import EXIT_CONFIG, EXIT_INPUT, StartupError
from agent.plan.build import plan
from agent.plan.model import Plan
from agent.status.view import agent_version


def _load_or_exit(path: str) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        sys.exit(EXIT_CONFIG)


# The kinds render reads; an object without `kind` is taken for a Node, as before.
CLUSTER_KINDS = ("Node", "Service", "EndpointSlice")


def read_cluster_objects(path: str) -> dict[str, list[Any]]:
    """Per kind of CLUSTER_KINDS, the objects of a `kubectl get ... -o yaml|json` List, one
    object, or several YAML documents (JSON is YAML). Objects of other kinds are skipped."""
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    found: dict[str, list[Any]] = {kind: [] for kind in CLUSTER_KINDS}
    for doc in docs:
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and "items" in doc else [doc]
        for obj in items if isinstance(items, list) else []:
            kind = obj.get("kind", "Node") if isinstance(obj, dict) else None
            if kind in found:
                found[kind].append(obj)
    return found


def read_cluster_file(path: str) -> Iterator[Any]:
    """The Node objects of a cluster file (read_cluster_objects)."""
    yield from read_cluster_objects(path)["Node"]


def plan_cluster_file(cfg: AgentConfig, path: str) -> Plan:
    """plan() of a cluster file as the daemon would plan it: only the Nodes
    kubernetes.node_selector selects (the daemon's watch asks the API server for those), and
    the Services and EndpointSlices."""
    objects = read_cluster_objects(path)
    services = service_state(objects["Service"], objects["EndpointSlice"])
    return plan(cfg, cluster_state(select(objects["Node"], cfg.kubernetes.node_selector)),
                services=services)


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    asn = f"AS{cfg.switch.asn}" if cfg.switch.asn is not None else "ASN from CONFIG_DB"
    print(f"{args.config}: OK (switch {cfg.switch.hostname}, {asn}, "
          f"{len(cfg.fabric.server_ports)} server ports, {len(cfg.fabric.uplinks)} uplinks)")
    for warning in config_warnings(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    missing = [k for k in ("asn", "router_id") if getattr(cfg.switch, k) is None]
    if missing:  # SONiC configs may leave them to CONFIG_DB, which render does not read
        for key in missing:
            print(f"switch.{key}: needed to render offline (on SONiC the daemon reads it from "
                  "CONFIG_DB); put it in the file", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = plan_cluster_file(cfg, args.cluster)
    except (OSError, yaml.YAMLError) as exc:
        print(f"cannot read cluster file {args.cluster}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    for refusal in result.refusals:
        print(f"refused: {refusal}", file=sys.stderr)
    try:
        text = render_frr(result.frr)
    except UnsafeValue as exc:
        print(f"internal error, nothing rendered: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    if args.json_plan:
        print(json.dumps([a.__dict__ for a in result.attachments], indent=2), file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _load_or_exit(args.config)
    from agent.runtime.daemon import run_agent  # heavy imports only for the daemon

    try:
        asyncio.run(run_agent(cfg))
    except StartupError as exc:
        for problem in exc.problems:
            logging.getLogger("agent").error("%s", problem)
        return exc.exit_code
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fabric-agent", description=__doc__)
    # The installed distribution's version (pip or the Debian package): what a bug report needs.
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the daemon in the foreground (systemd Type=notify)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("render", help="print the frr.conf for a cluster file, offline")
    p.add_argument("--config", required=True)
    p.add_argument("--cluster", required=True,
                   help="kubectl get nodes,services,endpointslices -o yaml output")
    p.add_argument("--json-plan", action="store_true", help="also print attachments to stderr")
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # systemd's journal adds timestamps; keep lines short and grep-able.
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        logs.install(handler)  # a repeating warning once a minute, not every second
    # One line per HTTP request (every watch restart) is noise in a switch's journal.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not Path(args.config).exists() and args.command != "check-config":
        print(f"(file): {args.config} does not exist", file=sys.stderr)
        return EXIT_CONFIG
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
