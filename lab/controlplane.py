"""A real Kubernetes control plane for the tests: etcd and kube-apiserver on 127.0.0.1.

What controller-runtime's envtest does, in Python: the binaries come from lab/k8s/build.sh
(pinned releases, cached under /var/cache/kube-fabric-agent/k8s-<version>/), the serving
certificate is self-signed for 127.0.0.1, authorization is RBAC, ServiceAccount tokens are
signed with our own key (TokenRequest works without a controller-manager), and the tests hold
an admin token (group system:masters) from a token file. Start waits on /readyz with a deadline;
stop is by pid; logs stay in the work directory for post-mortems.

A second kube-apiserver on the same etcd (``replica()``) is what a real HA control plane has:
writes through it reach the agent's server only through etcd.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lab.kubeapi.client import KubeApiClient

REPO = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO / "lab" / "k8s" / "versions.env"
CACHE_ROOT = Path(os.environ.get("KFA_K8S_CACHE", "/var/cache/kube-fabric-agent"))
ADMIN_TOKEN = "kfa-test-admin"  # only ever on 127.0.0.1, for the tests' own writes
START_TIMEOUT = 120.0  # 2 cores, a busy CI machine: kube-apiserver takes 5-30 s to be ready

Spawn = Callable[..., subprocess.Popen]


def pinned_versions() -> dict[str, str]:
    """KEY=value lines of lab/k8s/versions.env."""
    versions: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


def binaries_dir() -> Path:
    return CACHE_ROOT / f"k8s-{pinned_versions()['K8S_VERSION']}"


def grpcurl_path() -> Path:
    return CACHE_ROOT / f"grpcurl-{pinned_versions()['GRPCURL_VERSION']}" / "grpcurl"


def binaries_built() -> bool:
    d = binaries_dir()
    return all(os.access(d / name, os.X_OK) for name in ("kube-apiserver", "etcd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)


def make_pki(folder: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost signed by it, and the
    ServiceAccount signing key. EC P-256: fast to make, accepted by kube-apiserver."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out",
             str(folder / "ca.crt"), "-days", "7", "-subj", "/CN=kfa-test-ca")
    _openssl("req", *ec, "-keyout", str(folder / "serving.key"), "-out",
             str(folder / "serving.csr"), "-subj", "/CN=kube-apiserver")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                    "extendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(folder / "serving.csr"), "-CA", str(folder / "ca.crt"),
             "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "7",
             "-extfile", str(folder / "san.ext"), "-out", str(folder / "serving.crt"))
    # kube-apiserver reads "EC PRIVATE KEY" (not PKCS#8) for signing, the public half to verify.
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(folder / "sa.key"))
    _openssl("ec", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub"))


@dataclass
class Started:
    proc: subprocess.Popen
    port: int
    seconds: float  # from exec to ready
    log: Path


class ControlPlane:
    """etcd + kube-apiserver; use as a context manager. ``spawn`` lets a lab track the
    processes (so its teardown stops them after a crash); plain Popen otherwise."""

    def __init__(self, workdir: Path | None = None, spawn: Spawn | None = None,
                 extra_apiserver_args: Sequence[str] = ()) -> None:
        if not binaries_built():
            raise RuntimeError(f"kube-apiserver and etcd are not built in {binaries_dir()}: "
                               "run lab/k8s/build.sh (scripts/setup.sh does)")
        self.bin = binaries_dir()
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kfa-k8s-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn = spawn or self._popen
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.etcd: Started | None = None
        self.apiserver: Started | None = None
        self._replicas: list[subprocess.Popen] = []
        self.port: int | None = None  # kept across restarts, as a real apiserver's address is
        self._admin: KubeApiClient | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        make_pki(self.workdir)
        (self.workdir / "tokens.csv").write_text(
            f'{ADMIN_TOKEN},kfa-test-admin,kfa-test-admin,"system:masters"\n')
        self.start_etcd()
        self.start_apiserver()
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        for proc in self._replicas:
            _terminate(proc)
        if self.apiserver is not None:
            _terminate(self.apiserver.proc)
        if self.etcd is not None:
            _terminate(self.etcd.proc)

    @staticmethod
    def _popen(node: str | None, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(list(argv), **kw)

    def _run(self, name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            return self._spawn(None, argv, stdout=out, stderr=subprocess.STDOUT), log

    # -- etcd ----------------------------------------------------------------------------------
    @property
    def etcd_url(self) -> str:
        assert self.etcd is not None
        return f"http://127.0.0.1:{self.etcd.port}"

    def start_etcd(self) -> None:
        port, peer = free_port(), free_port()
        t0 = time.monotonic()
        proc, log = self._run("etcd", [
            str(self.bin / "etcd"), "--name", "kfa", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{port}",
            "--advertise-client-urls", f"http://127.0.0.1:{port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"kfa=http://127.0.0.1:{peer}",
            # Test data only: an fsync per write would make the tests wait on the disk.
            "--unsafe-no-fsync", "--log-level", "warn",
        ])
        self.etcd = Started(proc, port, 0.0, log)
        self._wait_ready(proc, log, f"{self.etcd_url}/health", None, "etcd")
        self.etcd.seconds = time.monotonic() - t0

    def etcd_revision(self) -> int:
        body = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        return int(body["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd's history up to now: older resourceVersions are gone (410 on a watch
        or list that needs them once no cache can serve them). Returns the revision."""
        revision = self.etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _etcd_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.etcd_url}{path}", json=body, timeout=10.0)
        response.raise_for_status()
        return response.json()

    # -- kube-apiserver ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def _apiserver_argv(self, port: int) -> list[str]:
        d = self.workdir
        return [
            str(self.bin / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            # The kubernetes Service's endpoint may not be loopback; no pod here needs it.
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
            f"--tls-cert-file={d / 'serving.crt'}", f"--tls-private-key-file={d / 'serving.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--allow-privileged=true",
            # No controller-manager: nothing would create the ServiceAccount tokens it expects.
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={d / 'sa.pub'}",
            f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--cert-dir={d / 'certs'}",
            *self.extra_apiserver_args,
        ]

    def start_apiserver(self) -> None:
        """Start (or restart on its old port) the agent's kube-apiserver."""
        if self.port is None:
            self.port = free_port()
        t0 = time.monotonic()
        proc, log = self._run("kube-apiserver", self._apiserver_argv(self.port))
        self.apiserver = Started(proc, self.port, 0.0, log)
        self._wait_ready(proc, log, f"{self.url}/readyz", ADMIN_TOKEN, "kube-apiserver")
        self.apiserver.seconds = time.monotonic() - t0

    def stop_apiserver(self) -> None:
        assert self.apiserver is not None
        _terminate(self.apiserver.proc)

    @contextlib.contextmanager
    def replica(self) -> Iterator[KubeApiClient]:
        """A second kube-apiserver on the same etcd, for writes the agent's server may not be
        up to stream."""
        port = free_port()
        proc, log = self._run("kube-apiserver-replica", self._apiserver_argv(port))
        self._replicas.append(proc)
        try:
            self._wait_ready(proc, log, f"https://127.0.0.1:{port}/readyz", ADMIN_TOKEN,
                             "the second kube-apiserver")
            with self.client(f"https://127.0.0.1:{port}") as client:
                yield client
        finally:
            _terminate(proc)
            self._replicas.remove(proc)

    def _wait_ready(self, proc: subprocess.Popen, log: Path, url: str, token: str | None,
                    what: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while True:
            if proc.poll() is not None:  # no point waiting for a process that is gone
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{what} exited with {proc.returncode}; log {log}:\n{tail}")
            try:
                r = httpx.get(url, headers=headers, timeout=2.0,
                              verify=ssl.create_default_context(cafile=str(self.ca_file)))
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[-300:]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{what} not ready at {url} within {START_TIMEOUT:.0f} s "
                                     f"(last answer: {last}); log {log}:\n{tail}")
            time.sleep(0.1)

    # -- clients and credentials ---------------------------------------------------------------
    def client(self, url: str | None = None, token: str = ADMIN_TOKEN) -> KubeApiClient:
        return KubeApiClient(url or self.url, token=token, verify=str(self.ca_file))

    @property
    def admin(self) -> KubeApiClient:
        """The tests' own client: an admin (system:masters) over TLS."""
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def apply_file(self, path: Path) -> None:
        """Create every object of a YAML file (idempotent: existing objects are kept)."""
        import yaml

        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                self.admin.create(doc, exist_ok=True)

    def issue_token(self, namespace: str, service_account: str, *, seconds: int = 3600,
                    bound_pod: tuple[str, str] | None = None) -> str:
        """A ServiceAccount token through the TokenRequest API, as the kubelet gets one for a
        pod. Bound to a Pod (name, uid), it stops working once that Pod is deleted."""
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if bound_pod is not None:
            spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": bound_pod[0],
                                      "uid": bound_pod[1]}
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        answer = self.admin.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            body)
        return answer["status"]["token"]

    def kubeconfig(self, server: str, token_file: Path) -> dict[str, Any]:
        """A kubeconfig for a ServiceAccount token kept in a file (re-read on rotation)."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        return {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kfa", "cluster": {"server": server,
                                                      "certificate-authority-data": ca}}],
            "users": [{"name": "agent", "user": {"tokenFile": str(token_file)}}],
            "contexts": [{"name": "kfa", "context": {"cluster": "kfa", "user": "agent"}}],
            "current-context": "kfa",
        }

    # -- what the test summary prints ----------------------------------------------------------
    def summary(self) -> str:
        parts = []
        for what, started in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
            if started is not None and started.proc.poll() is None:
                parts.append(f"{what} ready in {started.seconds:.1f} s, RSS "
                             f"{rss_mib(started.proc.pid):.0f} MiB")
        version = pinned_versions()["K8S_VERSION"]
        return f"real control plane {version}: " + "; ".join(parts)


def _terminate(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
