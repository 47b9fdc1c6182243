"""Services and EndpointSlices, watched only when Service VIPs may be accepted at all
(`fabric.service_pools` set), and slimmed before the informers store them, as Nodes are.

What is kept is what agent.cluster.services reads: per Service, namespace, name,
creationTimestamp, spec.type, externalTrafficPolicy, externalIPs and the ingress IPs of
status.loadBalancer; per EndpointSlice, apiVersion, namespace, name, the
kubernetes.io/service-name label and, per endpoint, nodeName and the ready/serving conditions
(addresses, ports, hints and targetRefs are most of a slice's bytes and are not read). Lists are
cut one past what parse accepts, so parse still sees (and refuses) an excess; strings over their
bound become markers parse refuses with a reason. tests/test_service_fields.py checks parse gives
the same answer on the slim objects as on the full ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from agent.cluster.nodes import value_at
from agent.cluster.services import (
    MAX_ENDPOINTS_PER_SLICE,
    MAX_TIMESTAMP,
    MAX_VIPS_PER_SERVICE,
    SERVICE_NAME_LABEL,
)
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.informers.node_fields import MAX_NAME, MAX_SHORT, bounded, marker

SERVICES_PATH = "/api/v1/services"
ENDPOINT_SLICES_PATH = "/apis/discovery.k8s.io/v1/endpointslices"
MAX_ADDRESS = 64  # an IPv6 address in its longest text form is 45 characters


def _list(raw: Any, keep: int, each: Callable[[Any], Any]) -> Any:
    if not isinstance(raw, list):
        return bounded(raw, 0)  # not a list: parse refuses what it finds
    return [each(entry) for entry in raw[:keep]]


def _identity(meta: Mapping[Any, Any]) -> dict[str, Any]:
    kept = {k: bounded(meta[k], MAX_NAME) for k in ("namespace", "name") if k in meta}
    created = meta.get("creationTimestamp")
    # Only orders Services (oldest first for room): parse reads anything but a short string as
    # "no time", so anything else is left out here rather than turned into a marker string.
    if isinstance(created, str) and len(created) <= MAX_TIMESTAMP:
        kept["creationTimestamp"] = created
    return kept


def _ingress(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return bounded(entry, 0)
    return {"ip": bounded(entry["ip"], MAX_ADDRESS)} if "ip" in entry else {}


def slim_service(obj: Any) -> Any:
    """The Service reduced to what parse_service reads (a new dict)."""
    if not isinstance(obj, Mapping):
        return obj
    slim: dict[str, Any] = {}
    if isinstance(obj.get("metadata"), Mapping):  # anything else reads as absent to parse
        slim["metadata"] = _identity(obj["metadata"])
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        kept: dict[str, Any] = {k: bounded(spec[k], MAX_SHORT)
                                for k in ("type", "externalTrafficPolicy") if k in spec}
        if "externalIPs" in spec:
            kept["externalIPs"] = _list(spec["externalIPs"], MAX_VIPS_PER_SERVICE + 1,
                                        lambda ip: bounded(ip, MAX_ADDRESS))
        slim["spec"] = kept
    ingress = value_at(obj, "status", "loadBalancer", "ingress")
    if ingress is not None:
        slim["status"] = {"loadBalancer": {
            "ingress": _list(ingress, MAX_VIPS_PER_SERVICE + 1, _ingress)}}
    return slim


# 100,000 endpoints hold a handful of distinct condition sets: one shared (never mutated) dict
# per set instead of one per endpoint. Bounded: hostile values could make many distinct ones.
_SHARED_CONDITIONS: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
_MAX_SHARED = 64


def _shared(conditions: dict[str, Any]) -> dict[str, Any]:
    key = tuple(conditions.items())
    found = _SHARED_CONDITIONS.get(key)
    if found is not None:
        return found
    if len(_SHARED_CONDITIONS) < _MAX_SHARED:
        _SHARED_CONDITIONS[key] = conditions
    return conditions


def _endpoint(entry: Any) -> Any:
    if not isinstance(entry, Mapping):
        return bounded(entry, 0)
    kept: dict[str, Any] = {}
    if "nodeName" in entry:
        name = bounded(entry["nodeName"], MAX_NAME)
        kept["nodeName"] = sys.intern(name) if isinstance(name, str) else name
    conditions = entry.get("conditions")
    if isinstance(conditions, Mapping):
        # A non-boolean is kept as a marker, not dropped: absent means "ready", a wrong value
        # means "not ready" to parse, and slimming must not turn one into the other.
        kept["conditions"] = _shared({k: conditions[k] if isinstance(conditions[k], bool | None)
                                      else marker(conditions[k], 0)
                                      for k in ("ready", "serving") if k in conditions})
    elif conditions is not None:
        kept["conditions"] = bounded(conditions, 0)
    return kept


def slim_endpoint_slice(obj: Any) -> Any:
    """The EndpointSlice reduced to what parse_endpoint_slice reads (a new dict)."""
    if not isinstance(obj, Mapping):
        return obj
    meta = obj.get("metadata")
    slim: dict[str, Any] = {}
    if isinstance(meta, Mapping):  # anything else reads as absent to parse
        slim["metadata"] = _identity(meta)
    if "apiVersion" in obj:
        slim["apiVersion"] = bounded(obj["apiVersion"], MAX_SHORT)
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    if isinstance(labels, Mapping) and SERVICE_NAME_LABEL in labels:
        slim["metadata"]["labels"] = {SERVICE_NAME_LABEL: bounded(labels[SERVICE_NAME_LABEL],
                                                                   MAX_NAME)}
    if "endpoints" in obj:
        slim["endpoints"] = (None if obj["endpoints"] is None else
                             _list(obj["endpoints"], MAX_ENDPOINTS_PER_SLICE + 1, _endpoint))
    return slim


class ServiceWatch:
    """The two informers a plan with Service VIPs needs; synced once both have listed."""

    def __init__(self, api: KubeApi, *, on_change: Callable[[], None],
                 watch_timeout: float) -> None:
        self.services = Informer(api, SERVICES_PATH, on_change=on_change,
                                 watch_timeout=watch_timeout, transform=slim_service)
        self.slices = Informer(api, ENDPOINT_SLICES_PATH, on_change=on_change,
                               watch_timeout=watch_timeout, transform=slim_endpoint_slice)

    @property
    def synced(self) -> bool:
        return self.services.synced and self.slices.synced

    def snapshot(self) -> tuple[tuple[dict[str, Any], ...], tuple[dict[str, Any], ...]]:
        """The stored objects now (the informers replace objects, never mutate them)."""
        return tuple(self.services.store.values()), tuple(self.slices.store.values())
