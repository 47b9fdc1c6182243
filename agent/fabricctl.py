"""fabricctl: ask the agent on this switch what it knows (its gRPC status service).

    fabricctl [--socket PATH] status|attachments|routes|vteps|headroom|services|events|locate Q
              [--json]

Human tables by default; with --json one JSON document on stdout (`events --follow --json`
prints one JSON object per line instead, since a stream has no end). Errors are one line on
stderr, and the exit status says what went wrong, so scripts can tell "agent down" from "not
allowed" from "no such pod":

    0  success
    1  the agent answered with an error, or an unexpected failure
    2  usage error, or a malformed locate query
    3  the agent is not running: no socket, or nothing listening on it (connection refused)
    4  permission denied on the socket: run as root or as a member of its group
    5  not found: locate matched nothing behind this leaf
    6  the agent did not answer in time (--timeout)

Values shown come from the cluster (names, refusal reasons, FRR messages): control characters
are escaped in tables so a hostile name cannot drive the operator's terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import errno
import grp
import json
import os
import socket
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

import grpc

from agent.apply.contract import ApplyResult
from agent.events import Event
from agent.status.grpc_gen import status_pb2 as pb
from agent.status.grpc_gen import status_pb2_grpc as pb_grpc
from agent.status.model import (
    AgentStatus,
    AttachmentInfo,
    HeadroomInfo,
    LocateResult,
    RouteInfo,
    ServiceInfo,
    VtepInfo,
)
from agent.status.server import (
    DEFAULT_SOCKET,
    attachment_from_proto,
    event_from_proto,
    headroom_from_proto,
    locate_from_proto,
    rfc3339,
    route_from_proto,
    services_from_proto,
    status_from_proto,
    vtep_from_proto,
)
from agent.status.view import agent_version
from agent.vocabulary import EVENT_KINDS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4
EXIT_NOT_FOUND = 5
EXIT_TIMEOUT = 6

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class CtlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- connecting ----


def _socket_group(path: str) -> str:
    try:
        gid = os.stat(path).st_gid
        return grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        return "its group"


def probe_unix_socket(path: str, timeout: float) -> None:
    """Connect once with a plain socket before gRPC does: the kernel's errno tells "not running"
    from "not allowed" precisely, where gRPC would report both as UNAVAILABLE with a message
    that varies between versions."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except FileNotFoundError:
        raise CtlError(EXIT_NOT_RUNNING, f"no status socket at {path}: is kube-fabric-agent "
                       "running? (systemctl status kube-fabric-agent)") from None
    except ConnectionRefusedError:
        raise CtlError(EXIT_NOT_RUNNING, f"nothing listens on {path} (a stale socket): "
                       "kube-fabric-agent is not running") from None
    except PermissionError:
        raise CtlError(EXIT_PERMISSION, f"permission denied on {path}: run as root or as a member "
                       f"of {_socket_group(path)}") from None
    except TimeoutError:
        raise CtlError(EXIT_TIMEOUT, f"kube-fabric-agent does not accept connections on {path} "
                       f"within {timeout:g} s") from None
    except OSError as exc:
        code = EXIT_PERMISSION if exc.errno in (errno.EACCES, errno.EPERM) else EXIT_NOT_RUNNING
        raise CtlError(code, f"cannot connect to {path}: {exc.strerror}") from None
    finally:
        probe.close()


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CtlError(EXIT_USAGE, f"cannot read {what} {path}: {exc.strerror}") from None


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    options = [("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)]
    if args.address:
        if not (args.tls_ca and args.tls_cert and args.tls_key):
            raise CtlError(EXIT_USAGE, "--address needs --tls-ca, --tls-cert and --tls-key "
                           "(the TCP listener requires a client certificate)")
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(args.tls_ca, "CA file"),
            private_key=_read(args.tls_key, "key file"),
            certificate_chain=_read(args.tls_cert, "certificate file"),
        )
        return grpc.secure_channel(args.address, creds, options=options)
    probe_unix_socket(args.socket, args.timeout)
    return grpc.insecure_channel(f"unix:{args.socket}", options=options)


def rpc_error(exc: grpc.RpcError, where: str) -> CtlError:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(code)
    if code == grpc.StatusCode.NOT_FOUND:
        return CtlError(EXIT_NOT_FOUND, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return CtlError(EXIT_USAGE, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CtlError(EXIT_TIMEOUT, f"kube-fabric-agent did not answer in time ({where})")
    if code == grpc.StatusCode.UNAVAILABLE:
        return CtlError(EXIT_NOT_RUNNING, f"kube-fabric-agent is not reachable at {where}: "
                        f"{details}")
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return CtlError(EXIT_PERMISSION, f"not allowed by {where}: {details}")
    return CtlError(EXIT_ERROR, f"kube-fabric-agent answered {code.name if code else '?'}: "
                    f"{details}")


# ---- output ----


def clean(value: object) -> str:
    """A value for a table cell: control and format characters escaped, never raw."""
    text = "-" if value is None or value == "" else str(value)
    out = []
    for ch in text:
        if unicodedata.category(ch)[0] == "C":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def table(out: TextIO, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    cells = [[clean(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")


def human_time(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def human_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


_TIME_KEYS = ("started_at", "at", "time")


def to_json(value: Any) -> Any:
    """Dataclasses as JSON: field names as they are, unix times as RFC 3339 strings."""
    if isinstance(value, ApplyResult):
        # The wire's names (at, duration_seconds), as in the status file; the proto carries no
        # per-table counts, so no "changes" either.
        return {k: rfc3339(v) if k in _TIME_KEYS and isinstance(v, float) else v
                for k, v in value.summary().items() if k != "changes"}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        for key in ("state",):
            if hasattr(type(value), key):  # derived properties that readers want too
                data[key] = getattr(value, key)
        if isinstance(value, AgentStatus):
            data["kubernetes"] = to_json(value.kubernetes) | {
                "serving_last_known_state": value.kubernetes.serving_last_known_state
            }
        return {
            k: rfc3339(v) if k in _TIME_KEYS and isinstance(v, float) else to_json(v)
            for k, v in data.items()
        }
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def dump_json(out: TextIO, value: Any) -> None:
    json.dump(to_json(value), out, indent=2, sort_keys=False)
    out.write("\n")


def print_status(out: TextIO, s: AgentStatus) -> None:
    k = s.kubernetes
    host = f" on {s.switch_hostname}" if s.switch_hostname else ""
    out.write(f"kube-fabric-agent {clean(s.version)}{host}: {s.health}\n")
    for reason in s.health_reasons:
        out.write(f"  ! {clean(reason)}\n")
    up = human_duration(time.time() - s.started_at)
    out.write(f"  started     {human_time(s.started_at)} (up {up})\n")
    api = ["connected" if k.connected else "NOT connected",
           "synced" if k.synced else "not synced", f"{k.nodes} nodes"]
    if k.seconds_since_contact is not None:
        api.append(f"last contact {k.seconds_since_contact:.1f} s ago")
    if k.resource_version:
        api.append(f"resourceVersion {clean(k.resource_version)}")
    out.write(f"  kubernetes  {', '.join(api)}\n")
    if k.serving_last_known_state:
        out.write("              serving the last known state\n")
    if k.last_error:
        out.write(f"  last error  {clean(k.last_error)}\n")
    if s.last_reconcile_latency_seconds is not None:
        latency = s.last_reconcile_latency_seconds
        out.write(f"  reconcile   {latency:.3f} s from change to applied\n")
    out.write("\n")
    if s.last_applies:
        table(out, ("APPLIER", "RESULT", "ACTION", "AT", "DURATION", "ERROR"), [
            (a.applier, "ok" if a.ok else "FAILED", a.action, human_time(a.started),
             f"{a.duration:.3f}s", a.error)
            for a in s.last_applies
        ])
    else:
        out.write("no apply yet\n")
    out.write(f"\nrefusals: {len(s.refusals)}\n")
    if s.refusals:
        table(out, ("KIND", "NAME", "REASON"), [(r.kind, r.name, r.reason) for r in s.refusals])


def print_attachments(out: TextIO, rows: Sequence[AttachmentInfo]) -> None:
    def note(a: AttachmentInfo) -> str:
        notes = ["draining"] if a.draining else []
        if a.vtep:
            notes.append(f"vtep {a.vtep}")
        return ", ".join(notes)

    table(out, ("PORT", "NODE", "SOURCE", "ROUTING", "BGP", "ACCEPTED", "PODS", "PREFIXES",
                "NOTE"), [
        (a.port, a.node, a.source, a.routing, a.bgp_state, a.prefixes_accepted, a.pods,
         ", ".join(a.prefixes), note(a))
        for a in rows
    ])


def print_routes(out: TextIO, rows: Sequence[RouteInfo]) -> None:
    table(out, ("PREFIX", "OWNER", "ROUTING", "NEXT HOP", "DEVICE", "STATE"), [
        (r.prefix, r.owner, r.routing, r.next_hop, r.device, r.state) for r in rows
    ])


def print_vteps(out: TextIO, rows: Sequence[VtepInfo]) -> None:
    table(out, ("OWNER", "VTEP", "MAC", "POD CIDR", "VNI", "STATE"), [
        (v.owner, v.vtep_ip, v.mac, v.pod_cidr, v.vni or None, v.state) for v in rows
    ])


def print_headroom(out: TextIO, rows: Sequence[HeadroomInfo]) -> None:
    def pct(h: HeadroomInfo) -> str | None:
        return None if h.percent is None else f"{h.percent:.1f}%"

    table(out, ("RESOURCE", "USED", "DESIRED", "CAPACITY", "PERCENT", "THRESHOLD", "NODES LEFT",
                "SOURCE"), [
        (h.resource, h.used, h.desired, "unlimited" if h.capacity is None else h.capacity,
         pct(h), h.threshold, h.nodes_left, h.source)
        for h in rows
    ])


def _permitted(row: ServiceInfo) -> str:
    return ", ".join(f"{n} ({row.ports[n]})" if n in row.ports else n
                     for n in row.nodes_permitted)


def _announcing(row: ServiceInfo) -> str:
    """The announcing nodes by name (their ports are in PERMITTED); one the plan does not
    permit (a prefix list not yet soft-refreshed, a stale route) is said to be so."""
    if row.nodes_announcing is None:
        return "unknown"
    return ", ".join(n if n in row.nodes_permitted else f"{n} (not permitted)"
                     for n in row.nodes_announcing)


def print_services(out: TextIO, rows: Sequence[ServiceInfo]) -> None:
    table(out, ("VIP", "SERVICE", "POLICY", "STATE", "PERMITTED", "ANNOUNCING", "NOTE"), [
        (s.vip, ", ".join(s.services), s.policy, s.state, _permitted(s), _announcing(s),
         s.reason)
        for s in rows
    ])


def print_service_vip(out: TextIO, s: ServiceInfo) -> None:
    """`locate <VIP>`: the Services, then every node permitted or announcing, with its port."""
    out.write(f"service VIP {clean(s.vip)}: {s.state}\n")
    for label, value in (("services", ", ".join(s.services)), ("policy", s.policy),
                         ("prefix", s.prefix), ("reason", s.reason)):
        if value:
            out.write(f"  {label:<10}{clean(value)}\n")
    announcing = s.nodes_announcing
    nodes = sorted({*s.nodes_permitted, *(announcing or ())})
    if not nodes:
        out.write("  no node is permitted to announce it, and none does\n")
        return
    out.write("\n")

    def says(node: str) -> str:
        if announcing is None:
            return "unknown"
        return "yes" if node in announcing else "no"

    table(out, ("NODE", "PORT", "PERMITTED", "ANNOUNCING"), [
        (n, s.ports.get(n), "yes" if n in s.nodes_permitted else "no", says(n)) for n in nodes
    ])


def print_locate(out: TextIO, r: LocateResult) -> None:
    if r.service is not None:
        print_service_vip(out, r.service)
        return
    if r.pod is not None:
        p = r.pod
        ips = ", ".join(p.ips) or "no IP"
        host = ", hostNetwork" if p.host_network else ""
        out.write(f"pod {clean(p.namespace)}/{clean(p.name)} ({clean(ips)}, "
                  f"{clean(p.phase)}{host})\n")
    elif r.matched == "pod_prefix":
        out.write(f"{clean(r.query)}: in the pod CIDR of {clean(r.node)} (no pod known with "
                  "this IP)\n")
    else:
        out.write(f"{r.matched.replace('_', ' ')} {clean(r.query)}\n")
    session = f" (session {r.bgp_state})" if r.routing == "bgp" else ""
    route = None
    if r.route_prefix:
        route = clean(r.route_prefix) + (f" via {clean(r.next_hop)}" if r.next_hop else "")
    lines = [
        ("node", r.node),
        ("node IPs", ", ".join(r.node_ips)),
        ("port", r.port),
        ("routing", f"{r.routing}{session}"),
        ("route", route),
        ("vtep", r.vtep),
        ("prefixes", ", ".join(r.node_prefixes)),
    ]
    for label, value in lines:
        if value or label in ("node", "port"):
            out.write(f"  {label:<10}{clean(value)}\n")


def format_event(e: Event) -> str:
    return (f"{rfc3339(e.time)}  {e.seq:>6}  {e.kind:<19}  {clean(e.subject):<20}  "
            f"{clean(e.message)}").rstrip()


# ---- commands ----


def emit(args: argparse.Namespace, out: TextIO, value: Any, printer: Callable[..., None]) -> int:
    if args.json:
        dump_json(out, value)
    else:
        printer(out, value)
    return EXIT_OK


def _unary(args: argparse.Namespace, call: Callable[[pb_grpc.FabricStatusStub], Any]) -> Any:
    with open_channel(args) as channel:
        try:
            return call(pb_grpc.FabricStatusStub(channel))
        except grpc.RpcError as exc:
            raise rpc_error(exc, args.address or args.socket) from None


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.GetStatus(pb.GetStatusRequest(), timeout=args.timeout))
    status = status_from_proto(reply)
    return emit(args, out, status, print_status)


def cmd_attachments(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.ListAttachments(pb.ListAttachmentsRequest(),
                                                     timeout=args.timeout))
    rows = [attachment_from_proto(a) for a in reply.attachments]
    return emit(args, out, rows, print_attachments)


def cmd_routes(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.ListRoutes(pb.ListRoutesRequest(), timeout=args.timeout))
    rows = [route_from_proto(r) for r in reply.routes]
    return emit(args, out, rows, print_routes)


def cmd_vteps(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.ListVteps(pb.ListVtepsRequest(), timeout=args.timeout))
    rows = [vtep_from_proto(v) for v in reply.vteps]
    return emit(args, out, rows, print_vteps)


def cmd_headroom(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.GetHeadroom(pb.GetHeadroomRequest(), timeout=args.timeout))
    rows = [headroom_from_proto(h) for h in reply.resources]
    return emit(args, out, rows, print_headroom)


def cmd_services(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.ListServices(pb.ListServicesRequest(),
                                                  timeout=args.timeout))
    return emit(args, out, services_from_proto(reply), print_services)


def cmd_locate(args: argparse.Namespace, out: TextIO) -> int:
    reply = _unary(args, lambda s: s.Locate(pb.LocateRequest(query=args.query),
                                            timeout=args.timeout))
    result = locate_from_proto(reply)
    return emit(args, out, result, print_locate)


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    request = pb.WatchEventsRequest(
        history_only=not args.follow,
        after_seq=args.after,
        skip_history=args.follow and args.no_history,
        kinds=[pb.EventKind.Value("EVENT_KIND_" + k.upper()) for k in args.kind or ()],
    )
    where = args.address or args.socket
    with open_channel(args) as channel:
        stub = pb_grpc.FabricStatusStub(channel)
        try:
            if not args.follow:
                events = [event_from_proto(e)
                          for e in stub.WatchEvents(request, timeout=args.timeout)]
                if args.json:
                    dump_json(out, events)
                else:
                    for e in events:
                        out.write(format_event(e) + "\n")
                return EXIT_OK
            # Follow: no deadline; one line (or one JSON object) per event, flushed at once so
            # `fabricctl events --follow | grep` sees events as they happen.
            for message in stub.WatchEvents(request):
                e = event_from_proto(message)
                if args.json:
                    out.write(json.dumps(to_json(e)) + "\n")
                else:
                    out.write(format_event(e) + "\n")
                out.flush()
        except grpc.RpcError as exc:
            raise rpc_error(exc, where) from None
    # The agent ended the stream: it is shutting down.
    raise CtlError(EXIT_NOT_RUNNING, "kube-fabric-agent closed the event stream (stopping?)")


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "status": cmd_status,
    "attachments": cmd_attachments,
    "routes": cmd_routes,
    "vteps": cmd_vteps,
    "headroom": cmd_headroom,
    "services": cmd_services,
    "events": cmd_events,
    "locate": cmd_locate,
}


def build_parser() -> argparse.ArgumentParser:
    # Options work before and after the command (`fabricctl --json status` and
    # `fabricctl status --json`): subcommands get them with SUPPRESS defaults, so they do not
    # overwrite a value given before the command.
    def common(parser: argparse.ArgumentParser, top: bool) -> None:
        d: Any = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
        parser.add_argument("--socket", metavar="PATH", default=d(DEFAULT_SOCKET),
                            help=f"the agent's status socket (default {DEFAULT_SOCKET})")
        parser.add_argument("--json", action="store_true", default=d(False),
                            help="print one JSON document")
        parser.add_argument("--timeout", type=float, metavar="SECONDS", default=d(10.0),
                            help="how long to wait for an answer (default 10)")
        parser.add_argument("--address", metavar="HOST:PORT", default=d(None),
                            help="use the agent's TCP listener (mutual TLS) instead of the socket")
        parser.add_argument("--tls-ca", metavar="FILE", default=d(None),
                            help="CA that signed the agent's certificate")
        parser.add_argument("--tls-cert", metavar="FILE", default=d(None),
                            help="client certificate")
        parser.add_argument("--tls-key", metavar="FILE", default=d(None), help="client key")

    parser = argparse.ArgumentParser(
        prog="fabricctl",
        description="Show what kube-fabric-agent on this switch knows.",
        epilog="exit status: 0 ok, 1 error from the agent, 2 usage, 3 agent not running, "
        "4 permission denied, 5 not found, 6 timeout",
    )
    common(parser, top=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "status": "health, Kubernetes connection, last applies, refusals",
        "attachments": "nodes behind this leaf: port, routing, BGP state, prefixes",
        "routes": "desired and observed routes with their owner",
        "vteps": "desired and observed remote VTEPs",
        "headroom": "table usage against capacity per resource",
        "services": "Service VIPs: nodes permitted, nodes announcing, state",
        "events": "recent events (--follow to stream)",
        "locate": "where a pod IP, namespace/pod, node name, node IP or Service VIP is",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        common(p, top=False)
        if name == "locate":
            p.add_argument("query", metavar="Q",
                           help="pod IP, namespace/pod, node, node IP or Service VIP")
        if name == "events":
            p.add_argument("-f", "--follow", action="store_true",
                           help="after the history, stream new events until interrupted")
            p.add_argument("--no-history", action="store_true",
                           help="with --follow: only new events")
            p.add_argument("--after", type=int, default=0, metavar="SEQ",
                           help="only events after this sequence number")
            p.add_argument("--kind", action="append", choices=EVENT_KINDS,
                           help="only this kind (repeatable)")
    return parser


def _fail(message: str, code: int) -> NoReturn:
    print(f"fabricctl: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        _fail("--timeout must be positive", EXIT_USAGE)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except CtlError as exc:
        _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "events" else 130
    except BrokenPipeError:
        # `fabricctl events --follow | head`: the reader is gone, which is not an error.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
