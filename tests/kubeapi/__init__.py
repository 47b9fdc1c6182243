"""A Kubernetes API test server modelling real list/watch semantics, plus test helpers.

Run it standalone with `python -m tests.kubeapi --help`, or in-process with
`async with KubeApiServer() as server: ...`.
"""

from tests.kubeapi.server import KubeApiServer
from tests.kubeapi.store import ApiStatusError

__all__ = ["ApiStatusError", "KubeApiServer"]
