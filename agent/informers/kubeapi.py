"""Raw list/watch access to the Kubernetes API on top of lightkube's config loading.

lightkube gives us kubeconfig / service-account parsing, TLS setup and a bearer-token auth
that re-reads a rotated service-account token on 401. We deliberately do not use its typed
models: the agent validates every field it uses itself, and plain dicts keep memory low on a
switch CPU. Everything here returns raw JSON dicts.

Note: lightkube >= 1.0 builds its client on `httpx2` (a fork of httpx with the same API), so
the client and its exceptions come from that module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx2
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.config.models import User
from lightkube.core.exceptions import ConfigError

log = logging.getLogger(__name__)

# A watch line bigger than this is not a Node or Pod we can use: etcd stores objects of at most
# 1.5 MiB (--max-request-bytes), and the API server caps annotations at 256 KiB in all. Such a
# line is refused before it is decoded (decoded, 10 MiB of JSON costs several times that).
MAX_EVENT_BYTES = 4 * 1024 * 1024


class ApiError(Exception):
    """The API answered with an error, or could not be reached (status 0)."""

    def __init__(
        self, status: int, reason: str, message: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class ApiGone(ApiError):
    """The resourceVersion we asked for is no longer (or not yet) served: relist from scratch.

    Raised for 410 Expired (HTTP status or ERROR watch event), and for the 504
    "ResourceVersionTooLarge" answer an apiserver gives when our rv is ahead of it (etcd
    restored from a backup): client-go's reflector relists in both cases.
    """


class MalformedResponse(ApiError):
    """The server sent something that is not the JSON we expect (status 0)."""


class EventTooLarge(MalformedResponse):
    """A watch line over MAX_EVENT_BYTES, not decoded: the caller relists to get past it."""


def load_kube_config(kubeconfig_path: str | None) -> SingleConfig:
    """A kubeconfig file's current context, or the in-cluster service account when None."""
    config = (
        KubeConfig.from_file(kubeconfig_path)
        if kubeconfig_path is not None
        else KubeConfig.from_service_account()
    )
    single = config.get()
    if single is None:
        raise ConfigError("kubeconfig selects no context")
    return single


def make_http_client(config: SingleConfig, timeout: float) -> httpx2.AsyncClient:
    """An async HTTP client with base_url, TLS and auth from the config.

    lightkube's adapter asserts that the context has a user; a kubeconfig for an
    unauthenticated endpoint (a local test server, `kubectl proxy`) has none, so give it an
    empty one, which means "no auth".
    """
    if config.user is None:
        config = config._replace(user=User())
    params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout))
    return client_adapter.AsyncClient(config, params)


def _error_from_status(status_code: int, body: Any, retry_after: float | None = None) -> ApiError:
    """Map an HTTP error answer or an ERROR watch event's Status object to an exception."""
    status = body if isinstance(body, dict) else {}
    code = status.get("code") if isinstance(status.get("code"), int) else status_code
    reason = status.get("reason") if isinstance(status.get("reason"), str) else ""
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    causes = details.get("causes") if isinstance(details.get("causes"), list) else []
    if retry_after is None and isinstance(details.get("retryAfterSeconds"), int):
        retry_after = float(details["retryAfterSeconds"])
    too_large = any(
        isinstance(c, dict) and c.get("reason") == "ResourceVersionTooLarge" for c in causes
    )
    if code == 410 or (code == 504 and too_large):
        return ApiGone(code, reason or "Expired", message, retry_after)
    return ApiError(code, reason or "Unknown", message, retry_after)


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _connection_error(err: Exception) -> ApiError:
    return ApiError(0, type(err).__name__, str(err) or repr(err))


class KubeApi:
    """List and watch collections with raw dicts; errors are ApiError / ApiGone only."""

    def __init__(self, client: httpx2.AsyncClient, *, watch_read_grace: float = 30.0) -> None:
        self._client = client
        # A watch is silent between events; without bookmarks a healthy stream may send
        # nothing until its timeout, so the read timeout must outlast the requested timeout.
        self._watch_read_grace = watch_read_grace

    @classmethod
    def from_kubeconfig(cls, kubeconfig_path: str | None, timeout: float = 10.0) -> KubeApi:
        return cls(make_http_client(load_kube_config(kubeconfig_path), timeout))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get_json(self, path: str, params: dict[str, str]) -> dict:
        try:
            response = await self._client.get(path, params=params)
        except httpx2.TransportError as err:
            raise _connection_error(err) from err
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            raise _error_from_status(response.status_code, body, _retry_after(response))
        if not isinstance(body, dict):
            raise MalformedResponse(0, "MalformedResponse", f"GET {path}: not a JSON object")
        return body

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 500,
    ) -> tuple[str, list[dict]]:
        """All items of a collection (following continue pages) and the list's resourceVersion."""
        try:
            return await self._list_pages(path, label_selector, field_selector, limit)
        except ApiGone:
            if not limit:
                raise
            # A continue token expired between pages (compaction): like client-go's pager,
            # fall back to one unpaginated list instead of failing.
            log.info("list %s: continue token expired, retrying without pagination", path)
            return await self._list_pages(path, label_selector, field_selector, 0)

    async def _list_pages(
        self, path: str, label_selector: str | None, field_selector: str | None, limit: int
    ) -> tuple[str, list[dict]]:
        base: dict[str, str] = {}
        if label_selector:
            base["labelSelector"] = label_selector
        if field_selector:
            base["fieldSelector"] = field_selector
        if limit:
            base["limit"] = str(limit)
        items: list[dict] = []
        token = ""
        while True:
            body = await self._get_json(path, {**base, "continue": token} if token else base)
            metadata = body.get("metadata")
            metadata = metadata if isinstance(metadata, dict) else {}
            page = body.get("items")
            if page is not None and not isinstance(page, list):
                raise MalformedResponse(0, "MalformedResponse", f"GET {path}: items not a list")
            for item in page or ():
                if isinstance(item, dict):
                    items.append(item)
                else:
                    # Cannot be a Node or Pod; skipping it beats failing the whole list.
                    log.warning("list %s: ignoring non-object item %.200r", path, item)
            token = metadata.get("continue") or ""
            if not token or not isinstance(token, str):
                rv = metadata.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise MalformedResponse(
                        0, "MalformedResponse", f"GET {path}: list without resourceVersion"
                    )
                return rv, items

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[tuple[str, dict]]:
        """Yield (type, object) watch events until the server ends the stream.

        BOOKMARK events are yielded too (their object carries only metadata.resourceVersion).
        An ERROR event raises ApiGone (410) or ApiError. `on_open` is called once the server
        has accepted the watch, so callers know they are connected before any event arrives.
        Use it inside `contextlib.aclosing()` so that leaving early closes the HTTP stream.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        timeout = httpx2.Timeout(
            self._client.timeout.connect, read=timeout_seconds + self._watch_read_grace
        )
        try:
            async with self._client.stream("GET", path, params=params, timeout=timeout) as response:
                if response.status_code != 200:
                    body = await response.aread()
                    try:
                        status = json.loads(body)
                    except ValueError:
                        status = None
                    raise _error_from_status(response.status_code, status, _retry_after(response))
                if on_open is not None:
                    on_open()
                async with aclosing(_lines(response)) as lines:
                    async for line in lines:
                        yield _parse_event(line)
        except httpx2.TransportError as err:
            raise _connection_error(err) from err
        except httpx2.StreamError as err:
            raise _connection_error(err) from err


async def _lines(response: httpx2.Response) -> AsyncIterator[bytes]:
    """Split the stream on b"\\n" only.

    httpx's aiter_lines() uses str.splitlines(), which also splits on U+0085, U+2028 and
    other separators that a JSON encoder may leave unescaped inside a string (a hostile
    label value), which would cut one event in two.
    """
    buffer = b""
    async for chunk in response.aiter_bytes():
        *lines, buffer = (buffer + chunk).split(b"\n")
        # Every complete line too, not only the unfinished rest: a 10 MiB line may arrive with
        # its newline in one read.
        for line in lines:
            _check_size(line)
            if line.strip():
                yield line
        _check_size(buffer)
    if buffer.strip():
        yield buffer


def _check_size(line: bytes) -> None:
    if len(line) > MAX_EVENT_BYTES:
        raise EventTooLarge(0, "EventTooLarge",
                            f"watch event over {MAX_EVENT_BYTES} bytes, not decoded")


def _parse_event(line: bytes) -> tuple[str, dict]:
    try:
        event = json.loads(line)
    except ValueError as err:  # includes UnicodeDecodeError
        raise MalformedResponse(0, "MalformedResponse", f"undecodable watch line: {err}") from err
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedResponse(0, "MalformedResponse", "watch line is not an event")
    obj = event.get("object")
    if event["type"] == "ERROR":
        raise _error_from_status(0, obj)
    # A non-object payload is passed on as an empty dict: the caller skips objects without
    # metadata.name anyway, and the event still counts as consumed.
    return event["type"], obj if isinstance(obj, dict) else {}
