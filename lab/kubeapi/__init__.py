"""A Kubernetes API test server modelling real list/watch semantics, plus test helpers.

A FAKE, kept on purpose for what a real kube-apiserver cannot be made to do on demand: answer
5xx or 429 with Retry-After, hang, stall or cut a watch stream, send garbage or a line over the
size bound, or serve objects its own validation would refuse. Kubernetes semantics themselves
are tested against the real server (lab/controlplane.py, tests/integration/). Known
differences from the real one: its bookmarks carry the global resourceVersion (a real watch
cache's carry the last event of that resource); it keeps status on create and accepts it on
the object itself; pod CIDRs stay mutable; deleting a Pod is immediate.

Run it standalone with `python -m lab.kubeapi --help`, or in-process with
`async with KubeApiServer() as server: ...`.
"""

from lab.kubeapi.server import KubeApiServer
from lab.kubeapi.store import ApiStatusError

__all__ = ["ApiStatusError", "KubeApiServer"]
