"""Parser and evaluator of NQL (the run query language both Neptune clients send) plus attribute-name filters.

Grammar:
    query   := [or]
    or      := and ("OR" and)*
    and     := unary ("AND" unary)*
    unary   := "NOT" unary | "(" or ")" | pred
    pred    := attr "EXISTS" | attr op value
    attr    := [agg "("] name [":" type] [")"]       name: `backticked` (\\-escapes) or bare path
    op      := == | = | != | > | >= | < | <= | MATCHES | NOT MATCHES | CONTAINS | NOT CONTAINS
    value   := "double-quoted with \\ escapes" | true | false | number | bare word

Semantics: a predicate on an attribute a run lacks (or whose type differs from the `:type` given) is false, whatever
the operator (`!=` and `NOT MATCHES` too), and NOT of it is true. Source: ../shared/reference/neptune-wire-protocol.md,
"System attributes of 3.x runs": `sys/archived != true` "matches nothing on a server whose runs lack sys/archived";
Neptune's docs say nothing more (see fake_neptune/README.md, "What neptune-query sees").
Values are coerced to the attribute's type; series compare by their last value. CONTAINS is set membership
for string sets and substring search for strings. MATCHES is a regex search.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from neptune_exporter.fake_neptune import store

# type names both clients use on the wire → the fake's own type
WIRE_TYPES: dict[str, str] = {
    "float": store.FLOAT,
    "int": store.INT,
    "integer": store.INT,
    "string": store.STRING,
    "experimentState": store.STRING,
    "bool": store.BOOL,
    "boolean": store.BOOL,
    "datetime": store.DATETIME,
    "stringSet": store.STRING_SET,
    "floatSeries": store.FLOAT_SERIES,
    "stringSeries": store.STRING_SERIES,
    "histogramSeries": store.HISTOGRAM_SERIES,
    "fileRef": store.FILE,
    "file": store.FILE,
    "fileRefSeries": store.FILE_SERIES,
    "imageSeries": store.FILE_SERIES,
    "fileSet": store.FILE_SET,
    **{t: t for t in store.ALL_TYPES},
}
OPERATORS = ("==", "=", "!=", ">", ">=", "<", "<=", "MATCHES", "NOT MATCHES", "CONTAINS", "NOT CONTAINS")
KEYWORDS = {"AND", "OR", "NOT", "EXISTS", "MATCHES", "CONTAINS"}


class NQLError(ValueError):
    """A query that does not parse or cannot be evaluated; names the position."""

    def __init__(self, message: str, query: str, position: int):
        self.position = position
        snippet = query[max(0, position - 20) : position + 20]
        super().__init__(f"invalid query at position {position}: {message} (near {snippet!r})")


# ---------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class AttrRef:
    name: str
    type: str | None  # fake type, None when the query gave none
    aggregation: str | None = None


@dataclass(frozen=True)
class Compare:
    attr: AttrRef
    op: str
    value: str
    position: int


@dataclass(frozen=True)
class Exists:
    attr: AttrRef


@dataclass(frozen=True)
class Not:
    item: Expr


@dataclass(frozen=True)
class BoolOp:
    op: str  # "AND" | "OR"
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Always:
    pass


Expr = Compare | Exists | Not | BoolOp | Always


# ---------------------------------------------------------------------------- tokenizer
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<attr>`(?:[^`\\]|\\.)*`)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|>=|<=|=|>|<)
  | (?P<lp>\() | (?P<rp>\)) | (?P<colon>:)
  | (?P<word>[^\s()`":=!<>]+)
""",
    re.X,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(query: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(query):
        m = _TOKEN.match(query, pos)
        if m is None:
            raise NQLError(f"unexpected character {query[pos]!r}", query, pos)
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup or "", m.group(), pos))
        pos = m.end()
    return tokens


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.S)


# ---------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, query: str):
        self.query, self.tokens, self.i = query, tokenize(query), 0

    def peek(self, k: int = 0) -> Token | None:
        return self.tokens[self.i + k] if self.i + k < len(self.tokens) else None

    def is_word(self, word: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok is not None and tok.kind == "word" and tok.text.upper() == word

    def take(self, expected: str = "a token") -> Token:
        tok = self.peek()
        if tok is None:
            raise NQLError(f"expected {expected}, got end of query", self.query, len(self.query))
        self.i += 1
        return tok

    def fail(self, message: str) -> NQLError:
        tok = self.peek()
        return NQLError(message, self.query, tok.pos if tok else len(self.query))

    def parse(self) -> Expr:
        if not self.tokens:
            return Always()
        expr = self.or_()
        extra = self.peek()
        if extra is not None:
            raise self.fail(f"unexpected {extra.text!r} (missing AND/OR or parenthesis?)")
        return expr

    def or_(self) -> Expr:
        return self._chain("OR", self.and_)

    def and_(self) -> Expr:
        return self._chain("AND", self.unary)

    def _chain(self, word: str, item: Callable[[], Expr]) -> Expr:
        items = [item()]
        while self.is_word(word):
            self.take()
            items.append(item())
        return items[0] if len(items) == 1 else BoolOp(word, tuple(items))

    def unary(self) -> Expr:
        if self.is_word("NOT"):
            self.take()
            return Not(self.unary())
        tok = self.peek()
        if tok is not None and tok.kind == "lp":
            self.take()
            expr = self.or_()
            if (close := self.peek()) is None or close.kind != "rp":
                raise self.fail("expected ')'")
            self.take()
            return expr
        return self.predicate()

    def attr(self) -> AttrRef:
        tok = self.take("an attribute")
        nxt = self.peek()
        if tok.kind == "word" and nxt is not None and nxt.kind == "lp":  # aggregation: last(`x`:floatSeries)
            self.take()
            inner = self.attr()
            if (close := self.peek()) is None or close.kind != "rp":
                raise self.fail("expected ')' after the aggregated attribute")
            self.take()
            return AttrRef(inner.name, inner.type, tok.text.lower())
        if tok.kind == "attr":
            name = _unescape(tok.text)
        elif tok.kind == "word" and tok.text.upper() not in KEYWORDS:
            name = tok.text
        else:
            raise NQLError(f"expected an attribute name, got {tok.text!r}", self.query, tok.pos)
        return AttrRef(name, self._attr_type())

    def _attr_type(self) -> str | None:
        tok = self.peek()
        if tok is None or tok.kind != "colon":
            return None
        self.take()
        type_tok = self.take("an attribute type")
        if type_tok.text not in WIRE_TYPES:
            raise NQLError(f"unknown attribute type {type_tok.text!r}", self.query, type_tok.pos)
        return WIRE_TYPES[type_tok.text]

    def predicate(self) -> Expr:
        attr = self.attr()
        if self.is_word("EXISTS"):
            self.take()
            return Exists(attr)
        op_tok = self.take("an operator")
        op = self._operator(op_tok)
        value_tok = self.take("a value")
        return Compare(attr, op, self._value(value_tok), value_tok.pos)

    def _operator(self, tok: Token) -> str:
        if tok.kind == "op":
            return tok.text
        word = tok.text.upper() if tok.kind == "word" else ""
        if word == "NOT" and (self.is_word("MATCHES") or self.is_word("CONTAINS")):
            return "NOT " + self.take().text.upper()
        if word in ("MATCHES", "CONTAINS"):
            return word
        raise NQLError(
            f"expected an operator ({', '.join(OPERATORS)} or EXISTS), got {tok.text!r}", self.query, tok.pos
        )

    def _value(self, tok: Token) -> str:
        if tok.kind == "str":
            return _unescape(tok.text)
        if tok.kind == "word" and tok.text.upper() not in KEYWORDS:
            return tok.text
        raise NQLError(
            f"expected a value (a double-quoted string, true/false or a number), got {tok.text!r}", self.query, tok.pos
        )


def parse(query: str | None) -> Expr:
    """Parse NQL; raises NQLError naming the position of the problem."""
    return _Parser(query or "").parse()


# ---------------------------------------------------------------------------- evaluation
class AttributeHolder(Protocol):
    """What a query is evaluated on: a run, or a view of it (the 3.x API's RunView)."""

    @property
    def attributes(self) -> Mapping[str, store.Attribute]: ...


def attribute_value(run: AttributeHolder, ref: AttrRef) -> tuple[str, Any] | None:
    """(type, comparable value) of the attribute a reference points at, or None when absent/mistyped."""
    attr = run.attributes.get(ref.name)
    if attr is None or (ref.type is not None and attr.type != ref.type):
        return None
    if attr.type in store.SERIES_TYPES:
        last = attr.series.last() if attr.series is not None else None
        return None if last is None else (attr.type, last[1])
    return attr.type, attr.value


def evaluate(expr: Expr, run: AttributeHolder) -> bool:
    if isinstance(expr, Always):
        return True
    if isinstance(expr, BoolOp):
        results = (evaluate(item, run) for item in expr.items)
        return all(results) if expr.op == "AND" else any(results)
    if isinstance(expr, Not):
        return not evaluate(expr.item, run)
    if isinstance(expr, Exists):
        return expr.attr.name in run.attributes and attribute_value(run, expr.attr) is not None
    found = attribute_value(run, expr.attr)
    return False if found is None else _compare(found[0], found[1], expr)  # missing: false (module docstring)


def _compare(type_: str, actual: Any, cmp: Compare) -> bool:
    op = cmp.op
    if op in ("MATCHES", "NOT MATCHES"):
        hit = _regex(cmp).search(_as_text(actual)) is not None
        return hit if op == "MATCHES" else not hit
    if op in ("CONTAINS", "NOT CONTAINS"):
        hit = cmp.value in actual if isinstance(actual, (set, frozenset, list, str)) else False
        return hit if op == "CONTAINS" else not hit
    if type_ == store.STRING_SET:
        actual, expected = frozenset(actual), frozenset([cmp.value])
    else:
        expected = _coerce(type_, actual, cmp)
    return _order(op, actual, expected)


def _order(op: str, actual: Any, expected: Any) -> bool:
    try:
        if op in ("==", "="):
            return bool(actual == expected)
        if op == "!=":
            return bool(actual != expected)
        return bool(
            {">": actual > expected, ">=": actual >= expected, "<": actual < expected, "<=": actual <= expected}[op]
        )
    except TypeError:
        return False


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(cmp: Compare) -> re.Pattern[str]:
    pattern = _REGEX_CACHE.get(cmp.value)
    if pattern is None:
        try:
            pattern = re.compile(cmp.value)
        except re.error as exc:
            raise NQLError(f"invalid regex {cmp.value!r}: {exc}", cmp.value, cmp.position) from exc
        _REGEX_CACHE[cmp.value] = pattern
    return pattern


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    return str(value)


def _coerce(type_: str, actual: Any, cmp: Compare) -> Any:
    raw = cmp.value
    try:
        if type_ == store.BOOL:
            return _parse_bool(raw)
        if type_ in (store.FLOAT, store.INT, store.FLOAT_SERIES) or isinstance(actual, (int, float)):
            return float(raw)
        if type_ == store.DATETIME:
            return parse_datetime(raw)
    except ValueError as exc:
        raise NQLError(
            f"value {raw!r} does not fit attribute {cmp.attr.name!r} of type {type_}: {exc}", raw, cmp.position
        ) from exc
    return raw


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low not in ("true", "false"):
        raise ValueError("expected true or false")
    return low == "true"


def parse_datetime(raw: str) -> datetime:
    """ISO-8601 (with Z or offset; naive means UTC) or epoch milliseconds."""
    text = raw.strip()
    if re.fullmatch(r"-?\d+", text):
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def matching_runs(runs: Iterable[store.Run], query: str | None) -> list[store.Run]:
    expr = parse(query)
    return [run for run in runs if evaluate(expr, run)]


# ---------------------------------------------------------------------------- attribute-name filters
@dataclass(frozen=True)
class NameFilter:
    """Attribute-definition filters: any alternative of (all must-match, none must-not-match) + types."""

    alternatives: tuple[tuple[tuple[re.Pattern[str], ...], tuple[re.Pattern[str], ...]], ...] = ()
    names: frozenset[str] | None = None
    types: frozenset[str] | None = None  # fake types

    def accepts(self, name: str, type_: str) -> bool:
        if self.names is not None and name not in self.names:
            return False
        if self.types is not None and type_ not in self.types:
            return False
        if not self.alternatives:
            return True
        return any(
            all(p.search(name) for p in must) and not any(p.search(name) for p in must_not)
            for must, must_not in self.alternatives
        )


def name_filter_from_body(body: dict, wire_to_fake: dict[str, str] | None = None) -> NameFilter:
    """NameFilter from a definitions/attributes query body (attributeNameFilter, attributeNamesFilter, types)."""
    mapping = wire_to_fake or WIRE_TYPES
    alternatives = []
    for alt in (body.get("attributeNameFilter") or {}).get("mustMatchAny") or []:
        must = tuple(_compile_name_regex(rx) for rx in alt.get("mustMatchRegexes") or [])
        must_not = tuple(_compile_name_regex(rx) for rx in alt.get("mustNotMatchRegexes") or [])
        alternatives.append((must, must_not))
    names = body.get("attributeNamesFilter")
    type_specs = [f.get("attributeType") for f in body.get("attributeFilter") or [] if f.get("attributeType")]
    unknown = [t for t in type_specs if t not in mapping]
    if unknown:
        raise ValueError(f"unknown attribute type(s) {unknown}; known: {sorted(mapping)}")
    return NameFilter(
        tuple(alternatives),
        frozenset(names) if names is not None else None,
        frozenset(mapping[t] for t in type_specs) if type_specs else None,
    )


def _compile_name_regex(rx: str) -> re.Pattern[str]:
    try:
        return re.compile(rx)
    except re.error as exc:
        raise ValueError(f"invalid attribute-name regex {rx!r}: {exc}") from exc
