"""Validators for values that come from Kubernetes or from the config file.

Everything from the API server is hostile until it passes one of these: a value that reaches an
FRR template, a netlink call or a Redis key must have been accepted here first. Each validator
returns the normalised value or raises ValueError with a reason a network engineer can act on.
"""

from __future__ import annotations

import ipaddress
import re

# Every pattern is used with fullmatch: in Python `$` also matches before a trailing newline,
# so `match` with `^...$` would let "node-a\n" through.
# Kubernetes object names (Nodes): DNS-1123 subdomain, as apimachinery's IsDNS1123Subdomain.
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1); we allow the conservative set that
# every tool (iproute2, FRR, lldpd, SONiC) handles without quoting.
_IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
# Switch hostnames: RFC 1123 labels, case-insensitive, dots allowed.
_HOSTNAME_RE = re.compile(
    r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
# Label selector terms as kubectl accepts them (the API server re-checks; we only keep garbage
# out of the query string and the logs).
_LABEL_KEY = r"([a-z0-9A-Z.-]{1,253}/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?"
_LABEL_VALUE = r"([a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?)?"
_SELECTOR_TERM_RE = re.compile(
    rf"^\s*(!?{_LABEL_KEY}"
    rf"|{_LABEL_KEY}\s*(=|==|!=)\s*{_LABEL_VALUE}"
    rf"|{_LABEL_KEY}\s+(in|notin)\s+\(\s*{_LABEL_VALUE}(\s*,\s*{_LABEL_VALUE})*\s*\))\s*$"
)

# ASNs that must never be configured: 0 (RFC 7607), AS_TRANS (RFC 6793), the last 16- and
# 32-bit values (RFC 7300).
_RESERVED_ASNS = {0, 23456, 65535, 4294967295}


def node_name(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"node name must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= 253 or not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(f"node name {printable(value)} is not a DNS-1123 subdomain")
    return value


def interface_name(value: object) -> str:
    if not isinstance(value, str) or not _IFNAME_RE.fullmatch(value):
        raise ValueError(
            f"interface name {printable(value)} is not a valid port name "
            "(letter first, then letters, digits, '_', '.', '-', at most 15 characters)"
        )
    return value


def hostname(value: object) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME_RE.fullmatch(value):
        raise ValueError(f"hostname {printable(value)} is not an RFC 1123 host name")
    return value


def asn(value: object) -> int:
    # bool is an int subclass; "yes" in YAML must not become AS 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ASN must be an integer, got {printable(value)}")
    if not 1 <= value <= 4294967295 or value in _RESERVED_ASNS:
        raise ValueError(f"ASN {value} is out of range or reserved (1-4294967294, not 23456/65535)")
    return value


def ip_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if not isinstance(value, str):
        raise ValueError(f"IP address must be a string, got {printable(value)}")
    if "%" in value:
        # Python parses "fe80::1%swp4" (a zone id); FRR's prefix lists and netlink cannot take
        # it, and a node's address is never scoped to one of the switch's interfaces.
        raise ValueError(f"{printable(value)} has a zone id")
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{printable(value)} is not an IP address") from None
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        raise ValueError(f"{value} is not a usable unicast address")
    return addr


def host_address(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A node's routable address (InternalIP, VTEP endpoint): unicast and not link-local (a
    link-local address is valid on one link only, so a /32 or /128 route to it is meaningless
    upstream), not the limited broadcast."""
    addr = ip_address(value)
    if addr.is_link_local:
        raise ValueError(f"{addr} is link-local")
    if addr == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"{addr} is the broadcast address")
    return addr


def cidr(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network in canonical form: host bits set is refused rather than silently masked,
    because a node announcing 10.244.1.5/24 has a misconfiguration worth seeing."""
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{printable(value)} is not a CIDR (address/prefix-length)")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        # ipaddress's message repeats the whole value: bounded like the value itself.
        raise ValueError(f"{printable(value)} is not a valid CIDR: "
                         f"{_clipped(str(exc))}") from None
    if str(net) != value:  # also refuses whitespace and newlines that int() would forgive
        raise ValueError(f"{printable(value)} is not in canonical form (expected {net})")
    return net


def mac_address(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", value):
        raise ValueError(f"{printable(value)} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if int(value[:2], 16) & 1:
        raise ValueError(f"{value} is a multicast MAC address")
    return value.lower()


def unicast_mac(value: object) -> str:
    """A MAC a device may own (a VTEP's): unicast (mac_address) and not all-zero, which the
    kernel refuses for an FDB entry or a neighbour, so every resync would fail again."""
    mac = mac_address(value)
    if mac == "00:00:00:00:00:00":
        raise ValueError(f"{mac} is the all-zero MAC address")
    return mac


def label_selector(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("label selector must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"label selector {printable(value)} contains control characters")
    if not value.strip():
        return ""
    for term in split_selector(value):
        if not _SELECTOR_TERM_RE.fullmatch(term):
            raise ValueError(f"label selector term {term!r} is not valid")
    return value.strip()


def split_selector(value: str) -> list[str]:
    """Split on commas that are not inside a set-based term's parentheses."""
    terms, depth, current = [], 0, []
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return terms


def printable(value: object, limit: int = 80) -> str:
    """A value as it may appear in a log line or refusal: repr-escaped (no newlines reach a log
    parser) and truncated. Every validator's error uses it: a kubelet may write 300 KB into a
    field, and the error is logged and kept in the status."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clipped(text: str, limit: int = 120) -> str:
    """A library's message (it may quote the whole value): control characters escaped, and
    truncated like printable(), without printable()'s quotes."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
