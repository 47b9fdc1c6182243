"""Label and field selectors with the grammar and errors of the real apiserver.

The agent narrows its watches with selectors, so the test server must filter exactly like
k8s.io/apimachinery/pkg/labels and pkg/fields: a server that ignores selectors would hide
bugs where the agent relies on them (and the DELETED/ADDED transitions they cause).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Label values and the name part of label keys: at most 63 characters, alphanumeric at both
# ends, '-', '_' and '.' inside (apimachinery validation.IsQualifiedName / IsValidLabelValue).
_NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class SelectorError(ValueError):
    """A selector the real server would answer with 400 BadRequest."""


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.match(value) is not None and "\n" not in value


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and _DNS1123_LABEL.match(value) is not None and "\n" not in value


def is_qualified_name(key: str) -> bool:
    """Label/annotation key: optional DNS subdomain prefix, '/', and a 63-char name part."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    # `$` in Python also matches before a trailing newline, hence the explicit check.
    return 0 < len(name) <= 63 and _NAME_PART.match(name) is not None and "\n" not in name


def is_label_value(value: str) -> bool:
    return value == "" or (
        len(value) <= 63 and _NAME_PART.match(value) is not None and "\n" not in value
    )


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # one of: =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            # Like apimachinery: an absent key satisfies != and notin.
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        # gt / lt compare integers; a non-integer label value never matches.
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: object) -> bool:
        # Hostile objects may carry labels that are not a string map; treat them as no labels
        # rather than crashing the watch fan-out for every other client.
        usable = labels if isinstance(labels, dict) else {}
        return all(req.matches(usable) for req in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside the parentheses of an in/notin set."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unexpected ')' in selector {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if depth != 0:
        raise SelectorError(f"unbalanced parentheses in selector {text!r}")
    parts.append("".join(current))
    return parts


_SET_EXPR = re.compile(r"^(?P<key>[^\s!=<>(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_BINARY_EXPR = re.compile(
    r"^(?P<key>[^\s!=<>(),]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s=!<>(),]*)$"
)


def _check_key(key: str) -> str:
    if not is_qualified_name(key):
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not is_label_value(value):
        raise SelectorError(f"invalid label value {value!r}")
    return value


def _parse_requirement(term: str) -> Requirement:
    term = term.strip()
    if not term:
        raise SelectorError("empty requirement in label selector")
    if term.startswith("!"):
        return Requirement(_check_key(term[1:].strip()), "!")
    match = _SET_EXPR.match(term)
    if match:
        values = (
            tuple(v.strip() for v in match["values"].split(",")) if match["values"].strip() else ()
        )
        if not values:
            raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty: {term!r}")
        return Requirement(_check_key(match["key"]), match["op"], tuple(map(_check_value, values)))
    match = _BINARY_EXPR.match(term)
    if match:
        key = _check_key(match["key"])
        op = match["op"]
        value = match["value"]
        if op in (">", "<"):
            try:
                int(value)
            except ValueError:
                raise SelectorError(
                    f"for 'gt', 'lt' operators, the value must be an integer: {term!r}"
                ) from None
            return Requirement(key, "gt" if op == ">" else "lt", (value,))
        return Requirement(key, "=" if op in ("=", "==") else "!=", (_check_value(value),))
    if re.match(r"^[^\s!=<>(),]+$", term):
        return Requirement(_check_key(term), "exists")
    raise SelectorError(f"unable to parse requirement: {term!r}")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a labelSelector query value; raises SelectorError on anything malformed."""
    if text is None or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_requirement(t) for t in _split_top_level(text)))


@dataclass(frozen=True)
class FieldTerm:
    field: str
    negate: bool
    value: str


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all((fields.get(t.field) == t.value) != t.negate for t in self.terms)


def _split_unescaped(text: str, sep: str) -> list[str]:
    """fields.ParseSelector allows '\\,' '\\=' and '\\\\' escapes inside values."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise SelectorError(f"invalid escape sequence at end of {text!r}")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            if char not in "\\,=":
                raise SelectorError(f"invalid escape sequence \\{char} in field selector")
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def parse_field_selector(text: str | None, supported: frozenset[str]) -> FieldSelector:
    """Parse a fieldSelector; fields outside `supported` are a 400 like the real server."""
    if text is None or not text.strip():
        return FieldSelector()
    terms: list[FieldTerm] = []
    for raw in _split_unescaped(text, ","):
        term = raw.strip()
        for op, negated in (("!=", True), ("==", False), ("=", False)):
            idx = _find_unescaped(term, op)
            if idx >= 0:
                field, value = term[:idx].strip(), _unescape(term[idx + len(op) :])
                negate = negated
                break
        else:
            raise SelectorError(f"invalid field selector term {term!r}")
        if field not in supported:
            raise SelectorError(f"field label not supported: {field}")
        terms.append(FieldTerm(field, negate, value))
    return FieldSelector(tuple(terms))


def _find_unescaped(text: str, needle: str) -> int:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(needle, i):
            return i
        i += 1
    return -1
