"""The List filter language (AIP-160), parsed by a grammar and compiled to Peewee expressions.

This is its first form: comparisons ``field = value`` joined by ``AND``, each
literal typed by the field it is compared with.

    where = compile_filter(resource, 'status = RUNNING AND name = "nightly"')
    query = resource.model.select().where(where)

Filters never become SQL text: every literal reaches PostgreSQL as a parameter.
"""
from __future__ import annotations

import datetime
import operator
from functools import reduce
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput
from peewee import BigIntegerField, DoubleField, Expression, Field, IntegerField, TextField, UUIDField
from playhouse.postgres_ext import DateTimeTZField

from models import EnumField
from server.convert import parse_uuid, snake_case
from server.errors import InvalidArgument
from server.resources import Resource

GRAMMAR = r"""
    ?start: conjunction
    conjunction: comparison ("AND" comparison)*
    comparison: FIELD "=" value
    ?value: STRING -> string
          | NUMBER -> number
          | NAME -> name

    FIELD: /[a-z_][a-z0-9_]*/
    NAME: /[A-Za-z_][A-Za-z0-9_]*/
    STRING: /"(\\.|[^"\\])*"/
    NUMBER: /-?\d+(\.\d+)?([eE][-+]?\d+)?/

    %import common.WS
    %ignore WS
"""

_parser = Lark(GRAMMAR, parser="lalr")

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _unquote(text: str) -> str:
    out, chars = [], iter(text[1:-1])
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")
            char = _ESCAPES.get(escaped, escaped)
        out.append(char)
    return "".join(out)


def _where(token: Token) -> str:
    return f"at {token.line}:{token.column}"


class _Literal:
    """Turns a literal token into the value of the field it is compared with."""

    def __init__(self, resource: Resource, field: Field, name: str, token: Token, kind: str) -> None:
        self.resource, self.field, self.name, self.token, self.kind = resource, field, name, token, kind

    def fail(self, expected: str) -> InvalidArgument:
        return InvalidArgument(
            f"{self.name} on {self.resource.name} expects {expected}, got {self.token.value} "
            f"{_where(self.token)}",
            "filter",
        )

    def value(self) -> Any:
        field, kind, text = self.field, self.kind, self.token.value
        if kind == "name" and text == "null":
            return None
        if isinstance(field, EnumField):
            short = _unquote(text) if kind == "string" else text
            prefix = snake_case(field.enum.__name__).upper()
            for member in field.enum:
                if short in (member.value, f"{prefix}_{member.value}"):
                    return member.value
            raise self.fail(f"one of {', '.join(m.value for m in field.enum)}")
        if isinstance(field, UUIDField) or field.name != field.column_name:
            if kind != "string":
                raise self.fail("a quoted UUID")
            return parse_uuid(_unquote(text), "filter")
        if isinstance(field, DateTimeTZField):
            if kind != "string":
                raise self.fail('an RFC 3339 timestamp in quotes ("2026-01-01T00:00:00Z")')
            try:
                moment = datetime.datetime.fromisoformat(_unquote(text))
            except ValueError:
                raise self.fail("an RFC 3339 timestamp") from None
            if moment.tzinfo is None:
                raise self.fail("a timestamp with a time zone (Z or +hh:mm)")
            return moment
        if isinstance(field, (IntegerField, BigIntegerField)):
            if kind != "number" or not text.lstrip("-").isdigit():
                raise self.fail("an integer")
            return int(text)
        if isinstance(field, DoubleField):
            if kind != "number":
                raise self.fail("a number")
            return float(text)
        if isinstance(field, TextField):
            if kind != "string":
                raise self.fail("a string in double quotes")
            return _unquote(text)
        raise self.fail("nothing: it cannot be filtered")


def _comparison(resource: Resource, node: Tree) -> Expression:
    field_token, value_node = node.children
    name = str(field_token)
    if name not in resource.filterable:
        raise InvalidArgument(
            f"unknown field {name!r} on {resource.name} {_where(field_token)}", "filter"
        )
    field = resource.fields[name]
    literal = _Literal(resource, field, name, value_node.children[0], value_node.data)
    value = literal.value()
    return field.is_null() if value is None else field == value


def compile_filter(resource: Resource, text: str) -> Expression | bool:
    """The filter as a Peewee expression (``True`` when empty)."""
    if not text.strip():
        return True
    try:
        tree = _parser.parse(text)
    except UnexpectedInput as error:
        raise InvalidArgument(
            f"filter syntax error at {error.line}:{error.column}: expected a comparison "
            "'field = value', joined by AND",
            "filter",
        ) from None
    comparisons = tree.children if tree.data == "conjunction" else [tree]
    return reduce(operator.and_, (_comparison(resource, node) for node in comparisons))
