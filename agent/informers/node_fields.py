"""A Node reduced to what the agent reads, before the informer stores it (client-go's
SetTransform): kept raw, the store followed the cluster's size, not the agent's needs (+154 MB
for 10,000 Nodes of 4 KB, +433 MB for 2,000 Nodes with 256 KiB of annotations, under a 256 MB
MemoryMax).

What is kept is what agent.cluster.nodes.parse_node reads (and the selector, the status and
`render` read through it): metadata name, uid, creationTimestamp, labels, the annotations named
in agent.vocabulary; spec podCIDR, podCIDRs, unschedulable; status InternalIP addresses and
conditions (type and status: a Node's readiness). tests/test_node_fields.py checks that
parse_node gives the same answer on the slim Node as on the full one.

Every kept value is bounded. A string over its bound is replaced by a marker (never silently
dropped): the marker is no valid value of any field, so parse_node refuses it with a reason
naming the size, as it refuses any other bad value. resourceVersion is left out on purpose: the
informer reads it before slimming, and without it a Node whose kubelet heartbeat is all that
changed compares equal to the stored one, so it costs no reconcile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.cluster.nodes import MAX_BACKEND_DATA, MAX_POD_CIDRS_READ
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.vocabulary import (
    ANNOTATION_PREFIX,
    FLANNEL_PREFIX,
    ROUTING_ANNOTATION,
    SWITCH_PORT_ANNOTATION,
)

# The annotations parse_node reads, by exact key, each with its bound: flannel's backend-data
# up to what parse_flannel accepts, the others up to a switch-port value (253 + 1 + 15) with room.
MAX_ANNOTATION = 512
KEPT_ANNOTATIONS: dict[str, int] = {
    SWITCH_PORT_ANNOTATION: MAX_ANNOTATION,
    ROUTING_ANNOTATION: MAX_ANNOTATION,
    FLANNEL_PREFIX + "backend-type": MAX_ANNOTATION,
    FLANNEL_PREFIX + "backend-data": MAX_BACKEND_DATA,
    FLANNEL_PREFIX + "public-ip": MAX_ANNOTATION,
    FLANNEL_PREFIX + "public-ip-overwrite": MAX_ANNOTATION,
}
# Labels: the API server's own limits per entry (prefix 253 + "/" + name 63; value 63); a count
# bound because the API has none (Node Feature Discovery alone adds ~100-200).
MAX_LABELS = 256
MAX_LABEL_KEY = 317
MAX_LABEL_VALUE = 63
# Well-known prefixes are kept first when a Node has more labels than MAX_LABELS.
_PREFERRED_LABELS = ("kubernetes.io/", "node.kubernetes.io/", "node-role.kubernetes.io/",
                     "topology.kubernetes.io/", ANNOTATION_PREFIX)
MAX_NAME = 253  # a DNS-1123 subdomain; longer is refused by parse_node anyway
MAX_SHORT = 64  # uid, creationTimestamp, a CIDR, an IP address, a condition's type or status
# One of each family is used; one more is kept so parse_node still sees (and refuses) excess.
MAX_POD_CIDRS = MAX_POD_CIDRS_READ + 1
MAX_ADDRESSES = 16  # kubelets report 1-4 InternalIPs; more are refused one by one, these first
MAX_CONDITIONS = 16  # kubelets report 5


def marker(value: object, limit: int) -> str:
    """What replaces a value not kept. Starts with '<' and holds no '/', ':' or '{', so it is no
    valid name, port, address, CIDR or JSON; as a creationTimestamp it sorts after every real
    one (the node counts as newest: it never takes a claim because its timestamp was huge)."""
    if isinstance(value, str):
        return f"<kube-fabric-agent: {len(value)} characters not kept, at most {limit}>"
    return f"<kube-fabric-agent: a {type(value).__name__} not kept here>"


def bounded(value: Any, limit: int) -> Any:
    """A scalar as it is (a string up to `limit`), anything else as a marker: a list or an
    object where a string belongs may be megabytes and is wrong anyway."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= limit:
        return value
    return marker(value, limit)


def _labels(raw: Mapping[Any, Any]) -> dict[str, str]:
    kept = [(k, v) for k, v in raw.items()
            if isinstance(k, str) and isinstance(v, str)
            and len(k) <= MAX_LABEL_KEY and len(v) <= MAX_LABEL_VALUE]
    if len(kept) > MAX_LABELS:
        kept.sort(key=lambda kv: (not kv[0].startswith(_PREFERRED_LABELS), kv[0]))
        kept = kept[:MAX_LABELS]
    return dict(kept)


def _annotations(raw: Mapping[Any, Any]) -> dict[str, str]:
    # Only strings: parse_node ignores anything else (str_map), so a non-string is as absent.
    return {key: bounded(raw[key], limit) for key, limit in KEPT_ANNOTATIONS.items()
            if isinstance(raw.get(key), str)}


def _metadata(raw: Mapping[Any, Any]) -> dict[str, Any]:
    slim: dict[str, Any] = {}
    for key, limit in (("name", MAX_NAME), ("uid", MAX_SHORT), ("creationTimestamp", MAX_SHORT)):
        if key in raw:
            slim[key] = bounded(raw[key], limit)
    for key, keep in (("labels", _labels), ("annotations", _annotations)):
        if key in raw:
            part = raw[key]
            slim[key] = keep(part) if isinstance(part, Mapping) else marker(part, 0)
    return slim


def _spec(raw: Mapping[Any, Any]) -> dict[str, Any]:
    slim: dict[str, Any] = {}
    if "podCIDR" in raw:
        slim["podCIDR"] = bounded(raw["podCIDR"], MAX_SHORT)
    if "podCIDRs" in raw:
        cidrs = raw["podCIDRs"]
        slim["podCIDRs"] = ([bounded(c, MAX_SHORT) for c in cidrs[:MAX_POD_CIDRS]]
                            if isinstance(cidrs, list) else bounded(cidrs, MAX_SHORT))
    if raw.get("unschedulable") is True:  # parse_node reads `is True`; anything else is False
        slim["unschedulable"] = True
    return slim


def _entries(raw: Any, keys: tuple[str, ...], count: int, only_type: str | None) -> Any:
    if not isinstance(raw, list):
        return bounded(raw, 0)
    kept = [{k: bounded(e[k], MAX_SHORT) for k in keys if k in e}
            for e in raw if isinstance(e, Mapping)
            and (only_type is None or e.get("type") == only_type)]
    return kept[:count]


def _status(raw: Mapping[Any, Any]) -> dict[str, Any]:
    slim: dict[str, Any] = {}
    if "addresses" in raw:
        # Only InternalIPs are read; keeping them alone means a Node listing hundreds of other
        # addresses first cannot push its InternalIP past the bound.
        slim["addresses"] = _entries(raw["addresses"], ("type", "address"), MAX_ADDRESSES,
                                     "InternalIP")
    if "conditions" in raw:
        slim["conditions"] = _entries(raw["conditions"], ("type", "status"), MAX_CONDITIONS, None)
    return slim


_SECTIONS = {"metadata": _metadata, "spec": _spec, "status": _status}


def slim_node(obj: Any) -> Any:
    """The Node reduced to the fields the agent reads, each bounded (a new dict; `obj` is not
    changed). Anything that is not a dict is returned as it is: parse_node refuses it."""
    if not isinstance(obj, Mapping):
        return obj
    slim: dict[str, Any] = {k: bounded(obj[k], MAX_SHORT) for k in ("kind", "apiVersion")
                            if k in obj}
    for section, keep in _SECTIONS.items():
        if section in obj:
            part = obj[section]
            slim[section] = keep(part) if isinstance(part, Mapping) else marker(part, 0)
    return slim


NODES_PATH = "/api/v1/nodes"


def node_informer(api: KubeApi, *, label_selector: str | None, on_change: Callable[[], None],
                  watch_timeout: float) -> Informer:
    """The daemon's Node informer: its store holds slim Nodes."""
    return Informer(api, NODES_PATH, label_selector=label_selector, on_change=on_change,
                    watch_timeout=watch_timeout, transform=slim_node)
