"""The gRPC status service (FabricStatus) over a unix socket, and optionally TCP with mutual TLS.

    server = StatusServer(provider, events, socket_path=..., socket_group="frrvty")
    await server.start()
    ...
    await server.stop()

The unix socket is the operator's interface (fabricctl): mode 0660, owned by the agent's user
and the configured group, so who may read the fabric's state is decided by group membership.
It is created inside a private (0700) staging directory, given its mode and group there, and
only then renamed into place: at no moment does a socket with looser permissions exist at a
reachable path. A stale socket left by a crashed agent is replaced; a live one (another agent
answering) is an error, never stolen.

TCP is for remote collectors only and only with TLS and a required client certificate signed
by the configured CA: the status names every node, pod IP and port of the leaf.

Streams (WatchEvents, health Watch, reflection) are limited per client (StreamLimit): one
client holding every slot of the server would lock all others out, fabricctl status included.

Both listeners serve standard health checking (grpc.health.v1) and server reflection, so
`grpcurl -plaintext -unix /run/kube-fabric-agent/agent.sock list` works without the .proto.

The second half of this module converts between the dataclasses of agent/status/model.py and
the protobuf messages (both directions: fabricctl uses from_*), side by side so that they cannot
drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import errno
import inspect
import logging
import os
import socket
import stat
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent.apply.contract import ApplyResult
from agent.cluster.nodes import Refusal
from agent.cluster.pod_index import PodInfo
from agent.events import Event
from agent.status.file import group_id
from agent.status.grpc_gen import status_pb2 as pb
from agent.status.grpc_gen import status_pb2_grpc as pb_grpc
from agent.status.model import (
    AgentStatus,
    AttachmentInfo,
    EventLog,
    HeadroomInfo,
    InvalidQuery,
    KubernetesConnection,
    LocateResult,
    NotFound,
    RouteInfo,
    ServiceInfo,
    StatusProvider,
    SubscriberTooSlow,
    Subscription,
    VtepInfo,
)

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FabricStatus"].full_name
DEFAULT_SOCKET = "/run/kube-fabric-agent/agent.sock"
# Requests are a few bytes; a TCP peer must not make the agent buffer megabytes.
MAX_REQUEST_BYTES = 64 * 1024
# Each WatchEvents stream holds a subscription: bound them, the agent has a 256 MiB budget.
MAX_CONCURRENT_RPCS = 64
# Streams (WatchEvents, health Watch, reflection) live as long as the client wants: one client
# may hold this many at once, so that it alone can never use up MAX_CONCURRENT_RPCS.
MAX_STREAMS_PER_CLIENT = 8
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the terminating NUL


class SocketInUse(RuntimeError):
    """Another process answers on the status socket (a second agent?)."""


# ---- the servicer ----

T = TypeVar("T")


class FabricStatusServicer(pb_grpc.FabricStatusServicer):
    def __init__(self, provider: StatusProvider, events: EventLog) -> None:
        self._provider = provider
        self._events = events
        self._streams: set[Subscription] = set()

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            # A bug in the provider must cost one request, not the service.
            log.exception("status provider failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"status provider failed: {exc}")
            raise  # not reached: abort raises

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        return status_to_proto(await self._call(context, self._provider.status))

    async def ListAttachments(
        self, request: pb.ListAttachmentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAttachmentsResponse:
        rows = await self._call(context, self._provider.attachments)
        return pb.ListAttachmentsResponse(attachments=[attachment_to_proto(a) for a in rows])

    async def ListRoutes(
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoutesResponse:
        rows = await self._call(context, self._provider.routes)
        return pb.ListRoutesResponse(routes=[route_to_proto(r) for r in rows])

    async def ListVteps(
        self, request: pb.ListVtepsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVtepsResponse:
        rows = await self._call(context, self._provider.vteps)
        return pb.ListVtepsResponse(vteps=[vtep_to_proto(v) for v in rows])

    async def GetHeadroom(
        self, request: pb.GetHeadroomRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHeadroomResponse:
        rows = await self._call(context, self._provider.headroom)
        return pb.GetHeadroomResponse(resources=[headroom_to_proto(h) for h in rows])

    async def ListServices(
        self, request: pb.ListServicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListServicesResponse:
        rows = await self._call(context, self._provider.services)
        # 5,000 VIPs that each permit 48 nodes are a quarter of a million strings to encode:
        # done in a worker thread (the rows are frozen), so the loop keeps serving meanwhile.
        return await asyncio.to_thread(services_to_proto, rows)

    async def Locate(
        self, request: pb.LocateRequest, context: grpc.aio.ServicerContext
    ) -> pb.LocateResponse:
        try:
            result = self._provider.locate(request.query)
        except InvalidQuery as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except Exception as exc:
            log.exception("locate %r failed", request.query)
            await context.abort(grpc.StatusCode.INTERNAL, f"locate failed: {exc}")
        return locate_to_proto(result)

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        kinds = {_enum_str(pb.EventKind, k) for k in request.kinds}

        def wanted(event: Event) -> bool:
            return not kinds or event.kind in kinds

        if request.history_only:
            for event in self._events.history(after_seq=request.after_seq):
                if wanted(event):
                    yield event_to_proto(event)
            return
        sub = self._events.subscribe(history=not request.skip_history, after_seq=request.after_seq)
        self._streams.add(sub)
        try:
            async for event in sub:
                if wanted(event):
                    yield event_to_proto(event)
        except SubscriberTooSlow as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        finally:
            # Also reached when the client goes away (the generator is cancelled/closed).
            sub.close()
            self._streams.discard(sub)

    def end_streams(self) -> None:
        """End every WatchEvents stream cleanly (server shutdown)."""
        for sub in list(self._streams):
            sub.close()


# ---- per-client stream limit ----


def client_identity(peer: str) -> str:
    """Who a stream is counted against, from grpc's context.peer().

    TCP: the peer's IP address without the port (every connection has a new port; a client is
    a host). The unix socket: ONE identity for every local client. gRPC Python gives the server
    neither the connection's fd (for SO_PEERCRED) nor peer credentials: context.peer() is
    "unix:" for every client and the auth context says only "insecure". A client-sent uid would
    be a claim, not an identity. Who may connect locally at all is decided by the socket's mode
    and group; the limit keeps local users together from starving remote collectors and from
    using up the slots unary calls (fabricctl status) need.
    """
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = address.rpartition(":")
        return f"{kind}:{host.strip('[]')}"
    if kind.startswith("unix"):
        return "the unix socket"
    return peer  # unknown transport: the whole peer string, the most specific we have


class StreamLimit(grpc.aio.ServerInterceptor):
    """Refuses a response stream with RESOURCE_EXHAUSTED when its client already holds
    per_client streams; unary calls are never counted. An interceptor rather than a check in
    WatchEvents so that the health Watch and reflection streams count too: each one otherwise
    holds one of the server's MAX_CONCURRENT_RPCS slots for as long as the client likes."""

    def __init__(self, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.per_client = per_client
        self.open: Counter[str] = Counter()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._limited(handler.stream_stream, details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.unary_stream_rpc_method_handler(
            self._limited(handler.unary_stream, details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> str:
        client = client_identity(context.peer())
        # No await between the check and the increment: atomic on the event loop.
        if self.open[client] >= self.per_client:
            log.warning("refused a %s stream: %s already holds %d", method, client,
                        self.open[client])
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streams: {client} already holds {self.open[client]} (at most "
                f"{self.per_client} per client); close one and retry")
        self.open[client] += 1
        return client

    def _release(self, client: str) -> None:
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]

    def _limited(self, behavior: Any, method: str) -> Any:
        # aio servicers stream either as async generators (WatchEvents, reflection) or as
        # coroutines calling context.write (health Watch); keep the style grpc expects.
        if inspect.isasyncgenfunction(behavior):
            async def generator(request: Any, context: grpc.aio.ServicerContext) -> Any:
                client = await self._admit(context, method)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:  # also on cancellation, when the client goes away
                    self._release(client)
            return generator

        async def coroutine(request: Any, context: grpc.aio.ServicerContext) -> Any:
            client = await self._admit(context, method)
            try:
                return await behavior(request, context)
            finally:
                self._release(client)
        return coroutine


# ---- the server ----


def _socket_answers(path: str) -> bool:
    """True when something accepts connections on the unix socket at path."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class StatusServer:
    """FabricStatus + health + reflection on a unix socket and/or a mutual-TLS TCP address."""

    def __init__(
        self,
        provider: StatusProvider,
        events: EventLog,
        *,
        socket_path: str | os.PathLike[str] | None = DEFAULT_SOCKET,
        socket_mode: int = 0o660,
        socket_group: str | int | None = None,
        tcp_address: str | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_client_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        if socket_path is None and tcp_address is None:
            raise ValueError("the status server needs a socket path or a TCP address")
        if tcp_address is not None and not (tls_cert and tls_key and tls_client_ca):
            # Plain TCP would hand every node, pod IP and port to anyone who can connect.
            raise ValueError("a TCP status listener needs tls_cert, tls_key and tls_client_ca")
        if socket_path is not None and len(os.fsencode(socket_path)) + 20 > _SUN_PATH_MAX:
            # +20: the staging directory the socket is bound in before the rename.
            raise ValueError(f"status socket path {socket_path} is too long for a unix socket")
        self.socket_path = Path(socket_path) if socket_path is not None else None
        self.socket_mode = socket_mode
        self.socket_gid = group_id(socket_group)
        self.tcp_address = tcp_address
        # Read now, so a missing or unreadable file is a start-up error with its name.
        self._tls: tuple[bytes, bytes, bytes] | None = None
        if tcp_address is not None:
            cert, key, ca = (Path(p).read_bytes() for p in (tls_cert, tls_key, tls_client_ca))  # type: ignore[arg-type]
            self._tls = (cert, key, ca)
        self.servicer = FabricStatusServicer(provider, events)
        self.stream_limit = StreamLimit()
        self.tcp_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._socket_inode: tuple[int, int] | None = None

    async def start(self) -> None:
        # Imported here: fabricctl imports this module for the codec and needs neither.
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
            interceptors=[self.stream_limit],
        )
        pb_grpc.add_FabricStatusServicer_to_server(self.servicer, server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        staging: Path | None = None
        try:
            if self.socket_path is not None:
                staging = self._staging_dir()
                bound = staging / "s"
                if server.add_insecure_port(f"unix:{bound}") == 0:
                    raise OSError(f"cannot bind the status socket in {staging}")
                self._publish_socket(bound)
            if self.tcp_address is not None and self._tls is not None:
                cert, key, ca = self._tls
                creds = grpc.ssl_server_credentials(
                    [(key, cert)], root_certificates=ca, require_client_auth=True
                )
                self.tcp_port = server.add_secure_port(self.tcp_address, creds)
                if self.tcp_port == 0:
                    raise OSError(f"cannot listen on {self.tcp_address}")
            await server.start()
        except BaseException:
            await server.stop(None)
            self._remove_socket()
            raise
        finally:
            if staging is not None:
                # Empty after a successful rename; holds the bound socket after a failure.
                with contextlib.suppress(OSError):
                    (staging / "s").unlink(missing_ok=True)
                    staging.rmdir()
        self._server = server
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        where = [str(self.socket_path)] if self.socket_path else []
        if self.tcp_port:
            where.append(f"{self.tcp_address} (port {self.tcp_port}, mutual TLS)")
        log.info("status service on %s", ", ".join(where))

    def _staging_dir(self) -> Path:
        assert self.socket_path is not None
        parent = self.socket_path.parent
        if not parent.exists():
            # systemd's RuntimeDirectory= normally creates it; 0755 so the group can reach the
            # socket, whose own mode is what restricts access.
            parent.mkdir(mode=0o755, parents=True)
        if self.socket_path.exists() or self.socket_path.is_symlink():
            st = os.lstat(self.socket_path)
            if not stat.S_ISSOCK(st.st_mode):
                raise SocketInUse(f"{self.socket_path} exists and is not a socket; not replacing")
            if _socket_answers(str(self.socket_path)):
                raise SocketInUse(f"another process already serves {self.socket_path}")
            # A socket nobody answers on: left by an agent that crashed; rename() replaces it.
        return Path(tempfile.mkdtemp(prefix=f".{self.socket_path.name}.", dir=parent))

    def _publish_socket(self, bound: Path) -> None:
        """Give the bound socket its group and mode inside the private staging directory, then
        move it into place atomically."""
        assert self.socket_path is not None
        if self.socket_gid != -1:
            try:
                os.chown(bound, -1, self.socket_gid)
            except PermissionError:
                # Not root: only groups the agent's user belongs to can be given.
                raise PermissionError(
                    f"cannot give the status socket group {self.socket_gid}: the agent's user "
                    "is not a member of it (systemd: SupplementaryGroups=)"
                ) from None
        os.chmod(bound, self.socket_mode)
        os.rename(bound, self.socket_path)
        st = os.lstat(self.socket_path)
        self._socket_inode = (st.st_dev, st.st_ino)

    def _remove_socket(self) -> None:
        """Remove the socket at socket_path if it is still the one this server created (a new
        agent may already have replaced it)."""
        if self.socket_path is None or self._socket_inode is None:
            return
        try:
            st = os.lstat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._socket_inode:
                self.socket_path.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                log.warning("cannot remove %s: %s", self.socket_path, exc)
        self._socket_inode = None

    async def set_serving(self, serving: bool) -> None:
        """Health of the FabricStatus service as grpc.health.v1 reports it (the daemon may say
        NOT_SERVING while it shuts down)."""
        from grpc_health.v1 import health_pb2

        if self._health is None:
            return
        state = (health_pb2.HealthCheckResponse.SERVING if serving
                 else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self._health.set(name, state)

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        self.servicer.end_streams()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await server.stop(grace)
        self._remove_socket()

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---- codec: agent.status.model dataclasses <-> protobuf ----

_ENUM_PREFIX = {
    "Health": "HEALTH_",
    "AttachmentSource": "ATTACHMENT_SOURCE_",
    "RoutingMode": "ROUTING_MODE_",
    "BgpState": "BGP_STATE_",
    "LocateMatch": "LOCATE_MATCH_",
    "EventKind": "EVENT_KIND_",
}


def _enum_value(enum: Any, text: str) -> int:
    """'bgp' -> ROUTING_MODE_BGP; unknown text -> 0 (UNSPECIFIED)."""
    prefix = _ENUM_PREFIX[enum.DESCRIPTOR.name]
    try:
        return int(enum.Value(prefix + text.upper()))
    except ValueError:
        return 0


def _enum_str(enum: Any, value: int, unspecified: str = "unknown") -> str:
    """ROUTING_MODE_BGP -> 'bgp'; 0 or a value this client does not know -> unspecified."""
    if value == 0:
        return unspecified
    try:
        name = enum.Name(value)
    except ValueError:
        return unspecified
    return name[len(_ENUM_PREFIX[enum.DESCRIPTOR.name]):].lower()


def _timestamp(unix: float) -> Timestamp:
    ts = Timestamp()
    seconds = int(unix // 1)
    ts.seconds, ts.nanos = seconds, round((unix - seconds) * 1e9) % 1_000_000_000
    return ts


def _unix(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _refusal_to_proto(r: Refusal) -> pb.Refusal:
    return pb.Refusal(kind=r.kind, name=r.name, reason=r.reason)


def status_to_proto(s: AgentStatus) -> pb.GetStatusResponse:
    k = s.kubernetes
    msg = pb.GetStatusResponse(
        health=_enum_value(pb.Health, s.health),
        health_reasons=list(s.health_reasons),
        version=s.version,
        started_at=_timestamp(s.started_at),
        switch_hostname=s.switch_hostname,
        kubernetes=pb.KubernetesConnection(
            connected=k.connected,
            synced=k.synced,
            last_error=k.last_error or "",
            resource_version=k.resource_version,
            nodes=k.nodes,
        ),
        last_applies=[
            pb.ApplyResult(
                applier=a.applier,
                ok=a.ok,
                action=a.action,
                at=_timestamp(a.started),
                duration_seconds=a.duration,
                error=a.error or "",
            )
            for a in s.last_applies
        ],
        refusals=[_refusal_to_proto(r) for r in s.refusals],
    )
    if k.seconds_since_contact is not None:
        msg.kubernetes.seconds_since_contact = k.seconds_since_contact
    if s.last_reconcile_latency_seconds is not None:
        msg.last_reconcile_latency_seconds = s.last_reconcile_latency_seconds
    return msg


def status_from_proto(m: pb.GetStatusResponse) -> AgentStatus:
    k = m.kubernetes
    return AgentStatus(
        health=_enum_str(pb.Health, m.health),
        health_reasons=tuple(m.health_reasons),
        version=m.version,
        started_at=_unix(m.started_at),
        switch_hostname=m.switch_hostname,
        kubernetes=KubernetesConnection(
            connected=k.connected,
            synced=k.synced,
            last_error=k.last_error or None,
            seconds_since_contact=(
                k.seconds_since_contact if k.HasField("seconds_since_contact") else None
            ),
            resource_version=k.resource_version,
            nodes=k.nodes,
        ),
        last_applies=tuple(
            ApplyResult(
                applier=a.applier,
                ok=a.ok,
                action=a.action,
                started=_unix(a.at),
                duration=a.duration_seconds,
                error=a.error or None,
            )
            for a in m.last_applies
        ),
        refusals=tuple(Refusal(r.kind, r.name, r.reason) for r in m.refusals),
        last_reconcile_latency_seconds=(
            m.last_reconcile_latency_seconds
            if m.HasField("last_reconcile_latency_seconds")
            else None
        ),
    )


def attachment_to_proto(a: AttachmentInfo) -> pb.Attachment:
    msg = pb.Attachment(
        port=a.port,
        node=a.node,
        source=_enum_value(pb.AttachmentSource, a.source),
        routing=_enum_value(pb.RoutingMode, a.routing),
        bgp_state=_enum_value(pb.BgpState, a.bgp_state),
        allowed_prefixes=list(a.prefixes),
        draining=a.draining,
        node_ips=list(a.node_ips),
        vtep=a.vtep or "",
    )
    if a.prefixes_accepted is not None:
        msg.prefixes_accepted = a.prefixes_accepted
    if a.pods is not None:
        msg.pods = a.pods
    return msg


def _routing_str(value: int) -> str:
    return _enum_str(pb.RoutingMode, value)


def attachment_from_proto(m: pb.Attachment) -> AttachmentInfo:
    return AttachmentInfo(
        port=m.port,
        node=m.node,
        source=_enum_str(pb.AttachmentSource, m.source),
        routing=_routing_str(m.routing),
        bgp_state=_enum_str(pb.BgpState, m.bgp_state),
        prefixes=tuple(m.allowed_prefixes),
        prefixes_accepted=m.prefixes_accepted if m.HasField("prefixes_accepted") else None,
        draining=m.draining,
        node_ips=tuple(m.node_ips),
        vtep=m.vtep or None,
        pods=m.pods if m.HasField("pods") else None,
    )


def route_to_proto(r: RouteInfo) -> pb.Route:
    return pb.Route(
        prefix=r.prefix,
        owner=r.owner,
        routing=_enum_value(pb.RoutingMode, r.routing),
        next_hop=r.next_hop,
        device=r.device,
        desired=r.desired,
        observed=r.observed,
    )


def route_from_proto(m: pb.Route) -> RouteInfo:
    return RouteInfo(
        prefix=m.prefix,
        owner=m.owner,
        routing=_routing_str(m.routing),
        next_hop=m.next_hop,
        device=m.device,
        desired=m.desired,
        observed=m.observed,
    )


def vtep_to_proto(v: VtepInfo) -> pb.Vtep:
    return pb.Vtep(
        owner=v.owner,
        vtep_ip=v.vtep_ip,
        mac=v.mac,
        pod_cidr=v.pod_cidr,
        vni=v.vni,
        desired=v.desired,
        observed=v.observed,
    )


def vtep_from_proto(m: pb.Vtep) -> VtepInfo:
    return VtepInfo(
        owner=m.owner,
        vtep_ip=m.vtep_ip,
        mac=m.mac,
        pod_cidr=m.pod_cidr,
        vni=m.vni,
        desired=m.desired,
        observed=m.observed,
    )


def headroom_to_proto(h: HeadroomInfo) -> pb.Headroom:
    msg = pb.Headroom(
        resource=h.resource,
        desired=h.desired,
        source=h.source,
        threshold=h.threshold,
        reserve=h.reserve,
        admitted=h.admitted,
        used_source=h.used_source or "",
    )
    for name in ("used", "capacity", "nodes_left", "percent", "nodes_left_average"):
        value = getattr(h, name)
        if value is not None:
            setattr(msg, name, value)
    return msg


def headroom_from_proto(m: pb.Headroom) -> HeadroomInfo:
    def opt(name: str) -> Any:
        return getattr(m, name) if m.HasField(name) else None

    return HeadroomInfo(
        resource=m.resource,
        used=opt("used"),
        desired=m.desired,
        capacity=opt("capacity"),
        source=m.source,
        nodes_left=opt("nodes_left"),
        percent=opt("percent"),
        threshold=m.threshold or "unknown",
        reserve=m.reserve,
        admitted=m.admitted,
        nodes_left_average=opt("nodes_left_average"),
        used_source=m.used_source or None,
    )


# "no-announcer" is no enum-able word: the states are mapped by hand, both ways. A state this
# side cannot name (UNKNOWN: the FIB was not read) is UNSPECIFIED.
_SERVICE_STATES = {
    "ok": pb.SERVICE_VIP_STATE_OK,
    "no-announcer": pb.SERVICE_VIP_STATE_NO_ANNOUNCER,
    "refused": pb.SERVICE_VIP_STATE_REFUSED,
}
_SERVICE_STATE_NAMES = {v: k for k, v in _SERVICE_STATES.items()}


def services_to_proto(rows: Sequence[ServiceInfo]) -> pb.ListServicesResponse:
    """Every node's port once for the whole list, not per VIP (see the proto)."""
    ports: dict[str, str] = {}
    for s in rows:
        ports.update(s.ports)
    return pb.ListServicesResponse(services=[service_to_proto(s, ports=False) for s in rows],
                                   ports=ports)


def services_from_proto(m: pb.ListServicesResponse) -> list[ServiceInfo]:
    rows = []
    for v in m.services:
        row = service_from_proto(v)
        named = sorted({*row.nodes_permitted, *(row.nodes_announcing or ())})
        rows.append(dataclasses.replace(row, ports={n: m.ports[n] for n in named
                                                    if n in m.ports}))
    return rows


def service_to_proto(s: ServiceInfo, *, ports: bool = True) -> pb.ServiceVip:
    return pb.ServiceVip(
        vip=s.vip,
        prefix=s.prefix,
        service=s.service,
        services=list(s.services),
        policy=s.policy,
        nodes_permitted=list(s.nodes_permitted),
        nodes_announcing=list(s.nodes_announcing or ()),
        announcing_known=s.nodes_announcing is not None,
        state=_SERVICE_STATES.get(s.state, pb.SERVICE_VIP_STATE_UNSPECIFIED),
        reason=s.reason or "",
        ports=dict(s.ports) if ports else {},
    )


def service_from_proto(m: pb.ServiceVip) -> ServiceInfo:
    return ServiceInfo(
        vip=m.vip,
        service=m.service,
        services=tuple(m.services),
        policy=m.policy or "unknown",
        nodes_permitted=tuple(m.nodes_permitted),
        nodes_announcing=tuple(m.nodes_announcing) if m.announcing_known else None,
        state=_SERVICE_STATE_NAMES.get(m.state, "unknown"),
        reason=m.reason or None,
        prefix=m.prefix,
        ports=dict(sorted(m.ports.items())),
    )


def _pod_to_proto(p: PodInfo) -> pb.Pod:
    return pb.Pod(
        namespace=p.namespace,
        name=p.name,
        node=p.node,
        ips=list(p.ips),
        phase=p.phase,
        host_network=p.host_network,
        created=p.created,
    )


def locate_to_proto(r: LocateResult) -> pb.LocateResponse:
    msg = pb.LocateResponse(
        query=r.query,
        matched=_enum_value(pb.LocateMatch, r.matched),
        node=r.node,
        port=r.port,
        routing=_enum_value(pb.RoutingMode, r.routing),
        route_prefix=r.route_prefix,
        next_hop=r.next_hop,
        vtep=r.vtep or "",
        node_ips=list(r.node_ips),
        node_prefixes=list(r.node_prefixes),
        bgp_state=_enum_value(pb.BgpState, r.bgp_state),
    )
    if r.pod is not None:
        msg.pod.CopyFrom(_pod_to_proto(r.pod))
    if r.service is not None:
        msg.service.CopyFrom(service_to_proto(r.service))
    return msg


def locate_from_proto(m: pb.LocateResponse) -> LocateResult:
    pod = None
    if m.HasField("pod"):
        p = m.pod
        pod = PodInfo(p.namespace, p.name, p.node, tuple(p.ips), p.phase, p.host_network,
                      p.created)
    return LocateResult(
        query=m.query,
        matched=_enum_str(pb.LocateMatch, m.matched),
        node=m.node,
        port=m.port,
        routing=_routing_str(m.routing),
        route_prefix=m.route_prefix,
        next_hop=m.next_hop,
        vtep=m.vtep or None,
        pod=pod,
        node_ips=tuple(m.node_ips),
        node_prefixes=tuple(m.node_prefixes),
        bgp_state=_enum_str(pb.BgpState, m.bgp_state),
        service=service_from_proto(m.service) if m.HasField("service") else None,
    )


def event_to_proto(e: Event) -> pb.Event:
    return pb.Event(
        seq=e.seq,
        kind=_enum_value(pb.EventKind, e.kind),
        time=_timestamp(e.time),
        subject=e.subject,
        message=e.message,
    )


def event_from_proto(m: pb.Event) -> Event:
    return Event(
        kind=_enum_str(pb.EventKind, m.kind),
        time=_unix(m.time),
        subject=m.subject,
        message=m.message,
        seq=m.seq,
    )


def rfc3339(unix: float) -> str:
    """Unix time as RFC 3339 UTC with milliseconds (the JSON output's time format)."""
    return (
        dt.datetime.fromtimestamp(unix, dt.UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


__all__ = [
    "DEFAULT_SOCKET",
    "MAX_STREAMS_PER_CLIENT",
    "SERVICE_NAME",
    "FabricStatusServicer",
    "SocketInUse",
    "StatusServer",
    "StreamLimit",
    "attachment_from_proto",
    "attachment_to_proto",
    "client_identity",
    "event_from_proto",
    "event_to_proto",
    "headroom_from_proto",
    "headroom_to_proto",
    "locate_from_proto",
    "locate_to_proto",
    "rfc3339",
    "route_from_proto",
    "route_to_proto",
    "service_from_proto",
    "service_to_proto",
    "services_from_proto",
    "services_to_proto",
    "status_from_proto",
    "status_to_proto",
    "vtep_from_proto",
    "vtep_to_proto",
]
