"""The informer against the API test server over real HTTP, through lightkube's config loading.

Each test drives the server into a state a real cluster produces only occasionally and a real
kube-apiserver cannot be made to produce on demand (5xx, 429, stalls, dropped or cut watches,
garbage, hostile objects, compaction at a chosen moment) and asserts the informer's store,
resource version and request pattern, polling for states with a deadline instead of sleeping.
Plain Kubernetes semantics (list/watch, bookmarks, 410 after compaction, selectors, token
rotation, RBAC) are tested against the real server: tests/integration/test_kubernetes_api.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.config.kubeconfig import KubeConfig

from agent.informers.informer import Informer
from agent.informers.kubeapi import ApiError, ApiGone, KubeApi, load_kube_config, make_http_client
from lab.kubeapi import KubeApiServer
from lab.kubeapi.client import make_node, make_pod, wait_for

FAST = {"backoff_initial": 0.02, "backoff_max": 0.1}


def write_kubeconfig(path: Path, server: str, token_file: Path | None = None) -> Path:
    user: dict[str, Any] = {"tokenFile": str(token_file)} if token_file else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server}}],
        "users": [{"name": "agent", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "agent"}}],
        "current-context": "lab",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture
async def api(server: KubeApiServer, tmp_path: Path) -> AsyncIterator[KubeApi]:
    config = load_kube_config(str(write_kubeconfig(tmp_path / "kubeconfig", server.url)))
    kube = KubeApi(make_http_client(config, timeout=2.0), watch_read_grace=5.0)
    yield kube
    await kube.aclose()


class Recorder:
    """on_change callback that records the store's keys at each call."""

    def __init__(self) -> None:
        self.calls: list[set[str]] = []
        self.informer: Informer | None = None

    def __call__(self) -> None:
        assert self.informer is not None
        self.calls.append(set(self.informer.store))


@asynccontextmanager
async def running(
    api: KubeApi, path: str = "/api/v1/nodes", **kwargs: Any
) -> AsyncIterator[tuple[Informer, Recorder]]:
    recorder = Recorder()
    options: dict[str, Any] = {**FAST, "rng": random.Random(7), **kwargs}
    informer = Informer(api, path, on_change=recorder, **options)
    recorder.informer = informer
    task = asyncio.create_task(informer.run())
    try:
        yield informer, recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not task.done() or task.cancelled(), "run() must only end by cancellation"


def keys(informer: Informer) -> set[str]:
    return set(informer.store)


async def test_watch_timeout_rewatches_from_rv_without_relisting(
    server: KubeApiServer, api: KubeApi
) -> None:
    async with running(api, watch_timeout=1.0, watch_timeout_jitter=0.0) as (informer, _):
        await wait_for(lambda: informer.synced)
        await wait_for(lambda: server.stats["watch nodes"] >= 2, timeout=4)
        server.create("nodes", make_node("after-rewatch"))
        await wait_for(lambda: "after-rewatch" in informer.store)
        assert server.stats["list nodes"] == 1
        assert informer.connected and informer.last_error is None


async def test_outage_keeps_the_store_then_410_relists_and_drops_deleted(
    server: KubeApiServer, api: KubeApi
) -> None:
    server.create("nodes", make_node("a"))
    server.create("nodes", make_node("b"))
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.connected and keys(informer) == {"a", "b"})
        server.fail_next(10_000, 503)
        server.drop_watches()
        await wait_for(lambda: not informer.connected)
        server.delete("nodes", "b")
        server.create("nodes", make_node("c"))
        server.compact()  # the deletion of b is no longer in any history
        await wait_for(lambda: server.stats["injected-failure"] >= 3)
        assert keys(informer) == {"a", "b"}  # never withdraw because the API is down
        assert "503" in (informer.last_error or "")

        server.fail_next(0)
        await wait_for(lambda: keys(informer) == {"a", "c"})
        assert informer.connected and informer.last_error is None
        assert server.stats["list nodes"] == 2  # exactly one relist, caused by the 410
        assert informer.resource_version == server.resource_version


async def test_5xx_backs_off_and_resumes_without_relist(
    server: KubeApiServer, api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.informers.informer")
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.connected)
        server.fail_next(4, 500)
        server.drop_watches()
        server.create("nodes", make_node("during-outage"))
        await wait_for(lambda: "during-outage" in informer.store)
        assert server.stats["injected-failure"] == 4
        assert server.stats["list nodes"] == 1  # resumed from its rv, events replayed
        assert informer.connected
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.informers.informer"]
    # One line per state change, not one per retry.
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("connected to the API server" in m for m in messages) == 2


async def test_429_retry_after_is_honoured_up_to_backoff_max(
    server: KubeApiServer, api: KubeApi
) -> None:
    loop = asyncio.get_running_loop()
    async with running(api, backoff_initial=0.01, backoff_max=0.5) as (informer, _):
        await wait_for(lambda: informer.connected)
        server.fail_next(1, 429)
        server.drop_watches()
        dropped = loop.time()
        server.create("nodes", make_node("later"))
        await wait_for(lambda: "later" in informer.store)
        # Retry-After is 1 s, capped at backoff_max = 0.5 s; plain backoff would be ~0.01 s.
        assert loop.time() - dropped >= 0.45


async def test_dropped_watch_resumes_without_relist(server: KubeApiServer, api: KubeApi) -> None:
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.connected)
        server.drop_watches()
        server.create("nodes", make_node("while-dropped"))  # replayed from history
        await wait_for(lambda: "while-dropped" in informer.store)
        await wait_for(lambda: server.stats["watch nodes"] == 2)
        assert server.stats["list nodes"] == 1


async def test_hostile_objects_do_not_break_the_informer(
    server: KubeApiServer, api: KubeApi
) -> None:
    server.inject("nodes", make_node("listed\nwith-newline"))
    server.inject("nodes", {"kind": "Node", "spec": {}})  # no metadata at all
    server.inject("nodes", "a bare string")  # not even an object
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.synced)
        assert keys(informer) == {"listed\nwith-newline"}  # the agent validates names later

        server.inject("nodes", make_node("watched\nnewline"))
        server.inject("nodes", {"kind": "Node", "metadata": {"labels": {"a": "b"}}})
        server.inject("nodes", ["not", "an", "object"])
        server.inject("nodes", make_node("sep\u2028\x85name"))
        server.inject("nodes", {"kind": "Node", "metadata": {"name": 42}})
        await wait_for(lambda: "sep\u2028\x85name" in informer.store)
        assert informer.resource_version == server.resource_version

        server.inject_raw("nodes", "{this is not json")
        await wait_for(lambda: server.stats["watch nodes"] == 2)  # restarted from its rv
        server.create("nodes", make_node("normal"))
        await wait_for(lambda: "normal" in informer.store)
        assert keys(informer) == {
            "listed\nwith-newline",
            "watched\nnewline",
            "sep\u2028\x85name",
            "normal",
        }
        assert server.stats["list nodes"] == 1


async def test_unreachable_at_start_then_syncs(server: KubeApiServer, tmp_path: Path) -> None:
    server.set_hanging(True)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    api = KubeApi(make_http_client(load_kube_config(str(kubeconfig)), timeout=0.2))
    try:
        async with running(api) as (informer, recorder):
            await wait_for(lambda: informer.last_error is not None)
            assert not informer.synced and not informer.connected
            assert "Timeout" in (informer.last_error or "")
            assert recorder.calls == []
            server.set_hanging(False)
            server.create("nodes", make_node("n1"))
            await wait_for(lambda: informer.synced and informer.connected)
            assert keys(informer) == {"n1"}
    finally:
        await api.aclose()


async def test_cancel_closes_the_watch_stream(server: KubeApiServer, api: KubeApi) -> None:
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.connected and len(server.store.watchers) == 1)
    await wait_for(lambda: len(server.store.watchers) == 0)


async def test_list_follows_pages_and_falls_back_when_the_token_expires(
    server: KubeApiServer, api: KubeApi
) -> None:
    for name in ("a", "b", "c"):
        server.create("nodes", make_node(name))
    rv, items = await api.list("/api/v1/nodes", limit=2)
    assert (rv, [i["metadata"]["name"] for i in items]) == ("3", ["a", "b", "c"])

    # Compact between the first and second page: the continue token expires.
    client = api._client
    calls: list[str] = []

    async def compact_after_first_page(response: Any) -> None:
        calls.append(str(response.request.url.params.get("continue", "")))
        if len(calls) == 1:
            server.delete("nodes", "c")
            server.compact()

    client.event_hooks = {"request": [], "response": [compact_after_first_page]}
    rv, items = await api.list("/api/v1/nodes", limit=2)
    assert [i["metadata"]["name"] for i in items] == ["a", "b"]
    assert rv == server.resource_version
    assert len(calls) == 3 and calls[0] == "" and calls[1] != "" and calls[2] == ""


async def test_api_errors_are_typed(server: KubeApiServer, api: KubeApi) -> None:
    with pytest.raises(ApiError) as bad:
        await api.list("/api/v1/nodes", label_selector="a in (b")
    assert (bad.value.status, bad.value.reason) == (400, "BadRequest")
    assert not isinstance(bad.value, ApiGone)

    async def first_event(resource_version: str) -> tuple[str, dict]:
        events = api.watch("/api/v1/nodes", resource_version=resource_version, timeout_seconds=5)
        async with aclosing(events):
            async for event in events:
                return event
        raise AssertionError("watch ended without an event")

    server.create("nodes", make_node("n1"))
    server.create("nodes", make_node("n2"))
    server.compact()
    with pytest.raises(ApiGone) as gone:
        await first_event("1")  # HTTP 200, then an ERROR event with code 410
    assert (gone.value.status, gone.value.reason) == (410, "Expired")
    with pytest.raises(ApiGone) as too_large:
        await first_event("999")  # ahead of the server: relist like client-go
    assert (too_large.value.status, too_large.value.reason) == (504, "Timeout")
    assert await first_event("2") == (
        "BOOKMARK",
        {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "2"},
        },
    )


async def test_server_restart_resumes_at_current_rv_and_relists_otherwise(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    kubeconfig = tmp_path / "kubeconfig"
    # No bookmarks: the informer's rv only moves with node events, so it can fall behind.
    first = KubeApiServer(state_file=state, bookmark_interval=3600)
    await first.start()
    port = first.port
    write_kubeconfig(kubeconfig, first.url)
    api = KubeApi(make_http_client(load_kube_config(str(kubeconfig)), timeout=1.0))
    try:
        async with running(api) as (informer, _):
            first.create("nodes", make_node("n1"))
            await wait_for(lambda: "n1" in informer.store)
            await first.stop()
            await wait_for(lambda: not informer.connected)
            assert keys(informer) == {"n1"}

            # Same state, same port, empty history: the informer is at the current rv.
            async with KubeApiServer(port=port, state_file=state, bookmark_interval=3600) as s2:
                await wait_for(lambda: informer.connected and s2.stats["watch nodes"] == 1)
                assert s2.stats["list nodes"] == 0  # resumed, no relist
                s2.create("pods", make_pod("p1"))  # moves the rv past the informer's
                assert informer.resource_version == "1" and s2.resource_version == "2"

            async with KubeApiServer(port=port, state_file=state, bookmark_interval=3600) as s3:
                s3.create("nodes", make_node("n2"))
                # rv 1 < the new process's horizon 2: 410, then a relist finds n2.
                await wait_for(lambda: keys(informer) == {"n1", "n2"})
                assert s3.stats["list nodes"] == 1
    finally:
        await api.aclose()


async def test_kubeconfig_without_user_and_in_cluster_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: KubeApiServer
) -> None:
    # lightkube's client adapter asserts a user; a proxy-style kubeconfig has none.
    config = {
        "clusters": [{"name": "c", "cluster": {"server": server.url}}],
        "contexts": [{"name": "c", "context": {"cluster": "c"}}],
        "current-context": "c",
    }
    path = tmp_path / "no-user"
    path.write_text(yaml.safe_dump(config))
    api = KubeApi(make_http_client(load_kube_config(str(path)), timeout=1.0))
    try:
        server.create("nodes", make_node("n1"))
        assert (await api.list("/api/v1/nodes"))[0] == "1"
    finally:
        await api.aclose()

    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("sa-token")
    (account / "namespace").write_text("kube-system")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    original = KubeConfig.from_service_account.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(
        KubeConfig,
        "from_service_account",
        classmethod(lambda cls: original(cls, service_account=account)),
    )
    in_cluster = load_kube_config(None)
    assert in_cluster.cluster.server == "https://[fd00::1]:443"
    assert in_cluster.user is not None
    # token_file is what makes lightkube re-read a rotated token on 401.
    assert in_cluster.user.token_file == str(account / "token")


async def test_garbage_after_an_open_watch_does_not_reset_the_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake server (on purpose: the API test server cannot be made to answer 200 and then
    send garbage): lists are fine, every watch opens and sends a line that is not JSON. Opening
    must not count as a healthy server: the backoff grows, one warning per outage."""
    from aiohttp import web

    watches = 0

    async def nodes(request: web.Request) -> web.StreamResponse:
        nonlocal watches
        if request.query.get("watch") not in ("1", "true"):
            return web.json_response({"kind": "NodeList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": "7"}, "items": []})
        watches += 1
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"<html>proxy error</html>\n")
        return response

    app = web.Application()
    app.router.add_get("/api/v1/nodes", nodes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = load_kube_config(str(write_kubeconfig(tmp_path / "kubeconfig",
                                                   f"http://127.0.0.1:{port}")))
    kube = KubeApi(make_http_client(config, timeout=2.0), watch_read_grace=5.0)
    caplog.set_level(logging.INFO, logger="agent.informers.informer")
    try:
        async with running(kube, backoff_initial=0.02, backoff_max=0.4) as (informer, _):
            await wait_for(lambda: informer.synced)
            await asyncio.sleep(1.5)
            stopped_at = watches
    finally:
        await kube.aclose()
        await runner.cleanup()
    # Backoff 0.02, 0.04, ... capped at 0.4 s: about 8 watches in 1.5 s. Reset on every open
    # (the bug) it was one every 20-40 ms.
    assert 3 <= stopped_at <= 12, stopped_at
    outages = [r for r in caplog.records if "API server unavailable" in r.getMessage()]
    assert len(outages) == 1


async def test_a_stalled_watch_is_reopened_from_rv_without_relisting(
    server: KubeApiServer, api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    """Case 16: a watch that stays open and sends nothing, not even the bookmarks it asked for
    (half-open TCP, a wedged proxy), was noticed only by the read timeout (up to
    2 x watch_timeout + 30 s) while the status said connected. Here it is re-opened after
    `silence_timeout` from the last rv, and the status shows the silence meanwhile."""
    caplog.set_level(logging.WARNING, logger="agent.informers.informer")
    server.create("nodes", make_node("before"))
    async with running(api, silence_timeout=1.0) as (informer, _):
        await wait_for(lambda: informer.synced and informer.connected)
        await wait_for(lambda: informer.snapshot()["seconds_since_contact"] < 0.5)  # bookmarks
        await wait_for(lambda: len(server.store.watchers) == 1)
        watches = server.stats["watch nodes"]
        assert server.stall_watches() == 1
        # Not fresh while silent: the last contact ages, the open connection notwithstanding.
        await wait_for(lambda: informer.snapshot()["seconds_since_contact"] > 0.7, timeout=3)
        await wait_for(lambda: server.stats["watch nodes"] > watches, timeout=5)
        server.create("nodes", make_node("after-stall"))
        await wait_for(lambda: keys(informer) == {"before", "after-stall"}, timeout=5)
        assert informer.connected and informer.last_error is None
        assert informer.snapshot()["seconds_since_contact"] < 1.0
    assert server.stats["list nodes"] == 1
    assert server.stats["stalled watches"] == 1
    assert any("no event or bookmark for 1 s" in r.getMessage() for r in caplog.records)


async def test_a_watch_event_over_the_size_bound_is_not_decoded(
    server: KubeApiServer, api: KubeApi
) -> None:
    """A 10 MiB watch line (no Node can be that large: etcd stores at most 1.5 MiB) is refused
    before json decoding; the informer relists to get past it and goes on."""
    server.create("nodes", make_node("a"))
    async with running(api) as (informer, _):
        await wait_for(lambda: informer.synced and informer.connected)
        await wait_for(lambda: len(server.store.watchers) == 1)
        big = {"type": "ADDED", "object": {"metadata": {
            "name": "huge", "resourceVersion": "999",
            "annotations": {"x": "y" * (10 * 1024 * 1024)}}}}
        assert server.inject_raw("nodes", json.dumps(big)) == 1
        await wait_for(lambda: server.stats["list nodes"] == 2, timeout=5)
        server.create("nodes", make_node("b"))
        await wait_for(lambda: keys(informer) == {"a", "b"}, timeout=5)
        assert informer.connected
    assert "huge" not in keys(informer)
