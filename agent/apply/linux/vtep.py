"""The one VTEP device, named by `dataplane.vxlan.device`: what it should be, what the kernel
has, and making the one into the other.

Built to be offloadable by a switch ASIC (mlxsw): `local` set, no underlay `dev` binding,
learning off, UDP checksum off, TTL set, TOS inherited. Immutable attributes that differ make it
re-created; MTU, MAC, the overlay address and admin state are changed in place (other addresses
on it are removed, IPv6 link-local aside: the device is the agent's). A device of that name that
is not a vxlan device is someone else's and never touched.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from typing import Any, NamedTuple

from pyroute2.netlink.exceptions import NetlinkError

from agent.apply.linux.channel import GONE_ON_DELETE, Channel, nlerr
from agent.apply.linux.codec import IFF_UP
from agent.apply.linux.results import ObjectError, Tally
from agent.apply.linux.view import LINKS, KernelView, VtepSpec
from agent.plan.model import VtepDevice

log = logging.getLogger(__name__)

# mlxsw offloads a VXLAN device only with a fixed TTL (not inherit) and inherited TOS; 64 is
# what the host stack would use.
VTEP_TTL = 64
VTEP_TOS_INHERIT = 1


def desired_vtep(dev: VtepDevice, observed: VtepSpec | None) -> VtepSpec:
    # No fixed MAC asked: whatever the kernel gave the existing device is right.
    mac = dev.mac or (observed.mac if observed else "")
    return VtepSpec(dev.vni, dev.port, dev.local, VTEP_TTL, VTEP_TOS_INHERIT, False, False, 0,
                    dev.mtu, mac, True, frozenset([dev.address] if dev.address else []))


def vtep_diff(old: VtepSpec, new: VtepSpec) -> str:
    return ", ".join(f"{a} {getattr(old, a)} -> {getattr(new, a)}"
                     for a in ("vni", "port", "local", "ttl", "tos", "learning", "udp_csum",
                               "bound") if getattr(old, a) != getattr(new, a))


class ObservedLink(NamedTuple):
    ifindex: int | None  # of our VTEP; None when absent or not ours
    spec: VtepSpec | None
    foreign: str | None  # why a device of that name is not ours to touch


async def read_link(chan: Channel, device: str) -> ObservedLink:
    """The device named `device` as the kernel has it."""
    try:
        (msg,) = await chan.link("get", ifname=device)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return ObservedLink(None, None, None)
        raise
    if msg.get(("linkinfo", "kind")) != "vxlan":
        return ObservedLink(None, None, f"a device named {device} exists and is not "
                            "a vxlan device: the agent does not touch it")
    index = msg["index"]
    data = dict((msg.get(("linkinfo", "data")) or {}).get("attrs", []))
    addresses = set()
    async for a in await chan.addr("dump", index=index):
        addr = a.get("address")
        if a["index"] == index and addr and not addr.startswith("fe80:"):
            addresses.add(f"{addr}/{a['prefixlen']}")
    spec = VtepSpec(
        vni=data.get("IFLA_VXLAN_ID", 0),
        port=data.get("IFLA_VXLAN_PORT", 0),
        local=data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6") or "",
        ttl=data.get("IFLA_VXLAN_TTL", 0),
        tos=data.get("IFLA_VXLAN_TOS", 0),
        learning=bool(data.get("IFLA_VXLAN_LEARNING", 1)),
        udp_csum=bool(data.get("IFLA_VXLAN_UDP_CSUM", 0)),
        bound=data.get("IFLA_VXLAN_LINK", 0) or 0,
        mtu=msg.get("mtu"),
        mac=msg.get("address") or "",
        up=bool(msg["flags"] & IFF_UP),
        addresses=frozenset(addresses),
    )
    return ObservedLink(index, spec, None)


async def observe_link(chan: Channel, view: KernelView) -> None:
    link = await read_link(chan, view.device)
    view.vtep_ifindex = link.ifindex
    view.foreign_link = link.foreign
    view.links.replace_dataplane({view.device: link.spec} if link.spec else {})


async def reconcile_vtep(chan: Channel, view: KernelView, dev: VtepDevice, counts: Tally,
                         errors: list[ObjectError]) -> None:
    if view.foreign_link:
        errors.append(ObjectError(LINKS, dev.name, view.foreign_link))
        view.links.replace_desired({})
        return
    observed = view.links.dataplane.get(dev.name)
    want = desired_vtep(dev, observed)
    view.links.replace_desired({dev.name: want})
    if view.links.in_sync:
        return
    try:
        if observed is not None and observed.needs_recreate(want):
            log.info("data plane: re-creating %s (%s)", dev.name, vtep_diff(observed, want))
            await chan.link("del", index=view.vtep_ifindex)
            view.forget_vtep()
            observed = None
        if observed is None:
            kwargs: dict[str, Any] = {}
            if dev.mac:
                kwargs["address"] = dev.mac
            await chan.link("add", ifname=dev.name, kind="vxlan", vxlan_id=dev.vni,
                            vxlan_local=dev.local, vxlan_port=dev.port, vxlan_learning=0,
                            vxlan_ttl=VTEP_TTL, vxlan_tos=VTEP_TOS_INHERIT,
                            vxlan_udp_csum=0, mtu=dev.mtu, **kwargs)
            await observe_link(chan, view)
            observed = view.links.dataplane.get(dev.name)
            if observed is None:
                raise NetlinkError(errno.ENODEV, "created but not found")
            want = desired_vtep(dev, observed)
            view.links.replace_desired({dev.name: want})
            counts.added += 1
            created = True
        else:
            created = False
        index = view.vtep_ifindex
        changes: dict[str, Any] = {}
        if observed.mtu != want.mtu:
            changes["mtu"] = want.mtu
        if observed.mac != want.mac:
            changes["address"] = want.mac
        if changes:
            await chan.link("set", index=index, **changes)
        for addr in sorted(observed.addresses - want.addresses):
            ip, _, plen = addr.partition("/")
            await chan.addr("del", index=index, address=ip, prefixlen=int(plen))
        for addr in sorted(want.addresses - observed.addresses):
            ip, _, plen = addr.partition("/")
            await chan.addr("add", index=index, address=ip, prefixlen=int(plen))
        if not observed.up:
            await chan.link("set", index=index, state="up")
        if not created and (changes or observed.addresses != want.addresses
                            or not observed.up):
            counts.changed += 1
        await observe_link(chan, view)
    except NetlinkError as exc:
        errors.append(ObjectError(LINKS, dev.name, nlerr(exc)))
        with contextlib.suppress(NetlinkError):
            await observe_link(chan, view)


async def remove_vtep(chan: Channel, view: KernelView, counts: Tally,
                      errors: list[ObjectError]) -> None:
    view.links.replace_desired({})
    if view.vtep_ifindex is None:
        return
    try:
        await chan.link("del", index=view.vtep_ifindex)
    except NetlinkError as exc:
        if exc.code not in GONE_ON_DELETE:
            errors.append(ObjectError(LINKS, view.device, nlerr(exc)))
            return
    view.forget_vtep()
    counts.removed += 1
