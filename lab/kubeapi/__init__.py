"""A Kubernetes API test server modelling real list/watch semantics, plus test helpers.

Run it standalone with `python -m lab.kubeapi --help`, or in-process with
`async with KubeApiServer() as server: ...`.
"""

from lab.kubeapi.server import KubeApiServer
from lab.kubeapi.store import ApiStatusError

__all__ = ["ApiStatusError", "KubeApiServer"]
