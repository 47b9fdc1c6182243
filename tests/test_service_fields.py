"""The Service and EndpointSlice informers store slim objects (agent/informers/services.py):
parse_service and parse_endpoint_slice answer exactly the same on the slim object as on the full
one, for real objects as a cluster serves them and for every hostile object the fuzz strategies
generate; and a slice's bulk (addresses, ports, targetRefs) is not kept."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings

from agent.cluster.nodes import Refusal
from agent.cluster.services import parse_endpoint_slice, parse_service
from agent.informers.services import slim_endpoint_slice, slim_service
from tests.fuzz_profiles import FUZZ
from tests.test_fuzz_parsers import hostile_services, hostile_slices

METALLB_SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {
        "name": "web", "namespace": "shop", "uid": "0b5e2c1a", "resourceVersion": "4711",
        "creationTimestamp": "2026-11-01T09:00:00Z",
        "annotations": {"metallb.universe.tf/ip-allocated-from-pool": "leaf1-pool",
                        "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 3000},
        "labels": {"app": "web"}, "managedFields": [{"manager": "kubectl"}] * 5},
    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
             "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
             "ports": [{"port": 80, "targetPort": 8080, "nodePort": 31080, "protocol": "TCP"}],
             "selector": {"app": "web"}, "healthCheckNodePort": 32000,
             "externalIPs": ["198.51.100.20"]},
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10", "ipMode": "VIP"},
                                            {"hostname": "web.example.com"}]}},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
    "metadata": {"name": "web-7xk2p", "namespace": "shop", "resourceVersion": "4712",
                 "labels": {"kubernetes.io/service-name": "web",
                            "endpointslice.kubernetes.io/managed-by":
                                "endpointslice-controller.k8s.io"},
                 "ownerReferences": [{"kind": "Service", "name": "web"}]},
    "endpoints": [
        {"addresses": [f"10.244.1.{i}"], "nodeName": f"srv{i % 3 + 1}",
         "conditions": {"ready": i % 4 != 0, "serving": True, "terminating": False},
         "targetRef": {"kind": "Pod", "name": f"web-{i}", "namespace": "shop", "uid": "u" * 36},
         "zone": "r1"}
        for i in range(60)],
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
}


def test_a_real_service_and_slice_parse_the_same_slim() -> None:
    assert parse_service(slim_service(METALLB_SERVICE)) == parse_service(METALLB_SERVICE)
    assert parse_endpoint_slice(slim_endpoint_slice(SLICE)) == parse_endpoint_slice(SLICE)
    service, _ = parse_service(slim_service(METALLB_SERVICE))
    assert service is not None and [str(v) for v in service.vips] == [
        "203.0.113.10", "198.51.100.20"]


def test_the_bulk_is_not_kept() -> None:
    full, slim = len(json.dumps(SLICE)), len(json.dumps(slim_endpoint_slice(SLICE)))
    assert slim * 3 < full, (slim, full)
    text = json.dumps(slim_service(METALLB_SERVICE))
    assert "last-applied" not in text and "managedFields" not in text and "31080" not in text


def test_a_condition_that_is_no_boolean_stays_not_ready() -> None:
    """parse reads an absent `ready` as ready and a wrong value as not ready: slimming must not
    drop the wrong value."""
    obj: dict[str, Any] = {**SLICE, "endpoints": [
        {"nodeName": "srv1", "conditions": {"ready": "yes", "serving": "yes"}}]}
    slice_, _ = parse_endpoint_slice(slim_endpoint_slice(obj))
    assert slice_ is not None and slice_.ready_nodes == frozenset()


def same(slim: tuple[Any, list[Refusal]], full: tuple[Any, list[Refusal]]) -> None:
    """The same object (or None) and refusals of the same kinds: only a refusal's text may
    differ, where it quotes a value too long to keep (the slim one quotes the marker)."""
    assert slim[0] == full[0]
    assert [r.kind for r in slim[1]] == [r.kind for r in full[1]], (slim[1], full[1])


@settings(FUZZ)
@given(obj=hostile_services)
def test_parse_service_answers_the_same_on_the_slim_service(obj: Any) -> None:
    same(parse_service(slim_service(obj)), parse_service(obj))


@settings(FUZZ)
@given(obj=hostile_slices)
def test_parse_endpoint_slice_answers_the_same_on_the_slim_slice(obj: Any) -> None:
    same(parse_endpoint_slice(slim_endpoint_slice(obj)), parse_endpoint_slice(obj))


def test_a_creation_time_that_is_no_short_string_reads_as_none_either_way() -> None:
    """Found by the fuzz test: a marker in place of a list would have sorted as a time."""
    for created in ([], "9" * 65, 7):
        obj = {**METALLB_SERVICE, "metadata": {"name": "web", "namespace": "shop",
                                               "creationTimestamp": created}}
        assert parse_service(slim_service(obj)) == parse_service(obj)
        assert parse_service(obj)[0].created == ""  # type: ignore[union-attr]
