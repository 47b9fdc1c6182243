"""HTTP layer of the Kubernetes API test server (core/v1 Nodes and Pods).

A fake (see lab/kubeapi/__init__.py): Kubernetes behaviour is tested against a real
kube-apiserver (lab/controlplane.py); this server stays for faults on demand. It speaks the
real REST shapes and list/watch semantics (see store.py); `/_test/...` endpoints let tests
inject failures a real cluster produces only occasionally (compaction, dropped watches,
stalled (half-open) watches, 5xx, hangs, hostile objects).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from lab.kubeapi.selectors import SelectorError, parse_field_selector, parse_label_selector
from lab.kubeapi.store import (
    NODES,
    PODS,
    RESOURCES,
    ApiStatusError,
    ApiStore,
    Resource,
    Watcher,
    WatchItem,
    expired,
    parse_rv,
    resource_for,
    sorted_items,
    status_object,
    too_large,
)

log = logging.getLogger(__name__)

# Real apiservers answer these without authentication (system:public-info-viewer).
_PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_MERGE_TYPES = frozenset({"application/merge-patch+json", "application/strategic-merge-patch+json"})


def dumps(obj: Any) -> bytes:
    # Compact and raw UTF-8 like Go's encoder: clients must split lines on b"\n" only,
    # not on every Unicode line break a hostile label value could contain.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(obj), status=status, content_type="application/json", headers=headers
    )


def status_response(err: ApiStatusError) -> web.Response:
    headers = {}
    retry = (err.details or {}).get("retryAfterSeconds")
    if retry:
        headers["Retry-After"] = str(retry)
    return json_response(err.status(), err.code, headers)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def _encode_continue(rv: int, last: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "start": list(last)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        # Real server: a token it cannot decode is a 400; a decodable but compacted one is 410.
        raise ApiStatusError(400, "BadRequest", f"continue key is not valid: {token!r}") from None


def _namespace_of(obj: dict) -> str:
    metadata = obj.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def _strip_kind(obj: Any) -> Any:
    # Items of a real list carry no kind/apiVersion; consumers must not depend on them.
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    return obj


class KubeApiServer:
    """The test apiserver; usable in-process (`async with KubeApiServer() as srv`) or via CLI."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unix_path: str | os.PathLike[str] | None = None,
        state_file: str | os.PathLike[str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
        bookmark_interval: float = 1.0,
        history_size: int = 1000,
        min_request_timeout: float = 1800.0,
        max_watch_timeout: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_path = str(unix_path) if unix_path is not None else None
        self.token_file = Path(token_file) if token_file is not None else None
        self.bookmark_interval = bookmark_interval
        self.min_request_timeout = min_request_timeout
        self.max_watch_timeout = max_watch_timeout
        self._rng = rng or random.Random()
        self.store = ApiStore(history_size=history_size, state_file=state_file, rng=self._rng)
        # Per-verb request counters ("list nodes", "watch pods", "unauthorized", "injected-failure"
        # ...) so tests can assert e.g. that an informer re-watched without relisting.
        self.stats: Counter[str] = Counter()
        self._fail_count = 0
        self._fail_status = 500
        self._answering = asyncio.Event()
        self._answering.set()
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app)
        # handler_cancellation: a client that goes away cancels its watch handler at once,
        # instead of the handler noticing only at its next write.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0
        )
        await self._runner.setup()
        tcp = web.TCPSite(self._runner, self.host, self.port)
        await tcp.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple):
                self.port = address[1]
                break
        if self.unix_path is not None:
            self._remove_socket()
            await web.UnixSite(self._runner, self.unix_path).start()
        log.info(
            "test apiserver listening on %s%s",
            self.url,
            f" and {self.unix_path}" if self.unix_path else "",
        )

    async def stop(self) -> None:
        self._answering.set()  # release hung requests so they can finish
        self.store.close_watches(abort=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._remove_socket()

    def _remove_socket(self) -> None:
        if self.unix_path is not None:
            Path(self.unix_path).unlink(missing_ok=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- Python API for in-process tests -------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self.store.rv)

    def create(self, kind: str, obj: dict) -> dict:
        """Create like POST; a pod's namespace comes from its metadata (default "default")."""
        return self.store.create(resource_for(kind), _namespace_of(obj), obj)

    def update(self, kind: str, obj: dict) -> dict:
        name = obj.get("metadata", {}).get("name", "")
        return self.store.update(resource_for(kind), _namespace_of(obj), name, obj)

    def patch(self, kind: str, name: str, patch: dict, namespace: str = "default") -> dict:
        return self.store.patch(resource_for(kind), namespace, name, patch)

    def delete(self, kind: str, name: str, namespace: str = "default") -> Any:
        return self.store.delete(resource_for(kind), namespace, name)

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        res = resource_for(kind)
        return self.store.get(res, namespace if res.namespaced else "", name)

    def inject(
        self, kind: str, obj: Any, *, event_type: str | None = None, stamp: bool = True
    ) -> Any:
        return self.store.inject(resource_for(kind), obj, event_type=event_type, stamp=stamp)

    def inject_raw(self, kind: str, line: str | bytes) -> int:
        data = line.encode() if isinstance(line, str) else line
        return self.store.inject_raw(resource_for(kind), data.rstrip(b"\n") + b"\n")

    def compact(self) -> int:
        return self.store.compact()

    def drop_watches(self) -> int:
        """Close every watch stream without a final chunk, as an apiserver restart does."""
        return self.store.close_watches(abort=True)

    def stall_watches(self) -> int:
        """The open watch streams stay open and send nothing more, not even bookmarks (a
        half-open connection); new requests are answered as usual. Returns how many."""
        return self.store.stall_watches()

    def fail_next(self, count: int, status: int = 500) -> None:
        self._fail_count = count
        self._fail_status = status

    def set_hanging(self, hanging: bool) -> None:
        """Stop answering (requests and watch streams stall) until set_hanging(False)."""
        if hanging:
            self._answering.clear()
        else:
            self._answering.set()

    # -- HTTP plumbing -----------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/livez", self._healthz)
        r.add_get("/readyz", self._healthz)
        r.add_get("/version", self._version)
        r.add_get("/api", self._api_versions)
        r.add_get("/apis", self._api_groups)
        r.add_get("/api/v1", self._api_resources)
        for prefix, watch in (("/api/v1", False), ("/api/v1/watch", True)):
            r.add_get(f"{prefix}/nodes", self._collection(NODES, watch))
            r.add_get(f"{prefix}/pods", self._collection(PODS, watch))
            r.add_get(f"{prefix}/namespaces/{{namespace}}/pods", self._collection(PODS, watch))
        r.add_post("/api/v1/nodes", self._create(NODES))
        r.add_post("/api/v1/namespaces/{namespace}/pods", self._create(PODS))
        for res, path in (
            (NODES, "/api/v1/nodes/{name}"),
            (PODS, "/api/v1/namespaces/{namespace}/pods/{name}"),
        ):
            r.add_get(path, self._item(res))
            r.add_put(path, self._item(res))
            r.add_patch(path, self._item(res))
            r.add_delete(path, self._item(res))
            # The status subresource, as kubelets and controllers write status on a real
            # server. This server keeps one object: a write there is a write to the object.
            r.add_put(f"{path}/status", self._item(res))
            r.add_patch(f"{path}/status", self._item(res))
        r.add_get("/_test/state", self._admin_state)
        r.add_post("/_test/{op}", self._admin)
        r.add_post("/_test/{op}/{kind}", self._admin)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_test/"):
            await self._answering.wait()
            if self._fail_count > 0 and request.path not in ("/healthz", "/livez", "/readyz"):
                self._fail_count -= 1
                self.stats["injected-failure"] += 1
                code = self._fail_status
                details = {"retryAfterSeconds": 1} if code in (429, 503) else None
                return status_response(
                    ApiStatusError(
                        code, _REASONS.get(code, "Unknown"), f"injected failure {code}", details
                    )
                )
            if not self._authorized(request):
                self.stats["unauthorized"] += 1
                return json_response(status_object(401, "Unauthorized", "Unauthorized"), 401)
        try:
            return await handler(request)
        except ApiStatusError as err:
            return status_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (
                "the server could not find the requested resource"
                if exc.status == 404
                else exc.reason
            )
            return json_response(
                status_object(exc.status, _REASONS.get(exc.status, "Unknown"), message), exc.status
            )

    def _authorized(self, request: web.Request) -> bool:
        if self.token_file is None or request.path in _PUBLIC_PATHS:
            return True
        # Re-read on every request so tests can rotate the token underneath running clients.
        try:
            token = self.token_file.read_text().strip()
        except OSError:
            return False
        return request.headers.get("Authorization") == f"Bearer {token}"

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as err:
            raise ApiStatusError(400, "BadRequest", f"json parse error: {err}") from None

    # -- discovery ---------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": "v1.30.0-kubeapi-test",
                "platform": "linux/amd64",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return json_response(
            {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        )

    async def _api_groups(self, request: web.Request) -> web.Response:
        return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def _api_resources(self, request: web.Request) -> web.Response:
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        resources = [
            {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": verbs,
                "shortNames": list(res.short_names),
            }
            for res in RESOURCES.values()
        ]
        return json_response(
            {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
        )

    # -- collections: list and watch ---------------------------------------------------

    def _collection(self, res: Resource, force_watch: bool) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            namespace = request.match_info.get("namespace")
            try:
                labels = parse_label_selector(request.query.get("labelSelector"))
                fields = parse_field_selector(
                    request.query.get("fieldSelector"), res.supported_fields
                )
            except SelectorError as err:
                raise ApiStatusError(400, "BadRequest", str(err)) from None
            if force_watch or _flag(request, "watch"):
                self.stats[f"watch {res.plural}"] += 1
                return await self._watch(request, res, namespace, labels, fields)
            self.stats[f"list {res.plural}"] += 1
            return self._list(request, res, namespace, labels, fields)

        return handler

    def _list(
        self, request: web.Request, res: Resource, namespace: str | None, labels: Any, fields: Any
    ) -> web.Response:
        query = request.query
        rv_param = query.get("resourceVersion", "")
        match = query.get("resourceVersionMatch", "")
        token = query.get("continue", "")
        if match and not rv_param:
            raise ApiStatusError(
                400,
                "BadRequest",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )
        if match not in ("", "Exact", "NotOlderThan"):
            raise ApiStatusError(400, "BadRequest", f"unsupported resourceVersionMatch {match!r}")
        at_rv: int | None = None
        start: tuple[str, str] | None = None
        if token:
            at_rv, start = _decode_continue(token)
            if at_rv < self.store.horizon:
                raise expired(
                    "The provided continue parameter is too old to display a consistent "
                    "list result. You can start a new list without the continue parameter."
                )
        elif rv_param not in ("", "0"):
            wanted = parse_rv(rv_param)
            if wanted > self.store.rv:
                raise too_large(wanted, self.store.rv)
            if match == "Exact":
                if wanted < self.store.horizon:
                    raise expired("The resourceVersion for the provided list is too old.")
                at_rv = wanted
            # NotOlderThan (or legacy, no match): the current state is not older; serve it.
        snapshot_rv = at_rv if at_rv is not None else self.store.rv
        items = [
            (key, obj)
            for key, obj in sorted_items(self.store.snapshot(res, at_rv))
            if (namespace is None or key[0] == namespace) and (start is None or key > start)
        ]
        selected = [
            (key, obj) for key, obj in items if self._matches(res, key, obj, labels, fields)
        ]
        limit = self._limit(query.get("limit"))
        metadata: dict[str, Any] = {"resourceVersion": str(snapshot_rv)}
        if limit and len(selected) > limit:
            page = selected[:limit]
            metadata["continue"] = _encode_continue(snapshot_rv, page[-1][0])
            if not labels.requirements and not fields.terms:
                metadata["remainingItemCount"] = len(selected) - limit
            selected = page
        return json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": [_strip_kind(obj) for _, obj in selected],
            }
        )

    @staticmethod
    def _matches(res: Resource, key: tuple[str, str], obj: Any, labels: Any, fields: Any) -> bool:
        return Watcher(res, None, labels, fields).passes(key, obj)

    @staticmethod
    def _limit(value: str | None) -> int:
        if not value:
            return 0
        try:
            return max(0, int(value))
        except ValueError:
            raise ApiStatusError(400, "BadRequest", f"invalid limit {value!r}") from None

    def _watch_timeout(self, request: web.Request) -> float:
        raw = request.query.get("timeoutSeconds")
        try:
            timeout = float(int(raw)) if raw else 0.0
        except ValueError:
            raise ApiStatusError(400, "BadRequest", f"invalid timeoutSeconds {raw!r}") from None
        if timeout <= 0:
            # Like the apiserver's --min-request-timeout: randomised so watches of many
            # clients do not all end at the same moment.
            timeout = self.min_request_timeout * (1 + self._rng.random())
        if self.max_watch_timeout is not None:
            timeout = min(timeout, self.max_watch_timeout)
        return timeout

    async def _watch(
        self, request: web.Request, res: Resource, namespace: str | None, labels: Any, fields: Any
    ) -> web.StreamResponse:
        timeout = self._watch_timeout(request)
        bookmarks = _flag(request, "allowWatchBookmarks")
        watcher = self.store.open_watch(
            res, namespace, labels, fields, request.query.get("resourceVersion")
        )
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        loop = asyncio.get_running_loop()
        try:
            await resp.prepare(request)
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while (now := loop.time()) < deadline:
                if watcher.queue.empty():
                    if bookmarks and now >= next_bookmark:
                        # The queue is empty, so every event up to the current rv has been
                        # written: the current rv is a safe point to resume from.
                        await self._write(resp, self._bookmark(res))
                        next_bookmark = now + self.bookmark_interval
                        continue
                    wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                    try:
                        async with asyncio.timeout(wait):
                            item = await watcher.queue.get()
                    except TimeoutError:
                        continue
                else:
                    item = watcher.queue.get_nowait()
                if item.kind == "stall":
                    self.stats["stalled watches"] += 1
                    await asyncio.Event().wait()  # until the client goes away or we stop
                if item.kind == "close":
                    if item.abort and request.transport is not None:
                        request.transport.abort()
                    break
                await self._write(resp, self._encode(item))
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.close_watch(watcher)
        return resp

    def _bookmark(self, res: Resource) -> bytes:
        obj = {
            "kind": res.kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.store.rv)},
        }
        return dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    @staticmethod
    def _encode(item: WatchItem) -> bytes:
        if item.kind == "raw":
            return item.raw
        return dumps({"type": item.event_type, "object": item.obj}) + b"\n"

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        await self._answering.wait()  # a "hung" server stalls its open streams too
        await resp.write(data)

    # -- single objects ----------------------------------------------------------------

    def _create(self, res: Resource) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.stats[f"create {res.plural}"] += 1
            body = await self._body(request)
            obj = self.store.create(res, request.match_info.get("namespace", ""), body)
            return json_response(obj, 201)

        return handler

    def _item(self, res: Resource) -> Any:
        async def handler(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            namespace = request.match_info.get("namespace", "")
            verb = request.method.lower()
            self.stats[f"{verb} {res.plural}"] += 1
            if verb == "get":
                return json_response(self.store.get(res, namespace, name))
            if verb == "delete":
                options = await self._body(request) if (await request.read()).strip() else {}
                preconditions = options.get("preconditions") if isinstance(options, dict) else None
                return json_response(self.store.delete(res, namespace, name, preconditions))
            body = await self._body(request)
            if verb == "put":
                return json_response(self.store.update(res, namespace, name, body))
            content_type = request.content_type
            if content_type not in _MERGE_TYPES:
                raise ApiStatusError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(sorted(_MERGE_TYPES))}",
                )
            return json_response(self.store.patch(res, namespace, name, body))

        return handler

    # -- admin ---------------------------------------------------------------------------

    async def _admin_state(self, request: web.Request) -> web.Response:
        return json_response({**self.store.dump(), "stats": dict(self.stats)})

    async def _admin(self, request: web.Request) -> web.Response:
        op = request.match_info["op"]
        kind = request.match_info.get("kind")
        raw = await request.read()
        body = json.loads(raw) if raw.strip() else {}
        result: Any
        if op == "compact":
            result = {"horizon": str(self.compact())}
        elif op == "drop-watches":
            result = {"dropped": self.drop_watches()}
        elif op == "stall-watches":
            result = {"stalled": self.stall_watches()}
        elif op == "fail-next":
            self.fail_next(int(body.get("count", 1)), int(body.get("status", 500)))
            result = {"count": self._fail_count, "status": self._fail_status}
        elif op == "hang":
            self.set_hanging(bool(body.get("enabled", True)))
            result = {"hanging": not self._answering.is_set()}
        elif op == "inject" and kind:
            stamp = request.query.get("stamp", "1") not in ("0", "false")
            obj = self.inject(kind, body, event_type=request.query.get("type"), stamp=stamp)
            result = {"resourceVersion": self.resource_version, "object": obj}
        elif op == "inject-raw" and kind:
            result = {"watchers": self.inject_raw(kind, str(body.get("line", "")))}
        else:
            raise ApiStatusError(404, "NotFound", f"unknown test operation {op!r}")
        return json_response(result)
