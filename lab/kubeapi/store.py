"""Object store, resourceVersion counter, event history and watch fan-out of the test server.

This models what etcd plus the apiserver's watch cache do, because the agent's correctness
depends on exactly these semantics:

* one global, monotonically increasing resourceVersion across all kinds (etcd's revision);
* a bounded event history (the watch cache window): a watch may resume from any rv at or after
  the "horizon"; older ones get 410 Expired;
* a list at an exact older rv (or a continue token) is served by rewinding that history, like
  etcd serving an old revision until it is compacted;
* watchers filter with their selectors using the previous *and* the new object, so an object
  that stops matching is delivered as DELETED and one that starts matching as ADDED
  (apiserver cacheWatcher.convertToWatchEvent).

Restarts (`--state FILE`): objects and the rv counter persist, the history does not. A new
process can therefore resume a watch only from exactly the current rv; any older rv gets the
410 ERROR event and the client must relist. That is what a real apiserver does after a
restart: its watch cache starts empty at the current etcd revision (client-go logs "too old
resource version" and relists). An rv ahead of the counter (state restored from an older
backup) gets 504 with cause ResourceVersionTooLarge, which clients also answer by relisting.

Everything here is synchronous: mutations, registration of a watcher and the snapshot of its
initial events happen without an await in between, so no event can fall into a gap.
Stored dicts are never mutated in place (copy on write), which is what lets the history keep
references to previous objects cheaply.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import string
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.kubeapi.selectors import (
    FieldSelector,
    LabelSelector,
    is_dns1123_subdomain,
    is_label_value,
    is_qualified_name,
)

Key = tuple[str, str]  # (namespace or "", name)


def _text_at(obj: object, *path: str) -> str:
    """Field value as the apiserver's field-set code renders it; robust to hostile objects."""
    for part in path:
        if not isinstance(obj, dict):
            return ""
        obj = obj.get(part)
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return obj if isinstance(obj, str) else ""


def _node_fields(obj: object) -> dict[str, str]:
    unschedulable = _text_at(obj, "spec", "unschedulable") or "false"
    return {"metadata.name": _text_at(obj, "metadata", "name"), "spec.unschedulable": unschedulable}


def _pod_fields(obj: object) -> dict[str, str]:
    return {
        "metadata.name": _text_at(obj, "metadata", "name"),
        "metadata.namespace": _text_at(obj, "metadata", "namespace"),
        "spec.nodeName": _text_at(obj, "spec", "nodeName"),
        "spec.restartPolicy": _text_at(obj, "spec", "restartPolicy"),
        "spec.schedulerName": _text_at(obj, "spec", "schedulerName"),
        "spec.serviceAccountName": _text_at(obj, "spec", "serviceAccountName"),
        "spec.hostNetwork": _text_at(obj, "spec", "hostNetwork") or "false",
        "status.phase": _text_at(obj, "status", "phase"),
        "status.podIP": _text_at(obj, "status", "podIP"),
        "status.nominatedNodeName": _text_at(obj, "status", "nominatedNodeName"),
    }


@dataclass(frozen=True)
class Resource:
    plural: str
    kind: str
    namespaced: bool
    fields: Callable[[object], dict[str, str]]
    short_names: tuple[str, ...] = ()

    @property
    def supported_fields(self) -> frozenset[str]:
        return frozenset(self.fields({}))


NODES = Resource("nodes", "Node", namespaced=False, fields=_node_fields, short_names=("no",))
PODS = Resource("pods", "Pod", namespaced=True, fields=_pod_fields, short_names=("po",))
RESOURCES: dict[str, Resource] = {r.plural: r for r in (NODES, PODS)}


def resource_for(name: str) -> Resource:
    """Accept 'nodes', 'node' or 'Node' so tests can name kinds naturally."""
    lowered = name.lower()
    for res in RESOURCES.values():
        if lowered in (res.plural, res.kind.lower()):
            return res
    raise ApiStatusError(
        404, "NotFound", f"the server could not find the requested resource ({name})"
    )


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        status["details"] = details
    return status


class ApiStatusError(Exception):
    """An error the apiserver answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        return status_object(self.code, self.reason, self.message, self.details)


def expired(message: str) -> ApiStatusError:
    return ApiStatusError(410, "Expired", message)


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    resource: Resource
    key: Key
    obj: Any  # new state; for DELETED the last state stamped with the deletion rv
    prev: Any  # state before the event, None for ADDED


@dataclass
class WatchItem:
    """What a watch stream handler writes next."""

    kind: str  # "event" | "raw" | "close" | "stall"
    event_type: str = ""
    obj: Any = None
    raw: bytes = b""
    abort: bool = False


def with_rv(obj: Any, rv: int) -> Any:
    """Copy of obj whose metadata.resourceVersion is rv (objects without metadata unchanged)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return obj
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


@dataclass(eq=False)
class Watcher:
    resource: Resource
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[WatchItem] = field(default_factory=asyncio.Queue)

    def passes(self, key: Key, obj: Any) -> bool:
        if self.namespace is not None and key[0] != self.namespace:
            return False
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        return self.labels.matches(labels) and self.fields.matches(self.resource.fields(obj))

    def offer(self, event: Event) -> None:
        if event.resource is not self.resource:
            return
        cur = event.type != "DELETED" and self.passes(event.key, event.obj)
        old = event.prev is not None and self.passes(event.key, event.prev)
        if cur:
            self.send("ADDED" if not old else "MODIFIED", event.obj)
        elif old:
            # Like the apiserver: the previous content, stamped with the event's rv.
            self.send("DELETED", with_rv(event.prev, event.rv))

    def send(self, event_type: str, obj: Any) -> None:
        self.queue.put_nowait(WatchItem("event", event_type=event_type, obj=obj))

    def close(self, *, abort: bool) -> None:
        self.queue.put_nowait(WatchItem("close", abort=abort))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _metadata(obj: Any) -> dict:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta if isinstance(meta, dict) else {}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are treated the same here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _invalid(res: Resource, name: str, field_path: str, value: str, detail: str) -> ApiStatusError:
    message = f'{res.kind} "{name}" is invalid: {field_path}: Invalid value: "{value}": {detail}'
    cause = {"reason": "FieldValueInvalid", "message": message, "field": field_path}
    return ApiStatusError(
        422, "Invalid", message, {"name": name, "kind": res.kind, "causes": [cause]}
    )


def _not_found(res: Resource, name: str) -> ApiStatusError:
    return ApiStatusError(
        404, "NotFound", f'{res.plural} "{name}" not found', {"name": name, "kind": res.plural}
    )


def _conflict(res: Resource, name: str) -> ApiStatusError:
    message = (
        f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    return ApiStatusError(409, "Conflict", message, {"name": name, "kind": res.plural})


class ApiStore:
    """All objects of all kinds plus the shared rv counter; see the module docstring."""

    def __init__(
        self,
        *,
        history_size: int = 1000,
        state_file: str | os.PathLike[str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.rv = 0
        self.objects: dict[str, dict[Key, Any]] = {plural: {} for plural in RESOURCES}
        self.history: deque[Event] = deque()
        self.history_size = history_size
        self.watchers: set[Watcher] = set()
        self.state_file = Path(state_file) if state_file is not None else None
        self._rng = rng or random.Random()
        if self.state_file is not None and self.state_file.exists():
            self._load()
        # A fresh process has no history (an empty watch cache): resuming is possible only
        # from the current rv, exactly like an apiserver whose watch cache was just rebuilt.
        self.horizon = self.rv

    # -- persistence -------------------------------------------------------------------

    def _load(self) -> None:
        assert self.state_file is not None
        data = json.loads(self.state_file.read_text())
        self.rv = int(data["resourceVersion"])
        for plural, entries in data["objects"].items():
            for namespace, name, obj in entries:
                self.objects[plural][(namespace, name)] = obj

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {
            "resourceVersion": self.rv,
            "objects": {
                p: [[k[0], k[1], o] for k, o in objs.items()] for p, objs in self.objects.items()
            },
        }
        tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
        tmp.write_text(json.dumps(data))
        # Atomic replace: a server killed mid-write must not leave a truncated state behind.
        os.replace(tmp, self.state_file)

    # -- core --------------------------------------------------------------------------

    def _commit(self, event_type: str, res: Resource, key: Key, obj: Any, prev: Any) -> Event:
        event = Event(self.rv, event_type, res, key, obj, prev)
        if event_type == "DELETED":
            self.objects[res.plural].pop(key, None)
        else:
            self.objects[res.plural][key] = obj
        self.history.append(event)
        while len(self.history) > self.history_size:
            self.horizon = self.history.popleft().rv
        for watcher in self.watchers:
            watcher.offer(event)
        self._save()
        return event

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def get(self, res: Resource, namespace: str, name: str) -> Any:
        try:
            return self.objects[res.plural][(namespace, name)]
        except KeyError:
            raise _not_found(res, name) from None

    def snapshot(self, res: Resource, at_rv: int | None = None) -> dict[Key, Any]:
        """Objects of one kind as of at_rv (default: now), rewinding the event history."""
        objects = dict(self.objects[res.plural])
        if at_rv is None or at_rv >= self.rv:
            return objects
        if at_rv < self.horizon:
            raise expired(f"too old resource version: {at_rv} ({self.horizon})")
        for event in reversed(self.history):
            if event.rv <= at_rv:
                break
            if event.resource is not res:
                continue
            if event.prev is None:
                objects.pop(event.key, None)
            else:
                objects[event.key] = event.prev
        return objects

    def _validate(self, res: Resource, name: str, obj: dict) -> None:
        if not is_dns1123_subdomain(name):
            raise _invalid(
                res,
                name,
                "metadata.name",
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        labels = _metadata(obj).get("labels") or {}
        if not isinstance(labels, dict):
            raise ApiStatusError(400, "BadRequest", "metadata.labels must be a map of strings")
        for key, value in labels.items():
            if not is_qualified_name(key):
                raise _invalid(res, name, "metadata.labels", key, "invalid label key")
            if not isinstance(value, str) or not is_label_value(value):
                raise _invalid(res, name, "metadata.labels", str(value), "invalid label value")

    def _prepare(self, res: Resource, namespace: str, body: Any) -> tuple[str, dict]:
        if not isinstance(body, dict):
            raise ApiStatusError(400, "BadRequest", "the body of the request must be a JSON object")
        kind = body.get("kind")
        if kind not in (None, res.kind):
            raise ApiStatusError(400, "BadRequest", f"expected kind {res.kind}, got {kind!r}")
        meta = dict(_metadata(body))
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiStatusError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace
        name = meta.get("name")
        if not name and meta.get("generateName"):
            suffix = "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=5))
            name = meta["name"] = f"{meta['generateName']}{suffix}"
        if not isinstance(name, str) or not name:
            raise ApiStatusError(
                422,
                "Invalid",
                f'{res.kind} "" is invalid: metadata.name: Required value: '
                "name or generateName is required",
            )
        obj = {**copy.deepcopy(body), "kind": res.kind, "apiVersion": "v1", "metadata": meta}
        self._validate(res, name, obj)
        return name, obj

    def create(self, res: Resource, namespace: str, body: Any) -> dict:
        namespace = namespace if res.namespaced else ""
        name, obj = self._prepare(res, namespace, body)
        if (namespace, name) in self.objects[res.plural]:
            raise ApiStatusError(
                409,
                "AlreadyExists",
                f'{res.plural} "{name}" already exists',
                {"name": name, "kind": res.plural},
            )
        rv = self._next_rv()
        obj["metadata"].update(
            uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=str(rv)
        )
        self._commit("ADDED", res, (namespace, name), obj, None)
        return obj

    def update(self, res: Resource, namespace: str, name: str, body: Any) -> dict:
        namespace = namespace if res.namespaced else ""
        current = self.get(res, namespace, name)
        new_name, obj = self._prepare(res, namespace, body)
        if new_name != name:
            raise ApiStatusError(
                400,
                "BadRequest",
                f"the name of the object ({new_name}) does not match the name on the URL ({name})",
            )
        meta = obj["metadata"]
        cur_meta = _metadata(current)
        # An update naming a resourceVersion is a compare-and-swap (optimistic concurrency);
        # without one it is unconditional, as nodes and pods allow.
        if meta.get("resourceVersion") and meta["resourceVersion"] != cur_meta.get(
            "resourceVersion"
        ):
            raise _conflict(res, name)
        for immutable in ("uid", "creationTimestamp"):
            if immutable in cur_meta:
                meta[immutable] = cur_meta[immutable]
        meta["resourceVersion"] = cur_meta.get("resourceVersion")
        if obj == current:
            # etcd's GuaranteedUpdate skips identical writes: no new rv, no watch event.
            return current
        obj = with_rv(obj, self._next_rv())
        self._commit("MODIFIED", res, (namespace, name), obj, current)
        return obj

    def patch(self, res: Resource, namespace: str, name: str, patch: Any) -> dict:
        current = self.get(res, namespace if res.namespaced else "", name)
        if not isinstance(patch, dict):
            raise ApiStatusError(400, "BadRequest", "a merge patch must be a JSON object")
        return self.update(res, namespace, name, merge_patch(current, patch))

    def delete(self, res: Resource, namespace: str, name: str, preconditions: Any = None) -> Any:
        namespace = namespace if res.namespaced else ""
        current = self.get(res, namespace, name)
        if isinstance(preconditions, dict):
            meta = _metadata(current)
            for field_name in ("resourceVersion", "uid"):
                wanted = preconditions.get(field_name)
                if wanted is not None and wanted != meta.get(field_name):
                    raise _conflict(res, name)
        obj = with_rv(current, self._next_rv())
        self._commit("DELETED", res, (namespace, name), obj, current)
        return obj

    def inject(
        self, res: Resource, obj: Any, *, event_type: str | None = None, stamp: bool = True
    ) -> Any:
        """Store anything verbatim (hostile objects a real server would reject)."""
        rv = self._next_rv()
        meta = _metadata(obj)
        name = meta.get("name")
        namespace = meta.get("namespace") if res.namespaced else ""
        key: Key = (
            namespace if isinstance(namespace, str) else "",
            name if isinstance(name, str) else f"<injected-{rv}>",
        )
        if stamp:
            obj = with_rv(obj, rv)
        prev = self.objects[res.plural].get(key)
        if event_type is None:
            event_type = "MODIFIED" if prev is not None else "ADDED"
        if event_type == "DELETED" and prev is None:
            prev = obj
        self._commit(event_type, res, key, obj, prev if event_type != "ADDED" else None)
        return obj

    # -- watch -------------------------------------------------------------------------

    def open_watch(
        self,
        res: Resource,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str | None,
    ) -> Watcher:
        watcher = Watcher(res, namespace, labels, fields)
        if resource_version in (None, "", "0"):
            # "Most recent" and "any": synthetic ADDED for every current object, then live.
            for key in sorted(self.objects[res.plural]):
                obj = self.objects[res.plural][key]
                if watcher.passes(key, obj):
                    watcher.send("ADDED", obj)
        else:
            start = parse_rv(resource_version)
            if start > self.rv:
                raise too_large(start, self.rv)
            if start < self.horizon:
                # A real apiserver answers HTTP 200 and then a single ERROR event.
                message = f"too old resource version: {start} ({self.horizon})"
                watcher.send("ERROR", expired(message).status())
                watcher.close(abort=False)
                return watcher
            for event in self.history:
                if event.rv > start:
                    watcher.offer(event)
        self.watchers.add(watcher)
        return watcher

    def close_watch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def close_watches(self, *, abort: bool) -> int:
        watchers = list(self.watchers)
        for watcher in watchers:
            watcher.close(abort=abort)
        self.watchers.clear()
        return len(watchers)

    def stall_watches(self) -> int:
        """The open watches go silent for good (no event, no bookmark, connection kept open), as
        behind a half-open TCP connection or a wedged proxy; watches opened later are fine."""
        watchers = list(self.watchers)
        for watcher in watchers:
            watcher.queue.put_nowait(WatchItem("stall"))
        self.watchers.clear()  # they get no further events
        return len(watchers)

    def inject_raw(self, res: Resource, data: bytes) -> int:
        count = 0
        for watcher in self.watchers:
            if watcher.resource is res:
                watcher.queue.put_nowait(WatchItem("raw", raw=data))
                count += 1
        return count

    def compact(self) -> int:
        """Drop the whole history, like an etcd compaction plus a watch cache reset."""
        self.history.clear()
        self.horizon = self.rv
        return self.horizon

    def dump(self) -> dict:
        return {
            "resourceVersion": str(self.rv),
            "horizon": str(self.horizon),
            "history": len(self.history),
            "watchers": len(self.watchers),
            "objects": {p: list(objs.values()) for p, objs in self.objects.items()},
        }


def parse_rv(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ApiStatusError(400, "BadRequest", f"invalid resource version: {value!r}") from None
    if number < 0:
        raise ApiStatusError(400, "BadRequest", f"invalid resource version: {value!r}")
    return number


def too_large(wanted: int, current: int) -> ApiStatusError:
    # The apiserver waits ~3 s for its cache to catch up, then answers 504 with this cause;
    # clients (client-go's reflector) treat it like 410 and relist.
    message = f"Too large resource version: {wanted}, current: {current}"
    details = {
        "causes": [{"reason": "ResourceVersionTooLarge", "message": message}],
        "retryAfterSeconds": 1,
    }
    return ApiStatusError(504, "Timeout", message, details)


def sorted_items(objects: dict[Key, Any]) -> Iterable[tuple[Key, Any]]:
    return sorted(objects.items(), key=lambda item: item[0])
