"""Small helpers for tests: realistic object builders, a sync client, and `wait_for`.

The sync client is for a server running in another process (the lab, restart tests); tests
that run the server in their own event loop call the KubeApiServer methods directly, because a
blocking HTTP call from the loop would deadlock against a server on that same loop.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self

import httpx

from lab.kubeapi.store import ApiStatusError


def make_node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    pod_cidrs: list[str] | None = None,
    internal_ip: str | None = None,
    unschedulable: bool = False,
    ready: bool = True,
) -> dict:
    """A Node shaped like what a kubelet registers (the fields the agent reads)."""
    node: dict[str, Any] = {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                **(labels or {}),
            },
            "annotations": dict(annotations or {}),
        },
        "spec": {},
        "status": {
            "addresses": [{"type": "Hostname", "address": name}],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": "KubeletReady" if ready else "KubeletNotReady",
                }
            ],
        },
    }
    if pod_cidrs:
        node["spec"]["podCIDR"] = pod_cidrs[0]
        node["spec"]["podCIDRs"] = list(pod_cidrs)
    if unschedulable:
        node["spec"]["unschedulable"] = True
    if internal_ip:
        node["status"]["addresses"].insert(0, {"type": "InternalIP", "address": internal_ip})
    return node


def make_pod(
    name: str,
    namespace: str = "default",
    *,
    node_name: str | None = None,
    labels: dict[str, str] | None = None,
    pod_ip: str | None = None,
    phase: str = "Running",
    host_network: bool = False,
    service_account: str | None = None,
) -> dict:
    pod: dict[str, Any] = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}]},
        "status": {"phase": phase},
    }
    if node_name:
        pod["spec"]["nodeName"] = node_name
    if host_network:
        pod["spec"]["hostNetwork"] = True
    if service_account:
        pod["spec"]["serviceAccountName"] = service_account
    if pod_ip:
        pod["status"]["podIP"] = pod_ip
        pod["status"]["podIPs"] = [{"ip": pod_ip}]
    return pod


class KubeApiClient:
    """Synchronous client for the tests' own writes, to the test server (TCP or a unix socket)
    or to a real kube-apiserver (TLS verified against ``verify``, a CA file).

    It writes the way kubelets do on a real server: status through the status subresource,
    since a create or an update of the object itself resets or ignores it there.
    """

    def __init__(
        self,
        base_url: str = "http://localhost",
        *,
        uds: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        verify: str | bool | ssl.SSLContext = True,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(verify, str):  # a CA file
            verify = ssl.create_default_context(cafile=verify)
        transport = httpx.HTTPTransport(uds=uds, verify=verify) if uds else None
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport,
            verify=verify,
        )
        self._namespaces: set[str] = {"default"}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> Any:
        content = None if body is None else json.dumps(body).encode()
        response = self._http.request(
            method, path, content=content, headers={"Content-Type": content_type}
        )
        data = response.json() if response.content else None
        if response.status_code >= 400:
            status = data if isinstance(data, dict) else {}
            raise ApiStatusError(
                response.status_code,
                status.get("reason", ""),
                status.get("message", response.text),
                status.get("details"),
            )
        return data

    def create_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        pod_cidrs: list[str] | None = None,
        internal_ip: str | None = None,
        unschedulable: bool = False,
    ) -> dict:
        node = make_node(
            name,
            labels=labels,
            annotations=annotations,
            pod_cidrs=pod_cidrs,
            internal_ip=internal_ip,
            unschedulable=unschedulable,
        )
        created = self.request("POST", "/api/v1/nodes", node)
        return self.set_status(f"/api/v1/nodes/{name}", node["status"], created)

    def get_node(self, name: str) -> dict:
        return self.request("GET", f"/api/v1/nodes/{name}")

    def patch_node(self, name: str, merge_patch: dict) -> dict:
        return self.request(
            "PATCH", f"/api/v1/nodes/{name}", merge_patch, "application/merge-patch+json"
        )

    def delete_node(self, name: str) -> dict:
        return self.request("DELETE", f"/api/v1/nodes/{name}")

    def list_nodes(self, **params: str) -> dict:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return self.request("GET", f"/api/v1/nodes?{query}" if query else "/api/v1/nodes")

    def create_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        node_name: str | None = None,
        labels: dict[str, str] | None = None,
        pod_ip: str | None = None,
        phase: str = "Running",
        service_account: str | None = None,
    ) -> dict:
        pod = make_pod(
            name, namespace, node_name=node_name, labels=labels, pod_ip=pod_ip, phase=phase,
            service_account=service_account,
        )
        self.ensure_namespace(namespace)
        created = self.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        return self.set_status(f"/api/v1/namespaces/{namespace}/pods/{name}", pod["status"],
                               created)

    def set_status(self, path: str, status: dict, created: dict) -> dict:
        """Write ``status`` through the status subresource unless the create kept it (a real
        server resets a new Pod's status to Pending and may drop a Node's)."""
        if all(created.get("status", {}).get(k) == v for k, v in status.items()):
            return created
        return self.request("PATCH", f"{path}/status", {"status": status},
                            "application/merge-patch+json")

    def ensure_namespace(self, namespace: str) -> None:
        """A real server refuses Pods in a namespace that does not exist; the test server
        has no namespaces (and answers 404 for the path)."""
        if namespace in self._namespaces:
            return
        try:
            self.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        except ApiStatusError as err:
            if err.code not in (404, 405, 409):
                raise
        self._namespaces.add(namespace)

    def create(self, obj: dict, *, exist_ok: bool = False) -> dict | None:
        """Create any object (RBAC, ServiceAccounts, ...) at the path its kind implies."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        namespace = obj.get("metadata", {}).get("namespace")
        if namespace:
            base += f"/namespaces/{namespace}"
        try:
            return self.request("POST", f"{base}/{kind.lower()}s", obj)
        except ApiStatusError as err:
            if exist_ok and err.code == 409:
                return None
            raise

    def delete_pod(self, name: str, namespace: str = "default") -> dict:
        """Delete at once, as the kubelet's final delete does: with the default grace period a
        real server only marks a Pod bound to a node as terminating and waits for its kubelet,
        and the lab has no kubelets."""
        return self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}",
                            {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})

    def patch_node_status(self, name: str, status: dict) -> dict:
        """What a kubelet writes (conditions, addresses): the status subresource."""
        return self.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status},
                            "application/merge-patch+json")

    def set_node_ready(self, name: str, ready: bool) -> dict:
        return self.patch_node_status(name, {"conditions": [{
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady"}]})

    def create_service(self, name: str, namespace: str = "default", *,
                       ingress: Sequence[str] = (), policy: str = "Cluster",
                       external_ips: Sequence[str] = ()) -> dict:
        """A LoadBalancer Service whose controller (MetalLB, say) assigned `ingress`: the
        status is written as a controller writes it, through the status subresource."""
        self.ensure_namespace(namespace)
        spec: dict[str, Any] = {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                                "ports": [{"port": 8080, "protocol": "TCP"}],
                                "selector": {"app": name}}
        if external_ips:
            spec["externalIPs"] = list(external_ips)
        path = f"/api/v1/namespaces/{namespace}/services"
        created = self.request("POST", path, {"apiVersion": "v1", "kind": "Service",
                                              "metadata": {"name": name}, "spec": spec})
        if not ingress:
            return created
        return self.request("PATCH", f"{path}/{name}/status",
                            {"status": {"loadBalancer": {"ingress": [{"ip": ip}
                                                                     for ip in ingress]}}},
                            "application/merge-patch+json")

    def delete_service(self, name: str, namespace: str = "default") -> dict:
        return self.request("DELETE", f"/api/v1/namespaces/{namespace}/services/{name}")

    def put_endpoint_slice(self, name: str, namespace: str, service: str,
                           endpoints: dict[str, bool]) -> dict:
        """Create or replace the EndpointSlice `name` of `service`: node name -> ready (one
        endpoint per node), as the endpointslice controller writes it."""
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        body: dict[str, Any] = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": [f"10.244.{i}.77"], "nodeName": node,
                           "conditions": {"ready": ready}}
                          for i, (node, ready) in enumerate(sorted(endpoints.items()), 1)],
            "ports": [{"port": 8080, "protocol": "TCP"}]}
        try:
            current = self.request("GET", f"{path}/{name}")
        except ApiStatusError as err:
            if err.code != 404:
                raise
            return self.request("POST", path, body)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.request("PUT", f"{path}/{name}", body)

    def admin(self, op: str, body: Any = None) -> Any:
        """POST /_test/<op>: admin("compact"), admin("inject/nodes", obj), admin("hang", {...})."""
        return self.request("POST", f"/_test/{op}", {} if body is None else body)

    def state(self) -> dict:
        return self.request("GET", "/_test/state")


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 - a polling deadline, not an operation timeout
    interval: float = 0.02,
) -> None:
    """Poll until predicate() is true; fail with AssertionError at the deadline.

    Tests wait for *states*, never for fixed delays, so they are as fast as the system allows
    and fail loudly instead of flaking when it is slow.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"condition not met within {timeout} s: {getattr(predicate, '__name__', predicate)}"
            )
        await asyncio.sleep(interval)
