"""The command channel: one pyroute2 socket that carries the agent's batched writes and dumps.

Speed: routes, neighbours and FDB entries are packed by hand (agent.apply.linux.codec) and sent
up to `BATCH` messages per sendmsg, without per-message ACKs: the kernel answers only failures
(each naming the sequence number of its message) and a trailing NOOP's ACK marks the end of the
batch. Dumps are filtered by the kernel (strict checking) and by protocol again by the caller.

The VTEP device and its addresses go through pyroute2's own requests (`link`, `addr`): there is
one of each, and their shapes are pyroute2's business.

`Channel` is the interface the applier uses; `NetlinkChannel` is the real one. Tests give the
applier a fake with the same interface (FakeKernel, tests/test_linux_fakes.py).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError

from agent.apply.linux.codec import error_of, iter_messages, noop_ack

T = TypeVar("T")

# Messages per sendmsg. Every one of them may fail, and the kernel queues all the answers
# before the sender reads any (the batch is processed inside sendmsg): 512 errors fit the
# receive buffer below with room to spare, and larger batches gain nothing measurable.
BATCH = 512
COMMAND_RCVBUF = 4 << 20
REPLY_TIMEOUT = 10.0
# pyroute2 allocates sequence numbers 0xFF..0xFFFF on a socket; the agent's raw batches use the
# range above, so the ACK of one of pyroute2's own requests is never mistaken for theirs.
_SEQ_FIRST, _SEQ_LAST = 0x10000, 0x7FFFFFFF
# A delete that fails with one of these found nothing to delete: done, as far as the agent goes.
GONE_ON_DELETE = frozenset({errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL})


class ChannelError(Exception):
    """The command socket is unusable (closed, overflowed, no answer): reopen and resync."""


class Channel(Protocol):
    """What the applier asks of the kernel."""

    async def batch(self, items: Sequence[T], encode: Callable[[int, T], bytes],
                    ) -> dict[int, tuple[int, str]]:
        """Send one request per item (encode(seq, item)); {index: (errno, text)} of failures."""
        ...

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        """The datagrams of one complete dump (request(seq) asks for it); raises NetlinkError
        when the kernel refuses the dump."""
        ...

    async def link(self, command: str, **kwargs: Any) -> Any:
        """pyroute2's IPRoute.link()."""
        ...

    async def addr(self, command: str, **kwargs: Any) -> Any:
        """pyroute2's IPRoute.addr()."""
        ...

    def close(self) -> None: ...


ChannelOpener = Callable[[str | None], Awaitable[Channel]]


class NetlinkChannel:
    """Raw batched requests and dumps on a pyroute2 AsyncIPRoute socket.

    pyroute2 routes every datagram it reads into a queue per sequence number it has registered
    (`msg_queue`), and everything else into queue 0. Batched messages use sequence numbers it
    has not registered, so their (rare) errors land in queue 0, drained after each batch; the
    barrier's and dumps' sequence numbers are registered so their answers come back directly.
    """

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self.ipr = ipr
        self._seq = _SEQ_FIRST

    @classmethod
    async def open(cls, netns: str | None) -> NetlinkChannel:
        # flags=0: never create the namespace when it does not exist (pyroute2's default).
        kwargs: dict[str, Any] = {"netns": netns, "flags": 0} if netns else {}
        ipr = AsyncIPRoute(strict_check=True, ext_ack=True, **kwargs)
        try:
            await ipr.setup_endpoint()
            # Not NETLINK_CAP_ACK: pyroute2 0.9 parses the echoed request of an error as a
            # whole message and crashes (struct.error) on a capped one.
            set_rcvbuf(ipr.socket, COMMAND_RCVBUF)
        except BaseException:
            ipr.close()
            raise
        return cls(ipr)

    def close(self) -> None:
        self.ipr.close()

    async def link(self, command: str, **kwargs: Any) -> Any:
        return await self.ipr.link(command, **kwargs)

    async def addr(self, command: str, **kwargs: Any) -> Any:
        return await self.ipr.addr(command, **kwargs)

    def _take_seqs(self, count: int) -> int:
        if self._seq + count > _SEQ_LAST:
            self._seq = _SEQ_FIRST
        first, self._seq = self._seq, self._seq + count
        return first

    def _send(self, data: bytes) -> None:
        try:
            self.ipr.send(data)
        except OSError as exc:  # also pyroute2 re-raising an earlier socket error
            raise ChannelError(f"netlink send failed: {exc}") from exc

    async def _reply(self, seq: int) -> bytes:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that races
        # with the answer, and a cancelled event reader then never ends.
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                data: bytes = await self.ipr.msg_queue.get(seq)
        except TimeoutError:
            raise ChannelError(f"no netlink answer within {REPLY_TIMEOUT:.0f}s") from None
        if not data:
            raise ChannelError("netlink socket closed")
        return data

    def _drain_unsolicited(self) -> list[bytes]:
        root = self.ipr.msg_queue.root
        out = []
        while not root.empty():
            out.append(root.get_nowait())
            root.task_done()
        return out

    async def batch(self, items: Sequence[T], encode: Callable[[int, T], bytes],
                    ) -> dict[int, tuple[int, str]]:
        """Send one request per item; returns {index: (errno, text)} for those that failed."""
        failures: dict[int, tuple[int, str]] = {}
        queue = self.ipr.msg_queue
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            base = self._take_seqs(len(chunk) + 1)
            parts = []
            for i, item in enumerate(chunk):
                try:
                    parts.append(encode(base + i, item))
                except (ValueError, OSError) as exc:  # e.g. an address inet_pton refuses
                    failures[start + i] = (errno.EINVAL, str(exc))
            barrier = base + len(chunk)
            parts.append(noop_ack(barrier))
            queue.ensure_tag(barrier)
            try:
                self._send(b"".join(parts))
                await self._reply(barrier)
            finally:
                queue.free_tag(barrier)
            for data in self._drain_unsolicited():
                for msg in iter_messages(data):
                    if msg.type == NLMSG_ERROR and base <= msg.seq < barrier:
                        code, text = error_of(data, msg)
                        if code:
                            failures[start + msg.seq - base] = (code, text)
                    elif msg.type == NLMSG_ERROR and msg.seq == 0:
                        # pyroute2's own report of a socket error (e.g. ENOBUFS)
                        raise ChannelError(f"netlink socket error {error_of(data, msg)[0]}")
        return failures

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        """The datagrams of one complete dump, retried when the kernel flags it interrupted."""
        queue = self.ipr.msg_queue
        for _ in range(5):
            seq = self._take_seqs(1)
            queue.ensure_tag(seq)
            parts: list[bytes] = []
            interrupted = False
            try:
                self._send(request(seq))
                done = False
                while not done:
                    data = await self._reply(seq)
                    parts.append(data)
                    for msg in iter_messages(data):
                        interrupted = interrupted or bool(msg.flags & NLM_F_DUMP_INTR)
                        if msg.type == NLMSG_DONE:
                            done = True
                        elif msg.type == NLMSG_ERROR:
                            code, text = error_of(data, msg)
                            raise NetlinkError(code, text or errno.errorcode.get(code, str(code)))
            finally:
                queue.free_tag(seq)
            if not interrupted:
                return parts
        raise ChannelError("dump interrupted five times in a row (table changing too fast)")


async def dump_or_empty(chan: Channel, request: Callable[[int], bytes]) -> list[bytes]:
    """A dump of one family; a kernel without that family (IPv6 disabled) has nothing of ours."""
    try:
        return await chan.dump(request)
    except NetlinkError as exc:
        if exc.code in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            return []
        raise


def set_rcvbuf(sock: socket.socket, size: int) -> None:
    # SO_RCVBUFFORCE (CAP_NET_ADMIN, which the agent has) passes net.core.rmem_max.
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def errtext(code: int, text: str) -> str:
    """"ENETUNREACH: Nexthop has invalid gateway": the errno's name, then the kernel's
    extended-ACK text, or strerror when it gave none."""
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{name}: {text}" if text else f"{name}: {os.strerror(code)}"


def nlerr(exc: NetlinkError) -> str:
    """pyroute2's NetlinkError carries (code, the kernel's extended-ACK text or strerror)."""
    text = exc.args[-1] if len(exc.args) > 1 and isinstance(exc.args[-1], str) else ""
    return errtext(exc.code, "" if text == os.strerror(exc.code) else text)
