"""The test apiserver must behave like a real one, or the informer tests prove nothing.

These tests talk to it over real HTTP with plain httpx (not the agent's client), so a bug in
the agent's client cannot hide a bug in the server or vice versa.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.kubeapi import ApiStatusError, KubeApiServer
from lab.kubeapi.client import KubeApiClient, make_node, make_pod, wait_for
from lab.kubeapi.selectors import SelectorError, parse_label_selector

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
async def http(server: KubeApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        yield client


class Stream:
    """Reads one watch stream in the background, collecting decoded events."""

    def __init__(self, http: httpx.AsyncClient, path: str, **params: str) -> None:
        self.events: list[dict] = []
        self.status: int | None = None
        self.ended = False
        self.error: Exception | None = None
        self._task = asyncio.create_task(self._run(http, path, {"watch": "1", **params}))

    async def _run(self, http: httpx.AsyncClient, path: str, params: dict[str, str]) -> None:
        try:
            async with http.stream("GET", path, params=params, timeout=10) as response:
                self.status = response.status_code
                # Not aiter_lines(): it also splits on U+2028/U+0085 inside JSON strings.
                buffer = b""
                async for chunk in response.aiter_bytes():
                    *lines, buffer = (buffer + chunk).split(b"\n")
                    self.events.extend(json.loads(line) for line in lines if line)
            self.ended = True
        except httpx.HTTPError as err:
            self.error = err

    @classmethod
    async def open(cls, http: httpx.AsyncClient, path: str, **params: str) -> Stream:
        """Start a watch and wait until the server has answered (the watcher is registered)."""
        stream = cls(http, path, **params)
        await wait_for(lambda: stream.status is not None or stream.error is not None)
        return stream

    def types(self) -> list[str]:
        return [e["type"] for e in self.events if e["type"] != "BOOKMARK"]

    def names(self) -> list[str]:
        return [e["object"]["metadata"]["name"] for e in self.events if e["type"] != "BOOKMARK"]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def rv_of(obj: dict) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def test_one_rv_counter_across_kinds_and_noop_updates(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    node = (await http.post("/api/v1/nodes", json=make_node("n1"))).json()
    pod = (await http.post("/api/v1/namespaces/default/pods", json=make_pod("p1"))).json()
    assert (rv_of(node), rv_of(pod)) == (1, 2)
    assert node["metadata"]["uid"] and node["metadata"]["creationTimestamp"].endswith("Z")

    listed = (await http.get("/api/v1/nodes")).json()
    assert listed["kind"] == "NodeList"
    assert listed["metadata"]["resourceVersion"] == "2"  # the global counter, not the node's
    assert [i["metadata"]["name"] for i in listed["items"]] == ["n1"]
    assert "kind" not in listed["items"][0]  # real list items carry no kind/apiVersion

    merge = {"Content-Type": "application/merge-patch+json"}
    patch = {"metadata": {"labels": {"role": "leaf"}}}
    patched = (await http.patch("/api/v1/nodes/n1", json=patch, headers=merge)).json()
    assert rv_of(patched) == 3
    again = (await http.patch("/api/v1/nodes/n1", json=patch, headers=merge)).json()
    assert rv_of(again) == 3 and server.resource_version == "3"  # identical write: no new rv


async def test_errors_are_status_objects(server: KubeApiServer, http: httpx.AsyncClient) -> None:
    await http.post("/api/v1/nodes", json=make_node("n1"))
    stale = make_node("n1")
    stale["metadata"]["resourceVersion"] = "0"
    cases = [
        (await http.put("/api/v1/nodes/n1", json=stale), 409, "Conflict"),
        (await http.post("/api/v1/nodes", json=make_node("n1")), 409, "AlreadyExists"),
        (await http.post("/api/v1/nodes", json=make_node("Bad_Name")), 422, "Invalid"),
        (await http.post("/api/v1/nodes", json=make_node("a\nb")), 422, "Invalid"),
        (await http.get("/api/v1/nodes/missing"), 404, "NotFound"),
        (await http.get("/api/v1/nodes", params={"labelSelector": "a in (b"}), 400, "BadRequest"),
        (await http.get("/api/v1/pods", params={"fieldSelector": "spec.foo=x"}), 400, "BadRequest"),
        (await http.get("/api/v1/nodes", params={"continue": "garbage"}), 400, "BadRequest"),
        (await http.get("/api/v1/secrets"), 404, "NotFound"),
    ]
    for response, code, reason in cases:
        body = response.json()
        assert (response.status_code, body["kind"], body["code"], body["reason"]) == (
            code,
            "Status",
            code,
            reason,
        ), body
    fresh = server.get("nodes", "n1")
    current = {**fresh, "metadata": {**fresh["metadata"], "labels": {"x": "y"}}}
    assert (await http.put("/api/v1/nodes/n1", json=current)).status_code == 200


async def test_watch_replays_history_then_goes_live(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    start = rv_of(server.create("nodes", make_node("n1")))
    server.create("nodes", make_node("n2"))
    server.patch("nodes", "n1", {"metadata": {"labels": {"role": "leaf"}}})
    server.create("pods", make_pod("p1", node_name="n1"))  # other kind: not in a node watch

    stream = await Stream.open(http, "/api/v1/nodes", resourceVersion=str(start))
    await wait_for(lambda: len(stream.events) == 2)
    assert (stream.types(), stream.names()) == (["ADDED", "MODIFIED"], ["n2", "n1"])
    server.delete("nodes", "n2")
    await wait_for(lambda: len(stream.events) == 3)
    assert stream.events[2]["type"] == "DELETED"
    assert stream.events[2]["object"]["metadata"]["resourceVersion"] == server.resource_version
    await stream.close()


async def test_watch_without_rv_starts_with_synthetic_added(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    server.create("nodes", make_node("b"))
    server.create("nodes", make_node("a"))
    for rv in ("", "0"):
        stream = await Stream.open(http, "/api/v1/nodes", resourceVersion=rv)
        await wait_for(lambda s=stream: len(s.events) == 2)
        assert (stream.types(), stream.names()) == (["ADDED", "ADDED"], ["a", "b"])
        await stream.close()


async def test_compaction_gives_410_on_list_and_error_event_on_watch(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    old = rv_of(server.create("nodes", make_node("n1")))
    server.create("nodes", make_node("n2"))
    server.delete("nodes", "n1")

    # Within the history an exact list is the state at that rv, deleted object included.
    exact = {"resourceVersion": str(old), "resourceVersionMatch": "Exact"}
    at_old = (await http.get("/api/v1/nodes", params=exact)).json()
    assert at_old["metadata"]["resourceVersion"] == str(old)
    assert [i["metadata"]["name"] for i in at_old["items"]] == ["n1"]

    server.compact()
    gone = await http.get("/api/v1/nodes", params=exact)
    assert (gone.status_code, gone.json()["reason"]) == (410, "Expired")

    stream = await Stream.open(http, "/api/v1/nodes", resourceVersion=str(old))
    await wait_for(lambda: stream.ended)
    assert stream.status == 200
    assert len(stream.events) == 1 and stream.events[0]["type"] == "ERROR"
    status = stream.events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {old} (")

    # From the current rv a watch simply resumes.
    current = await Stream.open(http, "/api/v1/nodes", resourceVersion=server.resource_version)
    server.create("nodes", make_node("n3"))
    await wait_for(lambda: current.names() == ["n3"])
    await current.close()


async def test_bounded_history_moves_the_horizon(http: httpx.AsyncClient) -> None:
    async with KubeApiServer(history_size=3) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        for i in range(5):
            srv.create("nodes", make_node(f"n{i}"))
        ok = await Stream.open(c, "/api/v1/nodes", resourceVersion="2")
        await wait_for(lambda: len(ok.events) == 3)
        assert ok.names() == ["n2", "n3", "n4"]
        too_old = await Stream.open(c, "/api/v1/nodes", resourceVersion="1")
        await wait_for(lambda: too_old.ended)
        assert too_old.events[0]["object"]["code"] == 410
        await ok.close()


async def test_pagination_is_a_consistent_snapshot(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    for name in ("a", "b", "c"):
        server.create("nodes", make_node(name))
    first = (await http.get("/api/v1/nodes", params={"limit": "2"})).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 1
    token = first["metadata"]["continue"]

    server.delete("nodes", "c")
    server.create("nodes", make_node("d"))
    second = (await http.get("/api/v1/nodes", params={"limit": "2", "continue": token})).json()
    # Served at the first page's rv: c still there, d not yet.
    assert [i["metadata"]["name"] for i in second["items"]] == ["c"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert "continue" not in second["metadata"]

    server.compact()
    expired = await http.get("/api/v1/nodes", params={"limit": "2", "continue": token})
    assert (expired.status_code, expired.json()["reason"]) == (410, "Expired")


async def test_label_selector_changes_are_added_and_deleted_for_the_watcher(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    server.create("nodes", make_node("n1", labels={"role": "spine"}))
    stream = await Stream.open(http, "/api/v1/nodes", labelSelector="role=leaf")
    server.patch("nodes", "n1", {"metadata": {"labels": {"role": "leaf"}}})
    server.patch("nodes", "n1", {"metadata": {"annotations": {"x": "1"}}})
    server.patch("nodes", "n1", {"metadata": {"labels": {"role": "spine"}}})
    await wait_for(lambda: len(stream.types()) == 3)
    assert stream.types() == ["ADDED", "MODIFIED", "DELETED"]
    deleted = stream.events[-1]["object"]
    # Like the apiserver: the last matching content, stamped with the event's rv.
    assert deleted["metadata"]["labels"]["role"] == "leaf"
    assert deleted["metadata"]["resourceVersion"] == server.resource_version
    await stream.close()


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("role=leaf", {"l1"}),
        ("role==leaf,rack=r1", {"l1"}),
        ("role!=leaf", {"s1", "bare"}),
        ("role in (leaf, spine)", {"l1", "s1"}),
        ("role notin (leaf)", {"s1", "bare"}),
        ("rack", {"l1", "s1"}),
        ("!rack", {"bare"}),
        ("example.com/tier=edge", {"s1"}),
        ("", {"l1", "s1", "bare"}),
    ],
)
async def test_label_selector_grammar(
    server: KubeApiServer, http: httpx.AsyncClient, selector: str, expected: set[str]
) -> None:
    server.create("nodes", make_node("l1", labels={"role": "leaf", "rack": "r1"}))
    server.create(
        "nodes", make_node("s1", labels={"role": "spine", "rack": "r2", "example.com/tier": "edge"})
    )
    server.create("nodes", make_node("bare"))
    listed = (await http.get("/api/v1/nodes", params={"labelSelector": selector})).json()
    assert {i["metadata"]["name"] for i in listed["items"]} == expected


@pytest.mark.parametrize("bad", ["a in (b", "a in ()", "=x", "a=b c", "a/b/c=d", "a>x", "a,,b"])
def test_malformed_label_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


async def test_field_selector_on_pods(server: KubeApiServer, http: httpx.AsyncClient) -> None:
    server.create("pods", make_pod("p1", node_name="leaf1"))
    server.create("pods", make_pod("p2", "kube-system", node_name="leaf2"))
    server.create("pods", make_pod("p3", node_name="leaf1", phase="Pending"))
    stream = await Stream.open(http, "/api/v1/pods", fieldSelector="spec.nodeName=leaf1")
    await wait_for(lambda: len(stream.events) == 2)
    assert stream.names() == ["p1", "p3"]
    server.create("pods", make_pod("p4", "kube-system", node_name="leaf1"))
    server.create("pods", make_pod("p5", node_name="leaf2"))
    await wait_for(lambda: len(stream.events) == 3)
    assert stream.names()[-1] == "p4"

    query = {"fieldSelector": "spec.nodeName=leaf1,status.phase!=Pending"}
    listed = (await http.get("/api/v1/pods", params=query)).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == [
        "p1",
        "p4",
    ]  # etcd key order: namespace, name
    namespaced = (await http.get("/api/v1/namespaces/kube-system/pods")).json()
    assert [i["metadata"]["name"] for i in namespaced["items"]] == ["p2", "p4"]
    await stream.close()
    assert len(stream.events) == 3  # p5 never matched


async def test_bookmarks_and_timeout_end_the_stream_cleanly(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    server.create("nodes", make_node("n1"))
    started = time.monotonic()
    stream = await Stream.open(
        http,
        "/api/v1/nodes",
        resourceVersion=server.resource_version,
        allowWatchBookmarks="true",
        timeoutSeconds="1",
    )
    server.create("pods", make_pod("p1"))  # advances the rv without a node event
    await wait_for(lambda: stream.ended, timeout=3)
    assert stream.error is None
    assert 0.9 < time.monotonic() - started < 2.5
    bookmarks = [e for e in stream.events if e["type"] == "BOOKMARK"]
    assert bookmarks and stream.types() == []
    assert bookmarks[-1]["object"] == {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "2"},
    }
    plain = await Stream.open(http, "/api/v1/nodes", resourceVersion="2", timeoutSeconds="1")
    await wait_for(lambda: plain.ended, timeout=3)
    assert plain.events == []  # no bookmarks unless asked for


async def test_drop_watches_aborts_streams(server: KubeApiServer, http: httpx.AsyncClient) -> None:
    stream = await Stream.open(http, "/api/v1/nodes")
    await wait_for(lambda: len(server.store.watchers) == 1)
    assert server.drop_watches() == 1
    await wait_for(lambda: stream.error is not None)
    assert isinstance(stream.error, httpx.RemoteProtocolError)  # no clean end of stream
    assert not stream.ended


async def test_fail_next_and_hang(server: KubeApiServer, http: httpx.AsyncClient) -> None:
    server.fail_next(2, 503)
    codes = [(await http.get("/api/v1/nodes")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert server.stats["injected-failure"] == 2

    server.set_hanging(True)
    with pytest.raises(httpx.ReadTimeout):
        await http.get("/api/v1/nodes", timeout=0.3)
    admin = await http.get("/_test/state")  # admin endpoints keep answering
    assert admin.status_code == 200
    server.set_hanging(False)
    assert (await http.get("/api/v1/nodes")).status_code == 200


async def test_token_file_is_reread_on_every_request(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    async with KubeApiServer(token_file=token) as srv, httpx.AsyncClient(base_url=srv.url) as c:
        assert (await c.get("/api/v1/nodes")).status_code == 401
        assert (await c.get("/healthz")).status_code == 200
        first = {"Authorization": "Bearer first"}
        assert (await c.get("/api/v1/nodes", headers=first)).status_code == 200
        token.write_text("second")
        assert (await c.get("/api/v1/nodes", headers=first)).status_code == 401
        second = {"Authorization": "Bearer second"}
        assert (await c.get("/api/v1/nodes", headers=second)).status_code == 200


async def test_hostile_injected_objects_are_served(
    server: KubeApiServer, http: httpx.AsyncClient
) -> None:
    stream = await Stream.open(http, "/api/v1/nodes", labelSelector="role=leaf")
    everything = await Stream.open(http, "/api/v1/nodes")
    hostile: list[Any] = [
        make_node("evil\nname"),
        {"kind": "Node", "spec": {}},
        {"kind": "Node", "metadata": {"name": "odd", "labels": ["not", "a", "map"]}},
        ["not", "an", "object"],
        make_node("sep\u2028\x85name"),
    ]
    for obj in hostile:
        response = await http.post("/_test/inject/nodes", json=obj)
        assert response.status_code == 200
    await wait_for(lambda: len(everything.events) == len(hostile))
    assert everything.events[0]["object"]["metadata"]["name"] == "evil\nname"
    assert everything.events[3]["object"] == ["not", "an", "object"]
    listed = await http.get("/api/v1/nodes", params={"labelSelector": "role=leaf"})
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert stream.events == []  # the selector fan-out survived odd labels
    assert server.resource_version == str(len(hostile))
    await stream.close()
    await everything.close()


def _start_cli(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port_file = tmp_path / "port"
    port_file.unlink(missing_ok=True)
    log_file = tmp_path / "server.log"
    command = [sys.executable, "-m", "lab.kubeapi", "--listen", "127.0.0.1:0"]
    with log_file.open("ab") as log:
        # A file, not a pipe: a pipe nobody reads would block a chatty server.
        proc = subprocess.Popen(
            [*command, "--port-file", str(port_file), *extra],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 10
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_cli(proc)
            raise AssertionError(f"server did not start: {log_file.read_text()}")
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def _stop_cli(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def _watch_lines(url: str, params: dict[str, str]) -> list[dict]:
    with httpx.stream("GET", url, params={"watch": "1", **params}, timeout=5) as response:
        return [json.loads(line) for line in response.read().split(b"\n") if line]


def test_cli_restart_keeps_objects_and_rv(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    sock = str(tmp_path / "api.sock")
    proc, port = _start_cli(tmp_path, "--state", str(state), "--unix", sock)
    try:
        with KubeApiClient(f"http://127.0.0.1:{port}") as tcp, KubeApiClient(uds=sock) as unix:
            tcp.create_node(
                "n1", labels={"role": "leaf"}, pod_cidrs=["10.0.1.0/24"], internal_ip="192.0.2.1"
            )
            tcp.create_pod("p1", node_name="n1", pod_ip="10.0.1.5")
            last = tcp.patch_node("n1", {"metadata": {"annotations": {"a": "b"}}})
            assert last["metadata"]["resourceVersion"] == "3"
            assert unix.state()["resourceVersion"] == "3"  # same server over the unix socket
            with pytest.raises(ApiStatusError) as conflict:
                tcp.patch_node("n1", {"metadata": {"resourceVersion": "1"}})
            assert conflict.value.code == 409
    finally:
        assert _stop_cli(proc) == 0
    assert not os.path.exists(sock)  # removed on SIGTERM

    proc, port = _start_cli(tmp_path, "--state", str(state))
    url = f"http://127.0.0.1:{port}"
    try:
        with KubeApiClient(url) as client:
            node = client.get_node("n1")
            assert node["metadata"]["resourceVersion"] == "3"
            assert node["metadata"]["annotations"] == {"a": "b"}
            # The new process has no history: resuming from an older rv is 410 ...
            old = _watch_lines(f"{url}/api/v1/nodes", {"resourceVersion": "1"})
            assert [e["object"]["code"] for e in old] == [410]
            # ... from the current rv it is an ordinary resume.
            resumed = _watch_lines(
                f"{url}/api/v1/nodes", {"resourceVersion": "3", "timeoutSeconds": "1"}
            )
            assert resumed == []
            assert client.create_node("n2")["metadata"]["resourceVersion"] == "4"
    finally:
        assert _stop_cli(proc) == 0
