"""grpcurl (built by lab/k8s/build.sh from the pinned release) against the agent's status
socket: a client that knows the service only through reflection, as an engineer's tools do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lab.controlplane import grpcurl_path


def grpcurl(socket: Path | str, *args: str, data: dict[str, Any] | None = None
            ) -> subprocess.CompletedProcess[str]:
    binary = grpcurl_path()
    if not binary.exists():
        raise AssertionError(f"grpcurl is not built at {binary}: run lab/k8s/build.sh "
                             "(scripts/setup.sh does)")
    argv = [str(binary), "-plaintext", "-max-time", "10"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    # gRPC's own unix:// target: grpcurl 1.9.3's -unix flag dials TCP anyway (seen here).
    return subprocess.run([*argv, f"unix://{socket}", *args], capture_output=True, text=True,
                          timeout=30, check=False)


def grpcurl_json(socket: Path | str, *args: str, data: dict[str, Any] | None = None) -> Any:
    res = grpcurl(socket, *args, data=data)
    assert res.returncode == 0, f"grpcurl {' '.join(args)}: {res.stderr}"
    return json.loads(res.stdout)
