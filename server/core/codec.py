"""Conversion between database values and protobuf fields, one codec per column.

The kind of a column (``server.core.kinds``) picks a ``Codec`` from
``CODECS``; a ``MessageCodec`` holds the codecs of one resource's columns and
turns a row into a message and a message into column values:

    codec = MessageCodec(Dataset, dataset_pb2.Dataset)
    message = codec.to_message(record)            # dict of column -> value
    values = codec.read(message, ["name", "size"])  # field -> value or UNSET
"""
from __future__ import annotations

import datetime
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from peewee import Field

import models
from models import EMBEDDING_DIMENSIONS
from server.core.errors import InvalidArgument
from server.core.kinds import Kind, kind_of


class _Unset:
    """The field was not given in the message (as opposed to given as null or zero)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def parse_uuid(text: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID, got {text!r}", field) from None


def required_uuid(text: str, field: str) -> uuid.UUID:
    """``text`` as a UUID; empty is INVALID_ARGUMENT saying that ``field`` is required."""
    if not text:
        raise InvalidArgument(f"{field} is required", field)
    return parse_uuid(text, field)


def checked_embedding(values: Any, field: str) -> list[float]:
    """An embedding of the model's dimensions, every value finite; INVALID_ARGUMENT otherwise."""
    embedding = list(values)
    if len(embedding) != EMBEDDING_DIMENSIONS:
        raise InvalidArgument(f"{field} must have {EMBEDDING_DIMENSIONS} dimensions, got {len(embedding)}", field)
    if not all(math.isfinite(v) for v in embedding):
        raise InvalidArgument(f"{field} must not contain NaN or infinite values", field)
    return embedding


def snake_case(name: str) -> str:
    """``DatasetVersion`` -> ``dataset_version``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def enum_prefix(descriptor: EnumDescriptor) -> str:
    """Buf's value prefix of an enum: ``WorkflowStatus`` -> ``WORKFLOW_STATUS_``."""
    return snake_case(descriptor.name).upper() + "_"


@dataclass(frozen=True)
class Codec:
    """How one kind of column is written to and read from a protobuf field."""

    write: Callable[[Message, str, Any], None]
    read: Callable[[Message, str, FieldDescriptor], Any]


def _write_scalar(message: Message, name: str, value: Any) -> None:
    setattr(message, name, value)


def _read_scalar(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    if descriptor.has_presence and not message.HasField(name):
        return UNSET
    return getattr(message, name)


def _read_text(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    value = _read_scalar(message, name, descriptor)
    if value is not UNSET and "\0" in value:
        raise InvalidArgument(f"{name} must not contain NUL characters", name)
    return value


def _read_double(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    value = _read_scalar(message, name, descriptor)
    if value is not UNSET and not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number", name)
    return value


def _write_uuid(message: Message, name: str, value: uuid.UUID) -> None:
    setattr(message, name, str(value))


def _read_uuid(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    text = getattr(message, name)
    return parse_uuid(text, name) if text else UNSET


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _write_timestamp(message: Message, name: str, value: datetime.datetime) -> None:
    # Timestamp.FromDatetime goes through a time tuple in pure Python; this is
    # the same arithmetic in C, and it counts for every row of every page.
    since = value - EPOCH
    timestamp = getattr(message, name)
    timestamp.seconds = since.days * 86400 + since.seconds
    timestamp.nanos = since.microseconds * 1000


def _read_timestamp(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    if not message.HasField(name):
        return UNSET
    try:
        return getattr(message, name).ToDatetime(tzinfo=datetime.timezone.utc)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{name} is not a valid timestamp", name) from None


def _write_struct(message: Message, name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"{name} holds a JSON {type(value).__name__}, expected an object")
    struct = getattr(message, name)
    struct.SetInParent()  # An empty object is still present, unlike NULL.
    struct.update(value)


def _read_struct(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    if not message.HasField(name):
        return UNSET
    try:
        return {key: _python_value(value) for key, value in getattr(message, name).fields.items()}
    except ValueError:
        raise InvalidArgument(f"{name} holds a number JSON cannot represent (NaN or infinity)", name) from None


def _python_value(value: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as plain Python: json_format.MessageToDict, without its generality."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {key: _python_value(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_python_value(item) for item in value.list_value.values]
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise ValueError("not a JSON number")
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _write_vector(message: Message, name: str, value: Any) -> None:
    getattr(message, name).extend(value)


def _read_vector(message: Message, name: str, descriptor: FieldDescriptor) -> Any:
    values = getattr(message, name)
    return checked_embedding(values, name) if values else UNSET


def _enum_codec(descriptor: EnumDescriptor) -> Codec:
    prefix = enum_prefix(descriptor)
    numbers = {value.name[len(prefix):]: value.number for value in descriptor.values}
    names = {number: name for name, number in numbers.items()}

    def write(message: Message, name: str, value: str) -> None:
        setattr(message, name, numbers[value])

    def read(message: Message, name: str, field: FieldDescriptor) -> Any:
        number = _read_scalar(message, name, field)
        if number is UNSET or number == 0:
            return UNSET
        if number not in names:
            raise InvalidArgument(f"{name} has no value numbered {number}", name)
        return names[number]

    return Codec(write, read)


# Column kind -> codec; enums have one codec per enum (``_enum_codec``).
CODECS: dict[Kind, Codec] = {
    Kind.ID: Codec(_write_uuid, _read_uuid),
    Kind.TEXT: Codec(_write_scalar, _read_text),
    Kind.INTEGER: Codec(_write_scalar, _read_scalar),
    Kind.BOOLEAN: Codec(_write_scalar, _read_scalar),
    Kind.NUMBER: Codec(_write_scalar, _read_double),
    Kind.TIMESTAMP: Codec(_write_timestamp, _read_timestamp),
    Kind.JSON: Codec(_write_struct, _read_struct),
    Kind.EMBEDDING: Codec(_write_vector, _read_vector),
}


def proto_name(field: Field) -> str:
    """The proto field of a column: a foreign key ``workflow`` is ``workflow_id``."""
    return field.column_name


@dataclass(frozen=True)
class ColumnCodec:
    field: Field
    name: str
    descriptor: FieldDescriptor
    codec: Codec


class MessageCodec:
    """Reads and writes every column of ``model`` on messages of ``message_class``."""

    def __init__(self, model: type[models.BaseModel], message_class: type[Message]) -> None:
        self.model = model
        self.message_class = message_class
        descriptor: Descriptor = message_class.DESCRIPTOR
        self.columns: dict[str, ColumnCodec] = {}
        for field in model._meta.sorted_fields:
            name = proto_name(field)
            proto_field = descriptor.fields_by_name.get(name)
            if proto_field is None:
                raise LookupError(f"{descriptor.name} has no field {name!r} for {model.__name__}")
            self.columns[name] = ColumnCodec(field, name, proto_field, self._codec_for(field, proto_field))

    @staticmethod
    def _codec_for(field: Field, proto_field: FieldDescriptor) -> Codec:
        kind = kind_of(field)
        return _enum_codec(proto_field.enum_type) if kind is Kind.ENUM else CODECS[kind]

    def to_message(self, record: dict[str, Any], names: Iterable[str] | None = None) -> Message:
        """A message from a row keyed by column name, limited to the columns ``names`` if given."""
        message = self.message_class()
        for column in self.columns.values() if names is None else map(self.columns.__getitem__, names):
            value = record.get(column.name)
            if value is not None:
                column.codec.write(message, column.name, value)
        return message

    def read(self, message: Message, names: Iterable[str]) -> dict[str, Any]:
        """The named fields of ``message`` as column values, ``UNSET`` where not given."""
        return {
            name: self.columns[name].codec.read(message, name, self.columns[name].descriptor)
            for name in names
        }

