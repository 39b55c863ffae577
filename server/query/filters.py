"""The List filter language (AIP-160): a grammar, compiled to Peewee expressions.

    where = compile_filter(catalog["ModelVersion"],
                           'status IN (TRAINED, VALIDATED) AND model.framework = PYTORCH', limits)
    query = resource.model.select().where(where)

What a filter can say:

* comparisons ``= != < <= > >=`` and ``field IN (a, b)``, joined by ``AND``,
  ``OR`` (which binds tighter, as AIP-160 says) and ``NOT``, with parentheses;
* literals typed by the field: enums by name (``RUNNING`` or
  ``TRAINING_JOB_STATUS_RUNNING``), strings in double quotes with backslash
  escapes, numbers, RFC 3339 timestamps, ids as quoted UUIDs, ``null``;
* ``*`` in a string compared with ``=`` or ``!=`` is a wildcard (``\\*`` a star);
* ``config.framework = "pytorch"``: a key inside a JSON field, compared as the
  literal's JSON type (a key that is missing or null compares as SQL NULL, a
  value of another type is simply unequal);
* ``model.framework = PYTORCH``: one hop up to a parent, by the foreign key's
  name; ``deployments.status = DEPLOYED``: some child matches (``EXISTS``).

NULLs follow SQL's three-valued logic: ``confidence < 0.5`` is unknown for a
row without a confidence, and so is its ``NOT``. Filters never become SQL text:
every literal and JSON key reaches PostgreSQL as a parameter.
"""
from __future__ import annotations

import datetime
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput
from peewee import SQL, Cast, Expression, Field, fn

from server.core.codec import parse_uuid, snake_case
from server.core.errors import InvalidArgument
from server.core.kinds import UNORDERED, Kind, kind_of
from server.core.limits import Limits
from server.core.resource import Relation, Resource

GRAMMAR = r"""
    ?start: conjunction
    ?conjunction: disjunction ("AND" disjunction)*
    ?disjunction: term ("OR" term)*
    ?term: "NOT" term -> negation
         | "(" conjunction ")"
         | path COMPARATOR value -> comparison
         | path "IN" "(" value ("," value)* ")" -> membership
    path: NAME ("." NAME)*
    ?value: STRING -> string
          | NUMBER -> number
          | NAME -> name

    COMPARATOR: "<=" | ">=" | "!=" | "=" | "<" | ">"
    NAME: /[A-Za-z_][A-Za-z0-9_]*/
    STRING: /"(\\.|[^"\\])*"/
    NUMBER: /-?\d+(\.\d+)?([eE][-+]?\d+)?/

    %import common.WS
    %ignore WS
"""

_parser = Lark(GRAMMAR, parser="lalr", propagate_positions=True)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_OPERATORS: dict[str, Callable[[Any, Any], Expression]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_EQUALITY = ("=", "!=")


def _at(token: Token | Tree) -> str:
    meta = token.meta if isinstance(token, Tree) else token
    return f"at {meta.line}:{meta.column}"


@dataclass(frozen=True)
class Literal:
    """A literal as written: its kind (string, number, name) and its token."""

    kind: str
    token: Token

    @property
    def text(self) -> str:
        return str(self.token)

    @property
    def is_null(self) -> bool:
        return self.kind == "name" and self.text == "null"

    def string(self) -> str:
        """The string's value with escapes resolved (``\\*`` becomes ``*``)."""
        return "".join(char for char, _ in self.characters())

    def characters(self) -> list[tuple[str, bool]]:
        """Each character of a string literal, and whether it is an unescaped ``*``."""
        out, chars = [], iter(self.text[1:-1])
        for char in chars:
            if char == "\\":
                escaped = next(chars, "")
                out.append((_ESCAPES.get(escaped, escaped), False))
            else:
                out.append((char, char == "*"))
        return out

    def like_pattern(self) -> str | None:
        """A LIKE pattern when the string holds a wildcard, else None."""
        characters = self.characters()
        if not any(wild for _, wild in characters):
            return None
        special = {"%": "\\%", "_": "\\_", "\\": "\\\\"}
        return "".join("%" if wild else special.get(char, char) for char, wild in characters)


class _Compiler:
    def __init__(self, resource: Resource) -> None:
        self.root = resource

    def fail(self, message: str, where: Token | Tree) -> InvalidArgument:
        return InvalidArgument(f"{message} {_at(where)}", "filter")

    def compile(self, node: Tree) -> Expression:
        if node.data == "conjunction":
            return reduce(operator.and_, map(self.compile, node.children))
        if node.data == "disjunction":
            return reduce(operator.or_, map(self.compile, node.children))
        if node.data == "negation":
            return ~self.compile(node.children[0])
        path, *rest = node.children
        if node.data == "comparison":
            op, value = rest
            return self.restrict(self.root, path.children, str(op), [self.literal(value)], op)
        return self.restrict(self.root, path.children, "IN", [self.literal(v) for v in rest], path)

    @staticmethod
    def literal(node: Tree) -> Literal:
        return Literal(node.data, node.children[0])

    def restrict(
        self, resource: Resource, path: list[Token], op: str, values: list[Literal], where: Any
    ) -> Expression:
        head, tail = str(path[0]), path[1:]
        if head in resource.fields:
            field = resource.fields[head]
            if kind_of(field) is Kind.JSON and tail:
                return _JsonKey(self, field, [str(t) for t in tail]).compare(op, values, where)
            if tail:
                raise self.fail(f'{head} on {resource.name} has no keys ("{".".join(map(str, path))}")', path[1])
            return _Column(self, resource, field, head).compare(op, values, where)
        relation = resource.relations.get(head)
        if relation is not None and tail:
            if resource is not self.root:
                raise self.fail("a filter may follow one relation only", path[0])
            return self.exists(resource, relation, self.restrict(relation.target, tail, op, values, where))
        raise self.fail(f'unknown field "{head}" on {resource.name}', path[0])

    @staticmethod
    def exists(resource: Resource, relation: Relation, condition: Expression) -> Expression:
        target = relation.target.model
        related = target.select(SQL("1")).where(relation.link(resource.model) & condition)
        return fn.EXISTS(related)


class _Column:
    """Comparisons with one column, each literal converted to the column's type."""

    def __init__(self, compiler: _Compiler, resource: Resource, field: Field, name: str) -> None:
        self.compiler, self.resource, self.field, self.name = compiler, resource, field, name

    def expected(self, what: str, literal: Literal) -> InvalidArgument:
        return self.compiler.fail(
            f"{self.name} on {self.resource.name} expects {what}, got {literal.text}", literal.token
        )

    def compare(self, op: str, values: list[Literal], where: Any) -> Expression:
        field = self.field
        if op == "IN":
            if any(v.is_null for v in values):
                raise self.compiler.fail("IN takes no null; compare with = null instead", where)
            return field.in_([self.value(v) for v in values])
        (literal,) = values
        if literal.is_null:
            if op not in _EQUALITY:
                raise self.compiler.fail(f"null can only be compared with = or !=, not {op}", where)
            return field.is_null(op == "=")
        if op not in _EQUALITY and not self.ordered():
            raise self.compiler.fail(f"{self.name} on {self.resource.name} cannot be compared with {op}", where)
        if kind_of(field) is Kind.TEXT and literal.kind == "string":
            pattern = literal.like_pattern()
            if pattern is not None:
                if op not in _EQUALITY:
                    raise self.compiler.fail(f"a wildcard needs = or !=, not {op}", where)
                matches = Expression(field, "LIKE", pattern)
                return matches if op == "=" else ~matches
        return _OPERATORS[op](field, self.value(literal))

    def ordered(self) -> bool:
        return kind_of(self.field) not in UNORDERED

    def value(self, literal: Literal) -> Any:
        field, kind, text = self.field, literal.kind, literal.text
        column = kind_of(field)
        if column is Kind.ENUM:
            short = literal.string() if kind == "string" else text
            prefix = snake_case(field.enum.__name__).upper() + "_"
            short = short[len(prefix):] if short.startswith(prefix) else short
            if short not in field.enum.__members__:
                raise self.expected(f"one of {', '.join(field.enum.__members__)}", literal)
            return short
        if column is Kind.ID:
            if kind != "string":
                raise self.expected("a quoted UUID", literal)
            try:
                return parse_uuid(literal.string(), self.name)
            except InvalidArgument:
                raise self.expected("a UUID", literal) from None
        if column is Kind.TIMESTAMP:
            return self.timestamp(literal)
        if column is Kind.INTEGER:
            if kind != "number" or not text.lstrip("-").isdigit():
                raise self.expected("an integer", literal)
            return int(text)
        if column is Kind.NUMBER:
            if kind != "number":
                raise self.expected("a number", literal)
            return float(text)
        if column is Kind.TEXT:
            if kind != "string":
                raise self.expected("a string in double quotes", literal)
            return literal.string()
        raise self.expected("null (it can only be compared with null)", literal)

    def timestamp(self, literal: Literal) -> datetime.datetime:
        if literal.kind != "string":
            raise self.expected('an RFC 3339 timestamp in quotes ("2026-01-01T00:00:00Z")', literal)
        try:
            # RFC 3339 allows a lower-case "t" and "z"; Python's parser does not.
            moment = datetime.datetime.fromisoformat(literal.string().upper())
        except ValueError:
            raise self.expected("an RFC 3339 timestamp", literal) from None
        if moment.tzinfo is None:
            raise self.expected("a timestamp with a time zone (Z or +hh:mm)", literal)
        return moment


class _JsonKey:
    """Comparisons with a key inside a ``jsonb`` column, typed by the literal."""

    def __init__(self, compiler: _Compiler, field: Field, keys: list[str]) -> None:
        self.compiler = compiler
        # A JSON null is SQL NULL here, like a missing key: both compare as unknown.
        self.value = fn.NULLIF(fn.jsonb_extract_path(field, *keys), Cast("null", "jsonb"))
        self.text = fn.jsonb_extract_path_text(field, *keys)

    def json_literal(self, literal: Literal) -> tuple[str, Any]:
        if literal.kind == "string":
            return "string", literal.string()
        if literal.kind == "number":
            number = float(literal.text)
            return "number", int(number) if number.is_integer() and "." not in literal.text else number
        if literal.text in ("true", "false"):
            return "boolean", literal.text == "true"
        raise self.compiler.fail(
            f"a JSON key compares with a string, number, true, false or null, not {literal.text}",
            literal.token,
        )

    def compare(self, op: str, values: list[Literal], where: Any) -> Expression:
        if op == "IN":
            return reduce(operator.or_, (self.compare("=", [v], where) for v in values))
        (literal,) = values
        if literal.is_null:
            if op not in _EQUALITY:
                raise self.compiler.fail(f"null can only be compared with = or !=, not {op}", where)
            return self.value.is_null(op == "=")
        kind, value = self.json_literal(literal)
        if kind == "boolean" and op not in _EQUALITY:
            raise self.compiler.fail(f"true and false can only be compared with = or !=, not {op}", where)
        same_type = fn.jsonb_typeof(self.value) == kind
        pattern = literal.like_pattern() if kind == "string" else None
        if pattern is not None:
            if op not in _EQUALITY:
                raise self.compiler.fail(f"a wildcard needs = or !=, not {op}", where)
            matches = Expression(self.text, "LIKE", pattern)
            return same_type & (matches if op == "=" else ~matches)
        return same_type & _OPERATORS[op](self.value, Cast(json.dumps(value), "jsonb"))


def _depth(tree: Tree) -> int:
    """How deeply AND, OR and NOT nest (iteratively: the tree may be deep)."""
    logical = ("conjunction", "disjunction", "negation")
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        depth += node.data in logical
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in node.children if isinstance(child, Tree))
    return deepest


def compile_filter(resource: Resource, text: str, limits: Limits) -> Expression | bool:
    """The filter as a Peewee expression (``True`` when empty)."""
    if len(text) > limits.max_filter_length:
        raise InvalidArgument(f"filter is longer than {limits.max_filter_length} characters", "filter")
    if "\0" in text:
        raise InvalidArgument("filter must not contain NUL characters", "filter")
    if not text.strip():
        return True
    try:
        tree = _parser.parse(text)
    except UnexpectedInput as error:
        found = getattr(error, "token", None)
        near = f" near {str(found)!r}" if found else ""
        raise InvalidArgument(
            f"filter syntax error at {error.line}:{error.column}{near}: expected comparisons "
            "such as 'field = value' joined by AND, OR and NOT",
            "filter",
        ) from None
    if _depth(tree) > limits.max_filter_depth:
        raise InvalidArgument(f"filter is nested deeper than {limits.max_filter_depth} levels", "filter")
    return _Compiler(resource).compile(tree)
