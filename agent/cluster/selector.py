"""Label selectors matched here, as the API server matches them (k8s.io/apimachinery labels):
`fabric-agent render` reads Nodes from a file and must serve the same ones the daemon's watch
(`kubernetes.node_selector`, applied by the API server) delivers.

Terms, comma-separated, all must hold: `key`, `!key`, `key=value` (or `==`), `key!=value`
(also true when the key is absent), `key in (a,b)`, `key notin (a,b)` (also true when absent).
The syntax was checked by agent.validate.label_selector when the config was loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from agent import validate
from agent.cluster.nodes import str_map, value_at

_TERM = re.compile(
    r"\s*(?:(?P<not>!)?(?P<bare>[^\s=!(),]+)"
    r"|(?P<key>[^\s=!(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s=!(),]*)"
    r"|(?P<skey>[^\s=!(),]+)\s+(?P<sop>in|notin)\s+\((?P<values>[^()]*)\))\s*"
)


def _matches(term: str, labels: Mapping[str, str]) -> bool:
    m = _TERM.fullmatch(term)
    if m is None:  # validate.label_selector refuses these before they get here
        raise ValueError(f"label selector term {term!r} is not valid")
    if m["bare"] is not None:
        return (m["bare"] in labels) != bool(m["not"])
    if m["key"] is not None:
        equal = labels.get(m["key"]) == m["value"]
        return not equal if m["op"] == "!=" else equal and m["key"] in labels
    values = {v.strip() for v in m["values"].split(",")}
    inside = m["skey"] in labels and labels[m["skey"]] in values
    return inside if m["sop"] == "in" else not inside


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy `selector` ("" selects everything)."""
    if not selector.strip():
        return True
    return all(_matches(term, labels) for term in validate.split_selector(selector))


def labels_of(obj: Any) -> dict[str, str]:
    """An object's labels as a plain str map (anything else in there counts as absent)."""
    return str_map(value_at(obj, "metadata", "labels"))


def select(objects: Iterable[Any], selector: str) -> Iterator[Any]:
    """The objects whose labels satisfy `selector`, in order."""
    for obj in objects:
        if selector_matches(selector, labels_of(obj)):
            yield obj
