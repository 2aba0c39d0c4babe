"""The `--where` expression language: parser, neptune-query Filter translation (3.x) and NQL (2.x).

Selecting runs with `--where`
-----------------------------

`--where` keeps the runs whose attributes satisfy an expression. It is evaluated by the Neptune
server (3.x through `neptune_query.filters.Filter`, 2.x as NQL), so only matching runs are listed.

Examples::

    params/lr > 0.01 and sys/tags contains "best"
    not exists(params/x)
    sys/name matches "^exp" or (params/batch >= 64 and params/optimizer == "adam")
    sys/creation_time >= 2024-01-31T12:00:00Z and params/debug == false
    `params/odd name (v2)` != 'it''s'

Grammar (keywords are case-insensitive)::

    expr       := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expr ")" | "exists" "(" path ")" | comparison
    comparison := path operator value
    operator   := == (or =) | != | > | >= | < | <= | contains | not contains | matches | not matches
    path       := a bare attribute path such as params/lr or sys/tags (letters, digits, / _ - . : + @ ...)
                  or any text in backquotes: `path with spaces`
    value      := "string" or 'string' (escapes: \\" \\' \\\\ \\n \\t; '' inside '...' is a quote)
                | number (42, -1, 0.5, 1e-3) | true | false
                | date/time in ISO 8601 (2024-01-31, 2024-01-31T12:00:00Z, 2024-01-31T12:00:00+02:00;
                  no time zone means UTC)

Meaning: `contains` tests membership for string sets (`sys/tags`) and substring for strings;
`matches` tests a regular expression on a string attribute (evaluated by the server: keep to
the common regex subset); `exists(path)` is true when the run has the attribute; comparisons of
numbers work on int and float attributes, of dates on datetime attributes (such as
`sys/creation_time`, `sys/modification_time`). The attribute type is taken from the project's
attribute definitions when the exporter knows them, otherwise inferred from the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

from neptune_exporter.errors import InvalidQueryError
from neptune_exporter.model import as_utc

if TYPE_CHECKING:
    from neptune_query.filters import KNOWN_TYPES_LITERAL

Literal = str | int | float | bool | datetime

COMPARISON_OPERATORS = ("==", "!=", ">", ">=", "<", "<=")
TEXT_OPERATORS = ("contains", "not contains", "matches", "not matches")
_REMEDY = (
    "write conditions as `path operator value` joined by and/or/not, e.g. "
    'params/lr > 0.01 and sys/tags contains "best"; quote strings, backquote unusual paths; '
    "see `--where` in the README"
)

# Types of system attributes, so common filters need no type lookup (neptune-query vocabulary).
KNOWN_SYSTEM_TYPES: dict[str, str] = {
    "sys/id": "string",
    "sys/custom_run_id": "string",
    "sys/name": "string",
    "sys/owner": "string",
    "sys/description": "string",
    "sys/family": "string",
    "sys/experiment/name": "string",
    "sys/tags": "string_set",
    "sys/group_tags": "string_set",
    "sys/creation_time": "datetime",
    "sys/modification_time": "datetime",
    "sys/ping_time": "datetime",
    "sys/archived": "bool",
    "sys/trashed": "bool",
    "sys/failed": "bool",
    "sys/experiment/is_head": "bool",
    "sys/forking/depth": "int",
    "sys/forking/parent": "string",
    "sys/forking/step": "float",
    "sys/size": "int",
}

# neptune-query type names → NQL (backend) spelling.
_NQL_TYPE = {
    "float": "float",
    "int": "int",
    "string": "string",
    "bool": "bool",
    "datetime": "datetime",
    "string_set": "stringSet",
    "float_series": "floatSeries",
    "string_series": "stringSeries",
    "histogram_series": "histogramSeries",
    "file": "file",
    "file_series": "fileSeries",
}


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Comparison:
    """`path operator value`."""

    path: str
    operator: str  # one of COMPARISON_OPERATORS or TEXT_OPERATORS
    value: Literal
    position: int = 0


@dataclass(frozen=True)
class Exists:
    """`exists(path)`."""

    path: str
    position: int = 0


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]


Expr = Comparison | Exists | Not | And | Or


# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # "word" | "path" | "string" | "op" | "(" | ")" | "end"
    text: str
    position: int  # 0-based offset in the expression


_OPERATOR_RE = re.compile(r"==|!=|>=|<=|=|>|<")
_WORD_RE = re.compile(r"[^\s()\"'`=<>!]+")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def _fail(text: str, position: int, problem: str) -> InvalidQueryError:
    pointer = f"{text[:position]}⟨here⟩{text[position:]}"
    return InvalidQueryError(f"--where: {problem} at position {position + 1}: {pointer}", _REMEDY)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at `start` (the quote); returns (value, end offset)."""
    quote, chars, i = text[start], [], start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text) or text[i + 1] not in _ESCAPES:
                raise _fail(text, i, "unknown escape in string (use \\\" \\' \\\\ \\n \\t)")
            chars.append(_ESCAPES[text[i + 1]])
            i += 2
        elif char == quote:
            if quote == "'" and text[i + 1 : i + 2] == "'":  # SQL-style doubled quote
                chars.append("'")
                i += 2
                continue
            return "".join(chars), i + 1
        else:
            chars.append(char)
            i += 1
    raise _fail(text, start, "string is not closed")


def _tokenize(text: str) -> list[_Token]:
    tokens, i = [], 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "()":
            tokens.append(_Token(char, char, i))
            i += 1
        elif char in "\"'":
            value, end = _read_quoted(text, i)
            tokens.append(_Token("string", value, i))
            i = end
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _fail(text, i, "backquoted path is not closed")
            tokens.append(_Token("path", text[i + 1 : end], i))
            i = end + 1
        elif match := _OPERATOR_RE.match(text, i):
            operator = "==" if match.group() == "=" else match.group()
            tokens.append(_Token("op", operator, i))
            i = match.end()
        elif match := _WORD_RE.match(text, i):
            tokens.append(_Token("word", match.group(), i))
            i = match.end()
        else:
            raise _fail(text, i, f"unexpected character {char!r}")
    tokens.append(_Token("end", "", len(text)))
    return tokens


# --------------------------------------------------------------------------- parser


_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}([T ][0-9:.]+)?(Z|[+-]\d{2}:?\d{2})?")


def _parse_datetime(word: str) -> datetime | None:
    if not _DATE_RE.fullmatch(word):
        return None
    try:
        value = datetime.fromisoformat(word.replace("Z", "+00:00"))
    except ValueError:
        return None
    return as_utc(value)


def _literal_of_word(word: str) -> Literal | None:
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT_RE.fullmatch(word):
        return int(word)
    if _FLOAT_RE.fullmatch(word):
        return float(word)
    return _parse_datetime(word)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.current
        self.index += 1
        return token

    def is_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "word" and token.text.lower() in words

    def is_keyword_at(self, offset: int, word: str) -> bool:
        token = self.tokens[min(self.index + offset, len(self.tokens) - 1)]
        return token.kind == "word" and token.text.lower() == word

    def expect(self, kind: str, what: str) -> _Token:
        if self.current.kind != kind:
            raise _fail(self.text, self.current.position, f"expected {what}")
        return self.advance()

    def parse(self) -> Expr:
        if self.current.kind == "end":
            raise _fail(self.text, 0, "the expression is empty")
        expr = self.parse_or()
        if self.current.kind != "end":
            raise _fail(self.text, self.current.position, f"unexpected {self.current.text!r} (missing and/or?)")
        return expr

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.is_keyword("or"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_factor()]
        while self.is_keyword("and"):
            self.advance()
            operands.append(self.parse_factor())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_factor(self) -> Expr:
        if self.is_keyword("not"):
            self.advance()
            return Not(self.parse_factor())
        if self.current.kind == "(":
            self.advance()
            expr = self.parse_or()
            self.expect(")", "')' to close the parenthesis")
            return expr
        if self.is_keyword("exists") and self.tokens[self.index + 1].kind == "(":
            start = self.advance().position
            self.advance()
            path = self.parse_path()
            self.expect(")", "')' after the path in exists(...)")
            return Exists(path, start)
        return self.parse_comparison()

    def parse_path(self) -> str:
        token = self.current
        if token.kind == "path" or (token.kind == "word" and token.text.lower() not in ("and", "or", "not")):
            self.advance()
            if not token.text:
                raise _fail(self.text, token.position, "empty attribute path")
            return token.text
        raise _fail(self.text, token.position, "expected an attribute path such as params/lr")

    def parse_operator(self) -> str:
        token = self.current
        if token.kind == "op":
            self.advance()
            return token.text
        for word in ("contains", "matches"):
            if self.is_keyword(word):
                self.advance()
                return word
            if self.is_keyword("not") and self.is_keyword_at(1, word):
                self.advance()
                self.advance()
                return f"not {word}"
        raise _fail(self.text, token.position, "expected an operator (== != > >= < <= contains matches)")

    def parse_value(self, operator: str) -> Literal:
        token = self.current
        if token.kind == "string":
            self.advance()
            return token.text
        if token.kind == "word":
            value = _literal_of_word(token.text)
            if value is not None:
                self.advance()
                return value
            raise _fail(self.text, token.position, f'{token.text!r} is not a value (quote strings: "{token.text}")')
        raise _fail(
            self.text, token.position, f'expected a value (number, "string", true/false or ISO date) after {operator!r}'
        )

    def parse_comparison(self) -> Comparison:
        start = self.current.position
        path = self.parse_path()
        operator = self.parse_operator()
        value_position = self.current.position
        value = self.parse_value(operator)
        _check_operand(self.text, operator, value, value_position)
        return Comparison(path, operator, value, start)


def _check_operand(text: str, operator: str, value: Literal, position: int) -> None:
    if operator in TEXT_OPERATORS and not isinstance(value, str):
        raise _fail(text, position, f"{operator!r} needs a quoted string")
    if operator in (">", ">=", "<", "<=") and isinstance(value, bool):
        raise _fail(text, position, f"{operator!r} cannot compare true/false")
    if operator.endswith("matches") and isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise _fail(text, position, f"invalid regular expression ({exc})") from None


def parse_where(text: str) -> Expr:
    """Parse a `--where` expression; raises InvalidQueryError naming the position and the fix."""
    if text is None or not text.strip():
        raise _fail(text or "", 0, "the expression is empty")
    return _Parser(text).parse()


# --------------------------------------------------------------------------- types


def attribute_type(path: str, operator: str, value: Literal, known: Mapping[str, str] | None) -> str | None:
    """neptune-query type of the attribute a condition reads, or None when it must be looked up."""
    if known and path in known:
        return known[path]
    if path in KNOWN_SYSTEM_TYPES:
        return KNOWN_SYSTEM_TYPES[path]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, str) and operator not in ("contains", "not contains"):
        return "string"
    return None  # numbers (int or float) and `contains` (string or string set)


def _coerce(value: Literal, type_name: str | None) -> Literal:
    """A quoted date compared with a datetime attribute becomes a datetime."""
    if type_name == "datetime" and isinstance(value, str):
        parsed = _parse_datetime(value.strip())
        if parsed is not None:
            return parsed
    return value


def walk(expr: Expr):
    """Every node of the tree, depth first."""
    yield expr
    if isinstance(expr, Not):
        yield from walk(expr.operand)
    elif isinstance(expr, (And, Or)):
        for operand in expr.operands:
            yield from walk(operand)


def paths_of(expr: Expr) -> set[str]:
    """Attribute paths an expression reads (to look their types up)."""
    return {node.path for node in walk(expr) if isinstance(node, (Comparison, Exists))}


# --------------------------------------------------------------------------- neptune-query (3.x)


def to_neptune_query_filter(expr: Expr, attribute_types: Mapping[str, str] | None = None):
    """The expression as a `neptune_query.filters.Filter` (types from `attribute_types`, else inferred)."""
    from neptune_query.filters import Attribute, Filter

    def convert(node: Expr) -> Filter:
        if isinstance(node, Not):
            return ~convert(node.operand)
        if isinstance(node, (And, Or)):
            parts = [convert(operand) for operand in node.operands]
            result = parts[0]
            for part in parts[1:]:
                result = (result & part) if isinstance(node, And) else (result | part)
            return result
        if isinstance(node, Exists):
            type_name = (attribute_types or {}).get(node.path) or KNOWN_SYSTEM_TYPES.get(node.path)
            return Filter.exists(Attribute(node.path, type=_query_type(type_name)))
        type_name = attribute_type(node.path, node.operator, node.value, attribute_types)
        attribute = Attribute(node.path, type=_query_type(type_name))
        return _comparison_filter(Filter, attribute, node.operator, _coerce(node.value, type_name))

    return convert(expr)


def _query_type(type_name: str | None) -> KNOWN_TYPES_LITERAL | None:
    """A type name from the project's attribute definitions (or our inference), as neptune-query spells types."""
    return cast("KNOWN_TYPES_LITERAL | None", type_name)


def _comparison_filter(Filter, attribute, operator: str, value: Literal):
    builders = {
        "==": Filter.eq,
        "!=": Filter.ne,
        ">": Filter.gt,
        ">=": Filter.ge,
        "<": Filter.lt,
        "<=": Filter.le,
        "contains": Filter.contains_all,
        "not contains": Filter.contains_none,
        "matches": Filter.matches,
    }
    if operator == "not matches":
        return ~Filter.matches(attribute, value)
    return builders[operator](attribute, value)


# --------------------------------------------------------------------------- NQL (2.x)


def _nql_value(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        value = as_utc(value)
        return '"' + value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z" + '"'
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _nql_attribute(path: str, type_name: str | None) -> str:
    escaped = path.replace("`", "\\`")
    return f"`{escaped}`:{_NQL_TYPE.get(type_name, type_name)}" if type_name else f"`{escaped}`"


_NQL_OPERATOR = {
    "==": "=",
    "!=": "!=",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "contains": "CONTAINS",
    "not contains": "NOT CONTAINS",
    "matches": "MATCHES",
    "not matches": "NOT MATCHES",
}


def _nql_comparison(node: Comparison, attribute_types: Mapping[str, str] | None) -> str:
    type_name = attribute_type(node.path, node.operator, node.value, attribute_types)
    value = _coerce(node.value, type_name)
    if type_name is not None:
        return f"{_nql_attribute(node.path, type_name)} {_NQL_OPERATOR[node.operator]} {_nql_value(value)}"
    # unknown type: either candidate type may hold (a condition on an attribute of another type is false)
    candidates = ("string_set", "string") if node.operator.endswith("contains") else ("float", "int")
    alternatives = " OR ".join(
        f"({_nql_attribute(node.path, t)} {_NQL_OPERATOR[node.operator]} {_nql_value(value)})" for t in candidates
    )
    return f"({alternatives})"


def to_nql(expr: Expr, attribute_types: Mapping[str, str] | None = None) -> str:
    """The expression as a Neptune 2.x NQL query string (for neptune-client's fetch_runs_table)."""
    if isinstance(expr, Not):
        return f"NOT ({to_nql(expr.operand, attribute_types)})"
    if isinstance(expr, (And, Or)):
        joiner = " AND " if isinstance(expr, And) else " OR "
        return joiner.join(f"({to_nql(operand, attribute_types)})" for operand in expr.operands)
    if isinstance(expr, Exists):
        type_name = (attribute_types or {}).get(expr.path) or KNOWN_SYSTEM_TYPES.get(expr.path)
        return f"{_nql_attribute(expr.path, type_name)} EXISTS"
    return _nql_comparison(expr, attribute_types)
