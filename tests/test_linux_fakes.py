"""Fakes for the Linux applier's tests that need no root, and tests that the fakes answer the
way the kernel does where the applier depends on it.

FakeKernel is a FAKE: the real channel (agent.apply.linux.channel.NetlinkChannel) needs a
network namespace and CAP_NET_ADMIN, which unit tests do not have. It keeps the same interface
(batch, dump, link, addr, close), decodes what it is sent with the agent's own codec, keeps the
routes in a dict, and answers dumps from it, so LinuxDataplane's reconcile logic runs without a
kernel. It models what the applier relies on: exclusive adds (EEXIST over an existing route),
replaces, deletes that match the protocol (ESRCH otherwise), strict dumps filtered by family,
table and protocol (0: all). It has no VTEP device (link "get" answers ENODEV) and no
neighbours: the overlay is tested against the real kernel (tests/test_linux_dataplane.py).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from pyroute2.netlink import NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)

from agent.apply.linux.codec import (
    NLMSGHDR,
    RT_TABLE_MAIN,
    RTMSG,
    RouteKey,
    RouteValue,
    collect_routes,
    decode_route,
    encode_route_dump,
    encode_route_set,
    iter_messages,
    route_key,
)

T = TypeVar("T")
NLMSG_DONE = 3


class FakeEvents:
    """The event socket as the applier's EventReader uses it: read() and close()."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = False

    async def read(self) -> bytes:
        return await self.queue.get()

    def put(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.queue.put_nowait(data)

    def close(self) -> None:
        self.closed = True


def done_message(seq: int = 1) -> bytes:
    return NLMSGHDR.pack(20, NLMSG_DONE, 2, seq, 0) + b"\0\0\0\0"


def set_rtm_flags(message: bytes, flags: int) -> bytes:
    """The same route message with other rtm_flags (e.g. RTM_F_OFFLOAD_FAILED)."""
    head = bytearray(message)
    struct.pack_into("=I", head, 16 + 8, flags)
    return bytes(head)


def as_event(message: bytes, msg_type: int) -> bytes:
    """A route request turned into the notification the kernel sends for it."""
    head = bytearray(message)
    struct.pack_into("=HH", head, 4, msg_type, 0)
    return bytes(head)


class FakeKernel:
    """A fake of NetlinkChannel's interface over an in-memory main table (see the module
    docstring for what it models and what it does not)."""

    def __init__(self) -> None:
        self.routes: dict[RouteKey, bytes] = {}  # key -> the message a dump answers with
        self.refuse: dict[str, tuple[int, str]] = {}  # dst -> the error its add gets
        self.sent: list[tuple[int, int, str]] = []  # (type, flags, dst) of each write
        self.dumps: list[tuple[int, int, int]] = []  # (type, family, protocol) requested
        self.closed = False
        self.opened: list[str | None] = []  # netns of each open

    async def open(self, netns: str | None) -> FakeKernel:
        self.opened.append(netns)
        self.closed = False
        return self

    # --- state, as another owner or the test changes it

    def add_route(self, prefix: str, via: str, proto: int, flags: int = 0) -> bytes:
        key = route_key(prefix)
        message = set_rtm_flags(encode_route_set(1, key, RouteValue(via, False), proto, False,
                                                 None), flags)
        self.routes[key] = message
        return message

    def remove_route(self, prefix: str) -> bytes:
        """Deletes it behind the applier's back; returns the kernel's RTM_DELROUTE event."""
        return as_event(self.routes.pop(route_key(prefix)), RTM_DELROUTE)

    def owned(self, proto: int) -> dict[str, str | None]:
        """prefix -> gateway of the routes with protocol `proto`."""
        table = collect_routes([b"".join(self.routes.values())], proto, RT_TABLE_MAIN, None)
        return {k.dst: v.gateway for k, v in table.items()}

    def protocols(self) -> dict[str, int]:
        return {k.dst: RTMSG.unpack_from(m, 16)[5] for k, m in self.routes.items()}

    # --- the channel interface

    async def batch(self, items: Sequence[T], encode: Callable[[int, T], bytes],
                    ) -> dict[int, tuple[int, str]]:
        if self.closed:
            raise AssertionError("batch on a closed channel")
        failures: dict[int, tuple[int, str]] = {}
        for i, item in enumerate(items):
            try:
                data = encode(0x10000 + i, item)
            except (ValueError, OSError) as exc:
                failures[i] = (errno.EINVAL, str(exc))
                continue
            for m in iter_messages(data):
                code = self._write(data[m.offset:m.end], m.type, m.flags)
                if code:
                    failures[i] = code
        return failures

    def _write(self, message: bytes, msg_type: int, flags: int) -> tuple[int, str] | None:
        if msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH):
            self.sent.append((msg_type, flags, "neigh"))
            return (errno.ENODEV, "")  # no VTEP in this fake
        route = decode_route(message, 0, len(message), None)
        self.sent.append((msg_type, flags, route.key.dst))
        if msg_type == RTM_NEWROUTE:
            if route.key.dst in self.refuse:
                return self.refuse[route.key.dst]
            if route.key in self.routes and flags & NLM_F_EXCL:
                return (errno.EEXIST, "")
            if route.key not in self.routes and not flags & (NLM_F_EXCL | NLM_F_REPLACE):
                raise AssertionError("a route add without NLM_F_EXCL or NLM_F_REPLACE")
            self.routes[route.key] = as_event(message, RTM_NEWROUTE)
            return None
        held = self.routes.get(route.key)
        if held is None or (route.proto and RTMSG.unpack_from(held, 16)[5] != route.proto):
            return (errno.ESRCH, "")  # the kernel matches the protocol of a delete
        del self.routes[route.key]
        return None

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        data = request(1)
        msg_type = NLMSGHDR.unpack_from(data)[1]
        family, _dl, _sl, _tos, table, proto, *_ = RTMSG.unpack_from(data, 16)
        self.dumps.append((msg_type, family, proto))
        if msg_type == RTM_GETNEIGH:
            return [done_message()]
        assert msg_type == RTM_GETROUTE, msg_type
        picked = b""
        for key, message in self.routes.items():
            if (key.family == family and key.table == table
                    and proto in (0, RTMSG.unpack_from(message, 16)[5])):
                picked += message
        return [picked + done_message()]

    async def link(self, command: str, **kwargs: Any) -> Any:
        raise NetlinkError(errno.ENODEV, "No such device")

    async def addr(self, command: str, **kwargs: Any) -> Any:
        raise NetlinkError(errno.ENODEV, "No such device")

    def close(self) -> None:
        self.closed = True


# --- the fakes against the codec --------------------------------------------------------------


def test_fake_dump_answers_by_family_and_protocol() -> None:
    kernel = FakeKernel()
    kernel.add_route("10.1.0.0/24", "192.0.2.2", 233)
    kernel.add_route("10.2.0.0/24", "192.0.2.9", 4)
    kernel.add_route("fd00:1::/64", "2001:db8::2", 233)
    ours = asyncio.run(kernel.dump(lambda s: encode_route_dump(s, socket.AF_INET, 233)))
    assert collect_routes(ours, 233, RT_TABLE_MAIN, None) == {
        route_key("10.1.0.0/24"): RouteValue("192.0.2.2", False)}
    every = asyncio.run(kernel.dump(lambda s: encode_route_dump(s, socket.AF_INET, 0)))
    assert sum(1 for m in iter_messages(every[0]) if m.type == RTM_NEWROUTE) == 2
    assert kernel.owned(233) == {"10.1.0.0/24": "192.0.2.2", "fd00:1::/64": "2001:db8::2"}


def test_fake_writes_follow_the_kernels_rules() -> None:
    kernel = FakeKernel()
    kernel.add_route("10.2.0.0/24", "192.0.2.9", 4)
    add = encode_route_set(1, route_key("10.2.0.0/24"), RouteValue("192.0.2.2", False), 233,
                           False, None)
    assert asyncio.run(kernel.batch([add], lambda _s, m: m)) == {0: (errno.EEXIST, "")}
    with pytest.raises(NetlinkError):
        asyncio.run(kernel.link("get", ifname="flannel.1"))
