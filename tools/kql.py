"""Runs the workbook's and the alerts' KQL over rows in memory: a small, strict evaluator.

tests/test_monitoring.py proves every query *parses* and names real columns (Microsoft's Kusto
language service); nothing there *runs* a query. This module does, so a test can say "this
failure's log line makes this alert fire" or "this workbook tile counts it once".

It implements the subset of KQL our queries use (see `evaluate`) and refuses everything else:
an unknown operator, function or token raises `UnsupportedKql` with the offending text, because
a query the evaluator half-understood would make a test pass for the wrong reason. A query that
is KQL but wrong for the tables (an unknown column, a type mismatch) raises `KqlError`.

Semantics follow Kusto's documentation where it speaks:
- `summarize` without `by` over no rows yields one row (count() = 0, sum() = 0, make_set() = [],
  every other aggregate null); with `by`, no rows. The "nothing happened" alerts rely on it.
- Null: `==` of null and a value is false, of two nulls null; `!=` the reverse; `<`, `>` and
  arithmetic with null are null; `and`/`or` are three-valued; `where` keeps a row only when its
  predicate is true. Strings are never null: `tostring(null)` is "".
- Columns of a table that a row leaves out take the type's empty value ("" for a string, null
  for the others); the types come from the column tables vendored in tests/contracts/monitor.
- `has` matches whole terms (runs of letters and digits); `has`, `contains`, `startswith`,
  `endswith`, `=~` and `in~` ignore case, their `_cs` forms and `==`, `in` do not.
- `order by`/`sort by` default to descending, nulls last (ascending: nulls first).
- `bin()` of a datetime counts whole bins from datetime(0001-01-01), Kusto's tick origin.
- `datetime_diff(period, a, b)` counts the period boundaries between b and a, as Kusto does.
Where it doesn't, a choice is made and said: joins match no null key; the unmatched side of an
outer join is null; string operators over a null operand are null (so `where` drops the row);
`take` keeps the first rows; the order of rows out of `summarize` and `distinct` is first seen.

Type checking of expressions (a string column used as dynamic, a string compared with a number)
is left to the language service: here `Message.kind` is simply null. Names are checked: every
column an operator reads must exist at that point of the pipeline, even over an empty table.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

# The column tables of Microsoft's Azure Monitor Logs reference, vendored with the tests.
CONTRACTS = Path(__file__).resolve().parent.parent / "tests" / "contracts" / "monitor"
TICKS_ORIGIN = datetime(1, 1, 1, tzinfo=UTC)


class KqlError(Exception):
    """KQL this evaluator understands, but wrong here: an unknown column or name, a type mismatch."""


class UnsupportedKql(KqlError):
    """Syntax outside the implemented subset (or not KQL at all). Raised, never skipped."""


def evaluate(
    query: str,
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
    *,
    schemas: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """The rows `query` returns over `tables` (table name -> rows, each a column -> value dict), with
    `now()` and `ago()` read from `now` (an aware datetime).

    A table's columns and their Kusto types come from `schemas`, else from its column table in
    tests/contracts/monitor, else from the rows themselves. A row with a column the table doesn't
    have, or a value of the wrong type, raises `KqlError`: a misspelt test row must not pass quietly.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    parsed = _Parser(query).query()
    scope = _Scope(now.astimezone(UTC), tables, {**_contract_schemas(), **(schemas or {})}, {}, {})
    for name, bound in parsed.lets:
        scope.bind(name, bound)
    return _run(parsed.body, scope).rows


PARAMETER = re.compile(r"\{(\w+(?::\w+)?)\}")


def parameters(query: str) -> list[str]:
    """The workbook parameters (`{Name}`, `{Name:part}`) a query mentions, in order, each once."""
    return list(dict.fromkeys(PARAMETER.findall(query)))


def substitute(query: str, values: Mapping[str, str]) -> str:
    """The query with each workbook parameter replaced by its value, as the portal does before it
    runs a workbook query (text for text, even inside string literals). A parameter without a
    value raises KeyError: a tile that runs with a stray `{Name}` is not the tile we deploy."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"no value for the workbook parameter {{{name}}}")
        return values[name]

    return PARAMETER.sub(value, query)


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class Token:
    """kind: "name" (identifiers and keywords, `!in`, `in~`, `project-away`), "op", "string",
    "number", "literal" (timespans, `datetime(...)`, `dynamic(...)`) or "end". `text` is exactly the
    source text, so error messages can quote it."""

    kind: str
    text: str
    value: Any
    at: int


_SPACE = re.compile(r"(?:\s+|//[^\n]*)+")
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_LETTERS = re.compile(r"[A-Za-z]+")
_HYPHEN_PART = re.compile(r"-([A-Za-z_][A-Za-z0-9_]*)")
_OPS = ("==", "!=", "=~", "!~", "<=", ">=", *"<>=+-*/%()[],;|.")  # the two-character ones first
# Operator names with a hyphen: lexed as one name so an unsupported one is reported whole.
_HYPHENATED = frozenset(
    {"project-away", "project-rename", "project-keep", "project-reorder", "mv-expand", "mv-apply", "make-series"}
    | {"parse-where", "parse-kv", "top-nested", "top-hitters"}
)
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_DAY, _HOUR, _MINUTE, _SECOND = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
_MILLISECOND, _MICROSECOND = timedelta(milliseconds=1), timedelta(microseconds=1)
_TIMESPAN_UNITS = {
    **dict.fromkeys(("d", "day", "days"), _DAY),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), _HOUR),
    **dict.fromkeys(("m", "min", "minute", "minutes"), _MINUTE),
    **dict.fromkeys(("s", "sec", "second", "seconds"), _SECOND),
    **dict.fromkeys(("ms", "milli", "millis", "millisecond", "milliseconds"), _MILLISECOND),
    **dict.fromkeys(("microsecond", "microseconds"), _MICROSECOND),
}


def tokenize(query: str) -> list[Token]:
    """The query's tokens, ending with an "end" token. Comments (`//`) and white space go."""
    tokens: list[Token] = []
    at = 0
    while True:
        space = _SPACE.match(query, at)
        if space:
            at = space.end()
        if at >= len(query):
            tokens.append(Token("end", "", None, at))
            return tokens
        token = _token(query, at)
        tokens.append(token)
        at += len(token.text)


def _token(query: str, at: int) -> Token:
    char = query[at]
    if char in "'\"" or (char == "@" and query[at + 1 : at + 2] in ("'", '"')):
        return _string(query, at)
    if char.isdigit():
        return _number(query, at)
    if char == "!" and query[at + 1 : at + 2].isalpha():
        word = _NAME.match(query, at + 1)
        if word is None:  # isalpha() above: a name starts here
            raise UnsupportedKql(f"expected a name after '!' at {at}")
        return _name(query, at, word.end())
    if word := _NAME.match(query, at):
        return _name(query, at, word.end())
    for op in _OPS:
        if query.startswith(op, at):
            return Token("op", op, op, at)
    raise UnsupportedKql(f"unexpected character {char!r} at offset {at}: {query[at : at + 40]!r}")


def _name(query: str, at: int, end: int) -> Token:
    """A name; `in~`/`!in~` and the hyphenated operator names are one token; `datetime(...)` and
    `dynamic(...)` are literals, not calls (their contents aren't KQL expressions)."""
    while (part := _HYPHEN_PART.match(query, end)) and f"{query[at:end]}-{part.group(1)}" in _HYPHENATED:
        end = part.end()
    if query[at:end] in ("in", "!in") and query[end : end + 1] == "~":
        end += 1
    text = query[at:end]
    opening = _SPACE.match(query, end)
    paren = opening.end() if opening else end
    if text in ("datetime", "dynamic") and query[paren : paren + 1] == "(":
        return _typed_literal(query, at, text, paren)
    return Token("name", text, text, at)


def _string(query: str, at: int) -> Token:
    verbatim = query[at] == "@"
    quote_at = at + 1 if verbatim else at
    quote = query[quote_at]
    characters: list[str] = []
    index = quote_at + 1
    while index < len(query):
        char = query[index]
        if char == quote:
            return Token("string", query[at : index + 1], "".join(characters), at)
        if char == "\n":
            break
        if char == "\\" and not verbatim:
            escape = query[index + 1 : index + 2]
            if escape not in _ESCAPES:
                raise UnsupportedKql(f"string escape \\{escape} at offset {index}: {query[at : index + 2]!r}")
            characters.append(_ESCAPES[escape])
            index += 2
            continue
        characters.append(char)
        index += 1
    raise UnsupportedKql(f"string not closed on its line at offset {at}: {query[at : at + 40]!r}")


def _number(query: str, at: int) -> Token:
    """An int, a real, or a timespan (`15m`, `1.5h`, `26h`, `1d`): a number with a unit glued on."""
    number = _NUMBER.match(query, at)
    if number is None:
        raise UnsupportedKql(f"expected a number at {at}: {query[at : at + 20]!r}")
    digits = number.group()
    unit = _LETTERS.match(query, number.end())
    if unit is None:
        value: int | float = float(digits) if any(c in digits for c in ".eE") else int(digits)
        return Token("number", digits, value, at)
    if unit.group() not in _TIMESPAN_UNITS:
        raise UnsupportedKql(f"number with unit {unit.group()!r} at offset {at}: {query[at : unit.end()]!r}")
    return Token("literal", query[at : unit.end()], float(digits) * _TIMESPAN_UNITS[unit.group()], at)


def _typed_literal(query: str, at: int, kind: str, paren: int) -> Token:
    close = _closing_paren(query, paren)
    inside = query[paren + 1 : close].strip()
    text = query[at : close + 1]
    if inside == "null":
        return Token("literal", text, None, at)
    if kind == "datetime":
        value = _parse_datetime(inside)
        if value is None:
            raise UnsupportedKql(f"datetime literal at offset {at}: {text!r}")
        return Token("literal", text, value, at)
    try:
        return Token("literal", text, json.loads(inside), at)
    except ValueError:
        raise UnsupportedKql(f"dynamic literal that isn't JSON at offset {at}: {text!r}") from None


def _closing_paren(query: str, paren: int) -> int:
    depth, index, quote = 0, paren, ""
    while index < len(query):
        char = query[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise UnsupportedKql(f"unclosed parenthesis at offset {paren}: {query[paren : paren + 40]!r}")


_ISO_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_datetime(text: str) -> datetime | None:
    """ISO 8601 (`2026-11-21`, `2026-11-21 10:00`, `2026-11-21T10:00:00.1234567Z`), as UTC."""
    cleaned = _ISO_FRACTION.sub(r"\1", text.strip())
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Scalar expressions: each node knows its value in a row and the names it reads.


@dataclass(frozen=True)
class Literal:
    value: Any

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        return self.value

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True)
class Name:
    name: str
    at: int

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        if self.name in row:
            return row[self.name]
        if self.name in scope.lets:
            return scope.lets[self.name]
        raise KqlError(f"unknown column or name {self.name!r} (columns: {sorted(row)})")

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True)
class Member:
    """`line.field`, `line["field"]`, `items[0]`: a member of a dynamic value; missing is null."""

    base: Expr
    key: Expr

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        base, key = self.base.value_in(row, scope), self.key.value_in(row, scope)
        if isinstance(base, dict) and isinstance(key, str):
            return base.get(key)
        if isinstance(base, list) and _is_number(key) and int(key) == key and -len(base) <= key < len(base):
            return base[int(key)]
        return None

    def children(self) -> tuple[Expr, ...]:
        return (self.base, self.key)


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        return _FUNCTIONS[self.function].apply([arg.value_in(row, scope) for arg in self.args], scope)

    def children(self) -> tuple[Expr, ...]:
        return self.args


@dataclass(frozen=True)
class Negate:
    operand: Expr

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        value = self.operand.value_in(row, scope)
        if value is None:
            return None
        if _is_number(value) or isinstance(value, timedelta):
            return -value
        raise KqlError(f"cannot negate {_type_name(value)}")

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        return _BINARY[self.op](self.left.value_in(row, scope), self.right.value_in(row, scope))

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)


@dataclass(frozen=True)
class InList:
    """`x in ("a", "b")`, `!in`, `in~`, `!in~`. A dynamic array among the items counts as its elements."""

    op: str
    left: Expr
    items: tuple[Expr, ...]

    def value_in(self, row: Mapping[str, Any], scope: _Scope) -> Any:
        value = self.left.value_in(row, scope)
        candidates: list[Any] = []
        for item in self.items:
            found = item.value_in(row, scope)
            candidates.extend(found if isinstance(found, list) else [found])
        if self.op.endswith("~"):
            text = None if value is None else _tostring(value).lower()
            found_it = text is not None and any(c is not None and _tostring(c).lower() == text for c in candidates)
        else:
            found_it = any(_equal(value, candidate) is True for candidate in candidates)
        return not found_it if self.op.startswith("!") else found_it

    def children(self) -> tuple[Expr, ...]:
        return (self.left, *self.items)


type Expr = Literal | Name | Member | Call | Negate | Binary | InList


def _names_read(expr: Expr) -> Iterator[Name]:
    if isinstance(expr, Name):
        yield expr
    for child in expr.children():
        yield from _names_read(child)


def _derived_name(expr: Expr) -> str | None:
    """Kusto's name for an unnamed column: `x` for x, `line_kind` for `tostring(line.kind)`, `T`
    for `bin(T, 1h)`; None when it would invent one (`Column1`)."""
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Member) and isinstance(expr.key, Literal) and isinstance(expr.key.value, str):
        base = _derived_name(expr.base)
        return f"{base}_{expr.key.value}" if base else None
    if isinstance(expr, Call) and expr.function in _NAME_KEEPING and expr.args:
        return _derived_name(expr.args[0])
    return None


# ---------------------------------------------------------------------------------------------
# Values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    names = {bool: "bool", int: "long", float: "real", str: "string", datetime: "datetime", timedelta: "timespan"}
    return "null" if value is None else names.get(type(value), "dynamic")


def _tostring(value: Any) -> str:
    """Kusto's text of a value: "" for null, `true`, ISO datetimes with a Z, `1.02:03:04` timespans,
    compact JSON for dynamic objects and arrays."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        whole = value.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{whole}.{value.microsecond:06d}0Z" if value.microsecond else f"{whole}Z"
    if isinstance(value, timedelta):
        return _timespan_text(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _timespan_text(value: timedelta) -> str:
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.days:
        text = f"{value.days}.{text}"
    if value.microseconds:
        text += f".{value.microseconds:06d}0"
    return sign + text


def _hashable(value: Any) -> Any:
    """A grouping key for a value: dynamic objects and arrays by their JSON; types kept apart (true isn't 1)."""
    if isinstance(value, (dict, list)):
        return ("dynamic", json.dumps(value, sort_keys=True))
    return (_type_name(value) if not _is_number(value) else "number", value)


def _equal(left: Any, right: Any) -> bool | None:
    """`==`: two nulls compare null, a null and a value false; numbers compare as numbers; values
    of different types are not equal."""
    if left is None and right is None:
        return None
    if left is None or right is None:
        return False
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    return bool(left == right)


def _not_equal(left: Any, right: Any) -> bool | None:
    equal = _equal(left, right)
    return None if equal is None else not equal


def _ordered(op: str) -> Callable[[Any, Any], bool | None]:
    def compare(left: Any, right: Any) -> bool | None:
        if left is None or right is None:
            return None
        _require_comparable(left, right)
        match op:
            case "<":
                return bool(left < right)
            case "<=":
                return bool(left <= right)
            case ">":
                return bool(left > right)
            case _:
                return bool(left >= right)

    return compare


def _require_comparable(left: Any, right: Any) -> None:
    if _is_number(left) and _is_number(right):
        return
    if type(left) is type(right) and isinstance(left, (str, datetime, timedelta, bool)):
        return
    raise KqlError(f"cannot compare {_type_name(left)} with {_type_name(right)}")


def _logic(op: str) -> Callable[[Any, Any], bool | None]:
    """Three-valued `and`/`or`: false and null is false, true or null is true, else null wins."""

    def combine(left: Any, right: Any) -> bool | None:
        for value in (left, right):
            if value is not None and not isinstance(value, bool):
                raise KqlError(f"{op} needs bools, got {_type_name(value)}")
        decisive = op == "or"
        if decisive in (left, right):
            return decisive
        if left is None or right is None:
            return None
        return not decisive

    return combine


def _text_operator(test: Callable[[str, str], bool], negated: bool) -> Callable[[Any, Any], bool | None]:
    def compare(left: Any, right: Any) -> bool | None:
        if left is None or right is None:
            return None
        result = test(_tostring(left), _tostring(right))
        return not result if negated else result

    return compare


def _has(text: str, term: str) -> bool:
    """`has`: the term occurs bounded by non-alphanumerics (or the ends), as an indexed term would."""
    if not term:
        return True
    start = 0
    while (found := text.find(term, start)) >= 0:
        end = found + len(term)
        before = found == 0 or not text[found - 1].isalnum() or not term[0].isalnum()
        after = end == len(text) or not text[end].isalnum() or not term[-1].isalnum()
        if before and after:
            return True
        start = found + 1
    return False


_TEXT_TESTS: dict[str, Callable[[str, str], bool]] = {
    "=~": lambda a, b: a.lower() == b.lower(),
    "has": lambda a, b: _has(a.lower(), b.lower()),
    "has_cs": _has,
    "contains": lambda a, b: b.lower() in a.lower(),
    "contains_cs": lambda a, b: b in a,
    "startswith": lambda a, b: a.lower().startswith(b.lower()),
    "startswith_cs": str.startswith,
    "endswith": lambda a, b: a.lower().endswith(b.lower()),
    "endswith_cs": str.endswith,
}


def _arithmetic(op: str) -> Callable[[Any, Any], Any]:
    operations = {"+": _add, "-": _subtract, "*": _multiply, "/": _divide, "%": _modulo}

    def compute(left: Any, right: Any) -> Any:
        if left is None or right is None:
            return None
        result = operations[op](left, right)
        if result is NotImplemented:
            raise KqlError(f"cannot compute {_type_name(left)} {op} {_type_name(right)}")
        return result

    return compute


def _add(left: Any, right: Any) -> Any:
    if _is_number(left) and _is_number(right):
        return left + right
    if isinstance(left, (datetime, timedelta)) and isinstance(right, timedelta):
        return left + right
    if isinstance(left, timedelta) and isinstance(right, datetime):
        return right + left
    return NotImplemented


def _subtract(left: Any, right: Any) -> Any:
    """Numbers; datetime - timespan (a datetime); datetime - datetime and timespan - timespan (a timespan)."""
    if _is_number(left) and _is_number(right):
        return left - right
    if isinstance(left, datetime) and isinstance(right, (datetime, timedelta)):
        return left - right
    if isinstance(left, timedelta) and isinstance(right, timedelta):
        return left - right
    return NotImplemented


def _multiply(left: Any, right: Any) -> Any:
    if _is_number(left) and _is_number(right):
        return left * right
    if isinstance(left, timedelta) and _is_number(right):
        return left * right
    if _is_number(left) and isinstance(right, timedelta):
        return right * left
    return NotImplemented


def _divide(left: Any, right: Any) -> Any:
    """Integer division truncates toward zero, as Kusto's long division; by zero is null."""
    if (_is_number(left) or isinstance(left, timedelta)) and _is_number(right) and right == 0:
        return None
    if isinstance(left, int) and isinstance(right, int) and _is_number(left) and _is_number(right):
        quotient = abs(left) // abs(right)
        return quotient if (left >= 0) == (right > 0) else -quotient
    if (_is_number(left) or isinstance(left, timedelta)) and _is_number(right):
        return left / right
    if isinstance(left, timedelta) and isinstance(right, timedelta):
        return None if not right else left / right
    return NotImplemented


def _modulo(left: Any, right: Any) -> Any:
    if _is_number(left) and _is_number(right):
        if right == 0:
            return None
        remainder = math.fmod(left, right)
        return int(remainder) if isinstance(left, int) and isinstance(right, int) else remainder
    return NotImplemented


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": _equal,
    "!=": _not_equal,
    **{op: _ordered(op) for op in ("<", "<=", ">", ">=")},
    "and": _logic("and"),
    "or": _logic("or"),
    **{op: _arithmetic(op) for op in ("+", "-", "*", "/", "%")},
    **{name: _text_operator(test, negated=False) for name, test in _TEXT_TESTS.items()},
    **{f"!{name}": _text_operator(test, negated=True) for name, test in _TEXT_TESTS.items() if name != "=~"},
    "!~": _text_operator(_TEXT_TESTS["=~"], negated=True),
}
_IN = ("in", "!in", "in~", "!in~")
# Binding powers, loosest first: or, and, comparisons (and the string and `in` operators), + -, * / %.
_BINDING = {**dict.fromkeys((*_BINARY, *_IN), 3), "or": 1, "and": 2, "+": 4, "-": 4, "*": 5, "/": 5, "%": 5}


# ---------------------------------------------------------------------------------------------
# Scalar functions


@dataclass(frozen=True)
class _Function:
    least: int
    most: int
    body: Callable[[list[Any], _Scope], Any]

    def apply(self, args: list[Any], scope: _Scope) -> Any:
        return self.body(args, scope)


def _parse_json(value: Any) -> Any:
    """Parsed JSON; a string that isn't JSON stays that string (Kusto's rule); other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_REAL = re.compile(r"\s*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def _toint(value: Any) -> int | None:
    """An integer: numbers truncate, integer text parses, anything else (null, "abc", "1.5") is null."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def _todouble(value: Any) -> float | None:
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, str) and _REAL.fullmatch(value):
        return float(value)
    return None


def _tobool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if _is_number(value):
        return bool(value != 0)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _todatetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return _parse_datetime(value) if isinstance(value, str) else None


def _ago(args: list[Any], scope: _Scope) -> datetime | None:
    (span,) = args
    if span is None:
        return None
    if not isinstance(span, timedelta):
        raise KqlError(f"ago() needs a timespan, got {_type_name(span)}")
    return scope.now - span


def _now(args: list[Any], scope: _Scope) -> datetime | None:
    if not args:
        return scope.now
    if args[0] is None:
        return None
    if not isinstance(args[0], timedelta):
        raise KqlError(f"now() takes a timespan offset, got {_type_name(args[0])}")
    return scope.now + args[0]


def _bin(value: Any, size: Any) -> Any:
    """Rounds down to a multiple of size: datetimes by a timespan (counted from Kusto's tick origin),
    timespans by a timespan, numbers by a number. A size of zero or less is null."""
    if value is None or size is None:
        return None
    if isinstance(value, (datetime, timedelta)) and isinstance(size, timedelta):
        if size <= timedelta(0):
            return None
        if isinstance(value, datetime):
            return TICKS_ORIGIN + ((value - TICKS_ORIGIN) // size) * size
        return (value // size) * size
    if _is_number(value) and _is_number(size):
        if size <= 0:
            return None
        floored = math.floor(value / size) * size
        return int(floored) if isinstance(value, int) and isinstance(size, int) else float(floored)
    raise KqlError(f"bin() of {_type_name(value)} by {_type_name(size)}")


_DIFF_UNITS = {
    "day": _DAY,
    "hour": _HOUR,
    "minute": _MINUTE,
    "second": _SECOND,
    "millisecond": _MILLISECOND,
    "microsecond": _MICROSECOND,
}


def _datetime_diff(period: Any, left: Any, right: Any) -> int | None:
    """How many period boundaries lie between right and left (left later: positive), as Kusto counts:
    `datetime_diff('minute', 23:05:01, 23:00:59)` is 5."""
    if left is None or right is None:
        return None
    if not isinstance(left, datetime) or not isinstance(right, datetime):
        raise KqlError("datetime_diff() compares two datetimes")
    unit = _tostring(period).lower()
    if unit in _DIFF_UNITS:
        return (left - TICKS_ORIGIN) // _DIFF_UNITS[unit] - (right - TICKS_ORIGIN) // _DIFF_UNITS[unit]
    months = (left.year * 12 + left.month) - (right.year * 12 + right.month)
    if unit == "month":
        return months
    if unit == "quarter":
        return (left.year * 4 + (left.month - 1) // 3) - (right.year * 4 + (right.month - 1) // 3)
    if unit == "year":
        return left.year - right.year
    if unit == "week":
        return (_week_start(left) - _week_start(right)) // 7
    raise UnsupportedKql(f"datetime_diff period {period!r}")


def _week_start(moment: datetime) -> int:
    """The day number of the Sunday that starts the moment's week (Kusto's weeks start on Sunday)."""
    return moment.date().toordinal() - (moment.weekday() + 1) % 7


def _iff(condition: Any, then: Any, otherwise: Any) -> Any:
    if condition is not None and not isinstance(condition, bool):
        raise KqlError(f"iff() needs a bool condition, got {_type_name(condition)}")
    return then if condition is True else otherwise


def _case(args: list[Any]) -> Any:
    if len(args) % 2 == 0:
        raise KqlError("case() takes predicate/value pairs and a final else value")
    for index in range(0, len(args) - 1, 2):
        if args[index] is True:
            return args[index + 1]
    return args[-1]


def _coalesce(args: list[Any]) -> Any:
    """The first value that isn't null (nor, for strings, empty)."""
    return next((value for value in args if value is not None and value != ""), args[-1])


def _not(value: Any) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise KqlError(f"not() needs a bool, got {_type_name(value)}")
    return not value


def _unary(body: Callable[[Any], Any]) -> _Function:
    return _Function(1, 1, lambda args, _scope: body(args[0]))


_FUNCTIONS: dict[str, _Function] = {
    **dict.fromkeys(("parse_json", "todynamic"), _unary(_parse_json)),
    "tostring": _unary(_tostring),
    **dict.fromkeys(("toint", "tolong"), _unary(_toint)),
    **dict.fromkeys(("todouble", "toreal"), _unary(_todouble)),
    **dict.fromkeys(("tobool", "toboolean"), _unary(_tobool)),
    "todatetime": _unary(_todatetime),
    "tolower": _unary(lambda value: _tostring(value).lower()),
    "toupper": _unary(lambda value: _tostring(value).upper()),
    "strlen": _unary(lambda value: len(_tostring(value))),
    "isempty": _unary(lambda value: value is None or value == ""),
    "isnotempty": _unary(lambda value: not (value is None or value == "")),
    "isnull": _unary(lambda value: value is None),
    "isnotnull": _unary(lambda value: value is not None),
    "array_length": _unary(lambda value: len(value) if isinstance(value, list) else None),
    "not": _unary(_not),
    "ago": _Function(1, 1, _ago),
    "now": _Function(0, 1, _now),
    **dict.fromkeys(("bin", "floor"), _Function(2, 2, lambda args, _scope: _bin(*args))),
    "datetime_diff": _Function(3, 3, lambda args, _scope: _datetime_diff(*args)),
    "strcat": _Function(1, 64, lambda args, _scope: "".join(_tostring(arg) for arg in args)),
    **dict.fromkeys(("iff", "iif"), _Function(3, 3, lambda args, _scope: _iff(*args))),
    "case": _Function(3, 255, lambda args, _scope: _case(args)),
    "coalesce": _Function(2, 64, lambda args, _scope: _coalesce(args)),
}
# Functions whose unnamed result column keeps the name of their first argument's column.
_NAME_KEEPING = frozenset(
    {"tostring", "toint", "tolong", "todouble", "toreal", "tobool", "toboolean", "todatetime"}
    | {"parse_json", "todynamic", "bin", "floor", "tolower", "toupper"}
)


# ---------------------------------------------------------------------------------------------
# Tabular operators: each takes the frame (columns and rows) in and gives one out.


@dataclass(frozen=True)
class Frame:
    columns: list[str]
    rows: list[dict[str, Any]]


@dataclass(frozen=True)
class Assign:
    """`name = expr`, or a bare `expr` named as Kusto would (`_derived_name`)."""

    name: str | None
    expr: Expr


@dataclass(frozen=True)
class SortKey:
    expr: Expr
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Aggregate:
    name: str | None
    function: str
    args: tuple[Expr | None, ...]  # None stands for `*` (arg_max's "the whole row")


@dataclass(frozen=True)
class Pipeline:
    source: str | Pipeline
    ops: tuple[Op, ...]


def _check(exprs: Sequence[Expr], columns: Sequence[str], scope: _Scope) -> None:
    """Every name an expression reads is a column here or a `let`: checked before any row, so a
    query over an empty table still fails on a column that isn't there."""
    for expr in exprs:
        for name in _names_read(expr):
            if name.name not in columns and name.name not in scope.lets:
                raise KqlError(f"unknown column or name {name.name!r} at offset {name.at} (columns: {list(columns)})")


def _output_names(items: Sequence[Assign]) -> list[str]:
    names: list[str] = []
    unnamed = 0
    for item in items:
        name = item.name or _derived_name(item.expr)
        if name is None:
            unnamed += 1
            name = f"Column{unnamed}"
        names.append(name)
    return names


def _unique(names: Sequence[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise KqlError(f"{what} makes two columns named {repeated}: name them apart")


@dataclass(frozen=True)
class Where:
    predicate: Expr

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        _check([self.predicate], frame.columns, scope)
        kept = []
        for row in frame.rows:
            verdict = self.predicate.value_in(row, scope)
            if verdict is not None and not isinstance(verdict, bool):
                raise KqlError(f"where needs a bool, got {_type_name(verdict)}")
            if verdict is True:
                kept.append(row)
        return Frame(frame.columns, kept)


@dataclass(frozen=True)
class Extend:
    """New columns (or replaced ones) from expressions; a later one may read an earlier one."""

    items: tuple[Assign, ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        names = _output_names(self.items)
        _unique(names, "extend")
        columns = list(frame.columns)
        for name, item in zip(names, self.items, strict=True):
            _check([item.expr], columns, scope)
            if name not in columns:
                columns.append(name)
        rows = []
        for row in frame.rows:
            extended = dict(row)
            for name, item in zip(names, self.items, strict=True):
                extended[name] = item.expr.value_in(extended, scope)
            rows.append({column: extended[column] for column in columns})
        return Frame(columns, rows)


@dataclass(frozen=True)
class Project:
    items: tuple[Assign, ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        names = _output_names(self.items)
        _unique(names, "project")
        _check([item.expr for item in self.items], frame.columns, scope)
        rows = [
            {name: item.expr.value_in(row, scope) for name, item in zip(names, self.items, strict=True)}
            for row in frame.rows
        ]
        return Frame(names, rows)


@dataclass(frozen=True)
class ProjectAway:
    """Drops columns by name or wildcard (`line*`); a plain name that isn't a column is an error."""

    patterns: tuple[str, ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        for pattern in self.patterns:
            if "*" not in pattern and pattern not in frame.columns:
                raise KqlError(f"project-away of {pattern!r}, not a column here: {frame.columns}")
        dropped = {column for column in frame.columns for p in self.patterns if fnmatch.fnmatchcase(column, p)}
        columns = [column for column in frame.columns if column not in dropped]
        return Frame(columns, [{column: row[column] for column in columns} for row in frame.rows])


@dataclass(frozen=True)
class ProjectRename:
    pairs: tuple[tuple[str, str], ...]  # (new, old)

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        renamed = {old: new for new, old in self.pairs}
        for old in renamed:
            if old not in frame.columns:
                raise KqlError(f"project-rename of {old!r}, not a column here: {frame.columns}")
        columns = [renamed.get(column, column) for column in frame.columns]
        _unique(columns, "project-rename")
        rows = [{renamed.get(column, column): value for column, value in row.items()} for row in frame.rows]
        return Frame(columns, rows)


@dataclass(frozen=True)
class Summarize:
    aggregates: tuple[Aggregate, ...]
    by: tuple[Assign, ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        _check([arg for agg in self.aggregates for arg in agg.args if arg is not None], frame.columns, scope)
        _check([item.expr for item in self.by], frame.columns, scope)
        by_names = _output_names(self.by)
        aggregate_columns = [_aggregate_columns(agg, frame.columns, by_names) for agg in self.aggregates]
        columns = [*by_names, *(name for names in aggregate_columns for name in names)]
        _unique(columns, "summarize")
        groups: dict[tuple[Any, ...], tuple[list[Any], list[dict[str, Any]]]] = {}
        for row in frame.rows:
            keys = [item.expr.value_in(row, scope) for item in self.by]
            groups.setdefault(tuple(_hashable(key) for key in keys), (keys, []))[1].append(row)
        if not self.by and not groups:
            groups[()] = ([], [])  # no `by`: one row, even over no rows
        rows = []
        for keys, members in groups.values():
            out = dict(zip(by_names, keys, strict=True))
            for agg in self.aggregates:
                out.update(_aggregate(agg, frame.columns, by_names, members, scope))
            rows.append({column: out[column] for column in columns})
        return Frame(columns, rows)


_AGGREGATE_PREFIX = {
    "dcount": "dcount",
    "dcountif": "dcountif",
    "sum": "sum",
    "sumif": "sumif",
    "avg": "avg",
    "min": "min",
    "max": "max",
    "make_set": "set",
    "make_list": "list",
}
_AGGREGATE_ARITY = {
    "count": (0, 0),
    "countif": (1, 1),
    "dcount": (1, 2),  # the second argument, an accuracy level, can't change an exact count
    "dcountif": (2, 2),
    "sum": (1, 1),
    "sumif": (2, 2),
    "avg": (1, 1),
    "min": (1, 1),
    "max": (1, 1),
    "make_set": (1, 1),
    "make_list": (1, 1),
    "arg_max": (2, 64),
    "arg_min": (2, 64),
}


def _aggregate_columns(agg: Aggregate, columns: Sequence[str], by_names: Sequence[str]) -> list[str]:
    """The columns an aggregate adds."""
    if agg.function in ("arg_max", "arg_min"):
        return list(_arg_returns(agg, columns, by_names))
    first = agg.args[0] if agg.args else None
    if agg.name:
        return [agg.name]
    if agg.function in ("count", "countif"):
        return [f"{agg.function}_"]
    derived = _derived_name(first) if first is not None else None
    return [f"{_AGGREGATE_PREFIX[agg.function]}_{derived or ''}"]


def _arg_returns(agg: Aggregate, columns: Sequence[str], by_names: Sequence[str]) -> dict[str, Expr]:
    """arg_max/arg_min's columns and what fills each: first the value maximized, then the columns
    asked for (`*`: every input column but those the `by` clause names, which replace them)."""
    first = agg.args[0]
    if first is None:
        raise UnsupportedKql(f"{agg.function}() needs a column")
    returns: dict[str, Expr] = {agg.name or _derived_name(first) or f"{agg.function.removeprefix('arg_')}_": first}
    for arg in agg.args[1:]:
        wanted: list[tuple[str, Expr]] = [(column, Name(column, 0)) for column in columns]
        if arg is not None:
            wanted = [(_derived_name(arg) or f"{agg.function}_{len(returns)}", arg)]
        for name, expr in wanted:
            if name not in returns and name not in by_names:
                returns[name] = expr
    return returns


def _aggregate(
    agg: Aggregate, columns: Sequence[str], by_names: Sequence[str], rows: Sequence[dict[str, Any]], scope: _Scope
) -> dict[str, Any]:
    """One aggregate over one group's rows. Nulls are ignored; over no rows the counts and sums are
    0, the sets and lists [], everything else null (Kusto's defaults)."""
    if agg.function in ("arg_max", "arg_min"):
        return _arg_extreme(agg, _arg_returns(agg, columns, by_names), rows, scope)
    names = _aggregate_columns(agg, columns, by_names)
    args = [arg for arg in agg.args if arg is not None]
    if agg.function == "count":
        return {names[0]: len(rows)}
    if agg.function.endswith("if"):
        rows = [row for row in rows if _predicate(args[-1], row, scope)]
        args = args[:-1]
        if agg.function == "countif":
            return {names[0]: len(rows)}
    values = [value for row in rows if (value := args[0].value_in(row, scope)) is not None]
    return {names[0]: _reduce(agg.function.removesuffix("if"), values)}


def _predicate(expr: Expr, row: Mapping[str, Any], scope: _Scope) -> bool:
    verdict = expr.value_in(row, scope)
    if verdict is not None and not isinstance(verdict, bool):
        raise KqlError(f"a predicate needs a bool, got {_type_name(verdict)}")
    return verdict is True


def _reduce(function: str, values: list[Any]) -> Any:
    if function == "dcount":
        return len({_hashable(value) for value in values})
    if function == "make_set":
        return list({_hashable(value): value for value in values}.values())
    if function == "make_list":
        return values
    if function in ("sum", "avg"):
        if any(not _is_number(value) for value in values):
            raise KqlError(f"{function}() of a non-number")
        if function == "sum":
            return sum(values)
        return sum(values) / len(values) if values else None
    if not values:
        return None
    for value in values[1:]:
        _require_comparable(values[0], value)
    return min(values) if function == "min" else max(values)


def _arg_extreme(
    agg: Aggregate, returns: Mapping[str, Expr], rows: Sequence[dict[str, Any]], scope: _Scope
) -> dict[str, Any]:
    """arg_max/arg_min: the row with the largest (smallest) value, first one on a tie; its value and
    the columns asked for. Rows where the value is null don't count; with none left, all is null."""
    first = agg.args[0]
    if first is None:
        raise UnsupportedKql(f"{agg.function}() needs a column")
    best: tuple[Any, dict[str, Any]] | None = None
    for row in rows:
        value = first.value_in(row, scope)
        if value is None:
            continue
        if best is not None:
            _require_comparable(best[0], value)
        if best is None or (value > best[0] if agg.function == "arg_max" else value < best[0]):
            best = (value, row)
    if best is None:
        return dict.fromkeys(returns)
    return {name: expr.value_in(best[1], scope) for name, expr in returns.items()}


def _sorted(rows: Sequence[dict[str, Any]], keys: Sequence[SortKey], scope: _Scope) -> list[dict[str, Any]]:
    """Stable sorts from the last key to the first; nulls placed per key."""
    result = list(rows)
    for key in reversed(keys):
        valued = [(key.expr.value_in(row, scope), row) for row in result]
        present = [(value, row) for value, row in valued if value is not None]
        missing = [row for value, row in valued if value is None]
        for value, _row in present[1:]:
            _require_comparable(present[0][0], value)
        present.sort(key=lambda pair: pair[0], reverse=key.descending)
        ordered = [row for _value, row in present]
        result = missing + ordered if key.nulls_first else ordered + missing
    return result


def _count(expr: Expr, scope: _Scope, what: str) -> int:
    count = expr.value_in({}, scope)
    if not _is_number(count) or count < 0 or int(count) != count:
        raise KqlError(f"{what} needs a whole number of rows, got {count!r}")
    return int(count)


@dataclass(frozen=True)
class Sort:
    keys: tuple[SortKey, ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        _check([key.expr for key in self.keys], frame.columns, scope)
        return Frame(frame.columns, _sorted(frame.rows, self.keys, scope))


@dataclass(frozen=True)
class Top:
    count: Expr
    key: SortKey

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        _check([self.count], [], scope)
        _check([self.key.expr], frame.columns, scope)
        return Frame(frame.columns, _sorted(frame.rows, [self.key], scope)[: _count(self.count, scope, "top")])


@dataclass(frozen=True)
class Take:
    count: Expr

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        _check([self.count], [], scope)
        return Frame(frame.columns, frame.rows[: _count(self.count, scope, "take")])


@dataclass(frozen=True)
class CountRows:
    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        return Frame(["Count"], [{"Count": len(frame.rows)}])


@dataclass(frozen=True)
class Distinct:
    columns: tuple[str, ...]  # empty: `distinct *`

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        columns = list(self.columns) or frame.columns
        _check([Name(column, 0) for column in columns], frame.columns, scope)
        seen: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in frame.rows:
            kept = {column: row[column] for column in columns}
            seen.setdefault(tuple(_hashable(value) for value in kept.values()), kept)
        return Frame(columns, list(seen.values()))


@dataclass(frozen=True)
class Render:
    """`render timechart`: how the portal draws the rows; the rows themselves don't change."""

    visualization: str

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        return frame


_JOIN_KINDS = {
    "innerunique": "innerunique",
    "inner": "inner",
    "leftouter": "leftouter",
    "rightouter": "rightouter",
    "fullouter": "fullouter",
    "leftanti": "leftanti",
    "anti": "leftanti",
    "leftantisemi": "leftanti",
    "rightanti": "rightanti",
    "rightantisemi": "rightanti",
    "leftsemi": "leftsemi",
    "rightsemi": "rightsemi",
}


@dataclass(frozen=True)
class Join:
    """`join kind=... (right) on Key, $left.A == $right.B`. The default kind, innerunique, keeps one
    left row per key (the first). Null keys match nothing. A right column whose name the left
    side has already gets a number (`OperationId1`), as in Kusto."""

    kind: str
    right: Pipeline
    keys: tuple[tuple[str, str], ...]

    def apply(self, frame: Frame, scope: _Scope) -> Frame:
        right = _run(self.right, scope)
        for left_key, right_key in self.keys:
            if left_key not in frame.columns or right_key not in right.columns:
                raise KqlError(f"join on {left_key!r} = {right_key!r}: left {frame.columns}, right {right.columns}")
        index: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in right.rows:
            if (key := self._key(row, 1)) is not None:
                index.setdefault(key, []).append(row)
        kind = _JOIN_KINDS[self.kind]
        if kind in ("leftanti", "leftsemi"):
            keep = kind == "leftsemi"
            return Frame(frame.columns, [row for row in frame.rows if (self._key(row, 0) in index) == keep])
        if kind in ("rightanti", "rightsemi"):
            matched = {self._key(row, 0) for row in frame.rows} - {None}
            keep = kind == "rightsemi"
            return Frame(right.columns, [row for row in right.rows if (self._key(row, 1) in matched) == keep])
        return self._combine(kind, frame, right, index)

    def _key(self, row: Mapping[str, Any], side: int) -> tuple[Any, ...] | None:
        values = [row[pair[side]] for pair in self.keys]
        return None if any(value is None for value in values) else tuple(_hashable(value) for value in values)

    def _combine(
        self, kind: str, left: Frame, right: Frame, index: dict[tuple[Any, ...], list[dict[str, Any]]]
    ) -> Frame:
        renamed: dict[str, str] = {}
        for column in right.columns:
            name, number = column, 0
            while name in left.columns or name in renamed.values():
                number += 1
                name = f"{column}{number}"
            renamed[column] = name
        columns = [*left.columns, *renamed.values()]
        empty_left, empty_right = dict.fromkeys(left.columns), dict.fromkeys(renamed.values())
        left_rows = left.rows
        if kind == "innerunique":
            firsts: dict[Any, dict[str, Any]] = {}
            for row in left.rows:
                firsts.setdefault(self._key(row, 0) or id(row), row)
            left_rows = list(firsts.values())
        rows: list[dict[str, Any]] = []
        matched: set[int] = set()
        for row in left_rows:
            partners = index.get(self._key(row, 0) or (), [])
            for partner in partners:
                matched.add(id(partner))
                rows.append({**row, **{renamed[c]: v for c, v in partner.items()}})
            if not partners and kind in ("leftouter", "fullouter"):
                rows.append({**row, **empty_right})
        if kind in ("rightouter", "fullouter"):
            rows.extend(
                {**empty_left, **{renamed[c]: v for c, v in partner.items()}}
                for partner in right.rows
                if id(partner) not in matched
            )
        return Frame(columns, rows)


type Op = (
    Where
    | Extend
    | Project
    | ProjectAway
    | ProjectRename
    | Summarize
    | Sort
    | Top
    | Take
    | CountRows
    | Distinct
    | Render
    | Join
)


# ---------------------------------------------------------------------------------------------
# Parser: recursive descent for the pipeline, Pratt for expressions.


@dataclass(frozen=True)
class Query:
    lets: tuple[tuple[str, Expr | Pipeline], ...]
    body: Pipeline


_SORT_WORDS = ("asc", "desc", "nulls")


class _Parser:
    def __init__(self, query: str) -> None:
        self.text = query
        self.tokens = tokenize(query)
        self.position = 0

    # -- tokens

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.position + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.position = min(self.position + 1, len(self.tokens) - 1)
        return token

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token.kind in ("name", "op") and token.text in texts

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.next()
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise self.unexpected(f"expected {text!r}")

    def name(self) -> str:
        if self.peek().kind != "name":
            raise self.unexpected("expected a name")
        return self.next().text

    def assigned_name(self) -> str | None:
        """`name =` before an expression (not `==`), consumed; None when there is none."""
        if self.peek().kind == "name" and self.peek(1).kind == "op" and self.peek(1).text == "=":
            name = self.next().text
            self.next()
            return name
        return None

    def unexpected(self, what: str, token: Token | None = None) -> UnsupportedKql:
        token = token or self.peek()
        found = "the end of the query" if token.kind == "end" else repr(self.text[token.at : token.at + 40])
        return UnsupportedKql(f"{what} at offset {token.at}, found {found}")

    def listed[T](self, item: Callable[[], T]) -> list[T]:
        items = [item()]
        while self.accept(","):
            items.append(item())
        return items

    # -- statements and pipelines

    def query(self) -> Query:
        lets: list[tuple[str, Expr | Pipeline]] = []
        while self.accept("let"):
            name = self.name()
            self.expect("=")
            lets.append((name, self.let_value()))
            self.expect(";")
        body = self.pipeline()
        self.accept(";")
        if self.peek().kind != "end":
            raise self.unexpected("expected '|' or the end of the query")
        return Query(tuple(lets), body)

    def let_value(self) -> Expr | Pipeline:
        """A scalar, or a tabular expression when a `|` follows its first term."""
        start = self.position
        try:
            value: Expr | None = self.expr()
        except UnsupportedKql:
            value = None  # perhaps `(T | ...)`, which the pipeline parser reads
        if value is not None and not self.at("|"):
            return value
        self.position = start
        return self.pipeline()

    def pipeline(self) -> Pipeline:
        source: str | Pipeline
        if self.accept("("):
            source = self.pipeline()
            self.expect(")")
        else:
            source = self.name()
        ops: list[Op] = []
        while self.accept("|"):
            ops.append(self.operator())
        return Pipeline(source, tuple(ops))

    def operator(self) -> Op:
        token = self.next()
        parse = _OPERATORS.get(token.text) if token.kind == "name" else None
        if parse is None:
            raise self.unexpected("unsupported tabular operator", token)
        return parse(self)

    def assignment(self) -> Assign:
        name = self.assigned_name()
        return Assign(name, self.expr())

    def sort_key(self) -> SortKey:
        expr = self.expr()
        descending = not self.accept("asc")
        if descending:
            self.accept("desc")
        nulls_first = not descending
        if self.accept("nulls"):
            nulls_first = self.accept("first")
            if not nulls_first:
                self.expect("last")
        return SortKey(expr, descending, nulls_first)

    def aggregate(self) -> Aggregate:
        name = self.assigned_name()
        token = self.next()
        if token.kind != "name" or token.text not in _AGGREGATE_ARITY:
            raise self.unexpected("unsupported aggregation", token)
        self.expect("(")
        args: list[Expr | None] = []
        if not self.at(")"):
            args = self.listed(lambda: None if self.accept("*") else self.expr())
        self.expect(")")
        least, most = _AGGREGATE_ARITY[token.text]
        if not least <= len(args) <= most:
            raise self.unexpected(f"{token.text}() takes {least} to {most} arguments", token)
        stars_allowed = token.text in ("arg_max", "arg_min")
        if any(arg is None for arg in args[: 1 if stars_allowed else None]):
            raise self.unexpected(f"`*` is not an argument of {token.text}() there", token)
        return Aggregate(name, token.text, tuple(args))

    def column_pattern(self) -> str:
        """A column name, or a wildcard pattern (`line*`, `*Id`) glued together from its tokens."""
        parts = [self.next()]
        if parts[0].kind != "name" and parts[0].text != "*":
            raise self.unexpected("expected a column name", parts[0])
        while self.peek().at == parts[-1].at + len(parts[-1].text) and (self.peek().kind == "name" or self.at("*")):
            parts.append(self.next())
        return "".join(part.text for part in parts)

    def join_key(self) -> tuple[str, str]:
        if not self.at("$left", "$right"):
            column = self.name()
            return column, column
        sides: dict[str, str] = {}
        for index in range(2):
            if index:
                self.expect("==")
            side = self.name()
            if side not in ("$left", "$right") or side in sides:
                raise self.unexpected("expected $left.Column == $right.Column")
            self.expect(".")
            sides[side] = self.name()
        return sides["$left"], sides["$right"]

    # -- expressions

    def expr(self, floor: int = 0) -> Expr:
        left = self.unary()
        while True:
            token = self.peek()
            power = _BINDING.get(token.text) if token.kind in ("name", "op") else None
            if power is None or power <= floor:
                return left
            self.next()
            if token.text in _IN:
                self.expect("(")
                items = self.listed(self.expr)
                self.expect(")")
                left = InList(token.text, left, tuple(items))
            else:
                left = Binary(token.text, left, self.expr(power))

    def unary(self) -> Expr:
        if self.accept("-"):
            return Negate(self.unary())
        return self.postfix(self.primary())

    def postfix(self, expr: Expr) -> Expr:
        while True:
            if self.accept("."):
                key = self.next()
                if key.kind != "name":
                    raise self.unexpected("expected a member name", key)
                expr = Member(expr, Literal(key.text))
            elif self.accept("["):
                expr = Member(expr, self.expr())
                self.expect("]")
            else:
                return expr

    def primary(self) -> Expr:
        token = self.next()
        if token.kind in ("string", "number", "literal"):
            return Literal(token.value)
        if token.kind == "op" and token.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if token.kind != "name" or token.text.startswith("!") or token.text in _BINDING:
            raise self.unexpected("expected a value", token)
        if token.text.lower() in ("true", "false"):
            return Literal(token.text.lower() == "true")
        if not self.accept("("):
            return Name(token.text, token.at)
        function = _FUNCTIONS.get(token.text)
        if function is None:
            raise self.unexpected("unsupported function", token)
        args = [] if self.at(")") else self.listed(self.expr)
        self.expect(")")
        if not function.least <= len(args) <= function.most:
            raise self.unexpected(f"{token.text}() takes {function.least} to {function.most} arguments", token)
        return Call(token.text, tuple(args))


def _parse_where(parser: _Parser) -> Op:
    return Where(parser.expr())


def _parse_extend(parser: _Parser) -> Op:
    return Extend(tuple(parser.listed(parser.assignment)))


def _parse_project(parser: _Parser) -> Op:
    return Project(tuple(parser.listed(parser.assignment)))


def _parse_project_away(parser: _Parser) -> Op:
    return ProjectAway(tuple(parser.listed(parser.column_pattern)))


def _parse_project_rename(parser: _Parser) -> Op:
    def pair() -> tuple[str, str]:
        new = parser.name()
        parser.expect("=")
        return new, parser.name()

    return ProjectRename(tuple(parser.listed(pair)))


def _parse_summarize(parser: _Parser) -> Op:
    aggregates = [] if parser.at("by") else parser.listed(parser.aggregate)
    by = parser.listed(parser.assignment) if parser.accept("by") else []
    if not aggregates and not by:
        raise parser.unexpected("summarize needs an aggregation or a by clause")
    return Summarize(tuple(aggregates), tuple(by))


def _parse_sort(parser: _Parser) -> Op:
    parser.expect("by")
    return Sort(tuple(parser.listed(parser.sort_key)))


def _parse_top(parser: _Parser) -> Op:
    count = parser.expr()
    parser.expect("by")
    return Top(count, parser.sort_key())


def _parse_take(parser: _Parser) -> Op:
    return Take(parser.expr())


def _parse_count(parser: _Parser) -> Op:
    return CountRows()


def _parse_distinct(parser: _Parser) -> Op:
    if parser.accept("*"):
        return Distinct(())
    return Distinct(tuple(parser.listed(parser.name)))


def _parse_join(parser: _Parser) -> Op:
    kind = "innerunique"
    while parser.peek().kind == "name" and parser.peek(1).text in ("=", "."):
        parameter = parser.next()
        if parameter.text != "kind" or parser.peek().text != "=":
            raise parser.unexpected("unsupported join parameter", parameter)
        parser.next()
        kind_token = parser.peek()
        kind = parser.name()
        if kind not in _JOIN_KINDS:
            raise parser.unexpected("unsupported join kind", kind_token)
    if parser.accept("("):
        right = parser.pipeline()
        parser.expect(")")
    else:
        right = Pipeline(parser.name(), ())
    parser.expect("on")
    return Join(kind, right, tuple(parser.listed(parser.join_key)))


def _parse_render(parser: _Parser) -> Op:
    visualization = parser.name()
    if parser.accept("with"):

        def setting() -> Expr:
            parser.name()
            parser.expect("=")
            return parser.expr()

        parser.expect("(")
        parser.listed(setting)
        parser.expect(")")
    return Render(visualization)


_OPERATORS: dict[str, Callable[[_Parser], Op]] = {
    "where": _parse_where,
    "extend": _parse_extend,
    "project": _parse_project,
    "project-away": _parse_project_away,
    "project-rename": _parse_project_rename,
    "summarize": _parse_summarize,
    "order": _parse_sort,
    "sort": _parse_sort,
    "top": _parse_top,
    "take": _parse_take,
    "limit": _parse_take,
    "count": _parse_count,
    "distinct": _parse_distinct,
    "join": _parse_join,
    "render": _parse_render,
}


def parse(query: str) -> Query:
    """The query's syntax tree; raises UnsupportedKql at the first thing outside the subset."""
    return _Parser(query).query()


# ---------------------------------------------------------------------------------------------
# Running a pipeline


@dataclass(frozen=True)
class _Scope:
    now: datetime
    tables: Mapping[str, Sequence[Mapping[str, Any]]]
    schemas: Mapping[str, Mapping[str, str]]
    lets: dict[str, Any]
    tabular: dict[str, Pipeline]

    def bind(self, name: str, bound: Expr | Pipeline) -> None:
        """A `let`: a tabular one (or an alias of a table) runs where it is used; a scalar one now."""
        if isinstance(bound, Pipeline):
            self.tabular[name] = bound
        elif isinstance(bound, Name) and (bound.name in self.tables or bound.name in self.tabular):
            self.tabular[name] = Pipeline(bound.name, ())
        else:
            _check([bound], [], self)
            self.lets[name] = bound.value_in({}, self)


def _run(pipeline: Pipeline, scope: _Scope) -> Frame:
    if isinstance(pipeline.source, Pipeline):
        frame = _run(pipeline.source, scope)
    elif pipeline.source in scope.tabular:
        frame = _run(scope.tabular[pipeline.source], scope)
    else:
        frame = _table(pipeline.source, scope)
    for op in pipeline.ops:
        frame = op.apply(frame, scope)
    return frame


@cache
def _contract_schemas() -> dict[str, dict[str, str]]:
    """The column tables vendored from Microsoft's Azure Monitor Logs reference: table -> column -> type."""
    schemas: dict[str, dict[str, str]] = {}
    for path in sorted(CONTRACTS.glob("*.json")):
        document = json.loads(path.read_text())
        schemas[document["table"]] = document["columns"]
    return schemas


def _table(name: str, scope: _Scope) -> Frame:
    if name not in scope.tables:
        raise KqlError(f"unknown table {name!r}; the tables given are {sorted(scope.tables)}")
    given = scope.tables[name]
    schema = scope.schemas.get(name) or dict.fromkeys((column for row in given for column in row), "any")
    rows = []
    for number, row in enumerate(given):
        unknown = sorted(set(row) - set(schema))
        if unknown:
            raise KqlError(f"{name} row {number} has columns the table doesn't: {unknown}")
        rows.append({column: _column_value(row, column, kind, name) for column, kind in schema.items()})
    return Frame(list(schema), rows)


_COLUMN_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "guid": (str,),
    "int": (int,),
    "long": (int,),
    "real": (int, float),
    "bool": (bool,),
    "datetime": (datetime,),
    "timespan": (timedelta,),
}


def _column_value(row: Mapping[str, Any], column: str, kind: str, table: str) -> Any:
    """A row's value as Kusto holds it: absent is "" for strings and null otherwise; datetimes in UTC.
    A value of the wrong type (a naive datetime, "false" for a bool) is the test's mistake: raise."""
    value = row.get(column)
    if value is None:
        return "" if kind in ("string", "guid") else None
    expected = _COLUMN_TYPES.get(kind)
    wrong = expected is not None and (
        not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)
    )
    if wrong or (isinstance(value, datetime) and value.tzinfo is None):
        raise KqlError(f"{table}.{column} is {kind}; the row has {value!r}")
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return float(value) if kind == "real" else value
