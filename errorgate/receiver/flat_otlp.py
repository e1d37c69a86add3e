"""A "flat" copy of the OTLP schema used to find nested attribute values at C speed.

The flat copy is proto2 and gives ``ArrayValue`` and ``KeyValueList`` a required field that
never occurs on the wire, so a request parsed with it is "initialized" exactly when it holds
no nested value. Serializing it checks that in C, with no Python per attribute.
Validation uses this to skip its per-attribute walk for the (usual) requests that carry
no nested values.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from errorgate.signals import Signal

_PREFIX = "errorgate.flat."
_NESTED_CONTAINERS = {"ArrayValue", "KeyValueList"}
_MARKER_FIELD = 536870911  # the highest field number: never used by OTLP
_FILES = {
    Signal.TRACES: (
        trace_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
    ),
    Signal.LOGS: (
        logs_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest",
    ),
    Signal.METRICS: (
        metrics_service_pb2.DESCRIPTOR,
        "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest",
    ),
}


def _rename_types(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type_name.startswith(".opentelemetry."):
            field.type_name = "." + _PREFIX + field.type_name[1:]
    if message.name in _NESTED_CONTAINERS:
        # Never present on the wire, so any ArrayValue/KeyValueList in a parsed request
        # leaves the message uninitialized.
        message.field.add(
            name="errorgate_marker",
            number=_MARKER_FIELD,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
        )
    for nested in message.nested_type:
        _rename_types(nested)


def _clear_proto3_optional(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        field.ClearField("proto3_optional")
    for nested in message.nested_type:
        _clear_proto3_optional(nested)


def _add_file(pool: descriptor_pool.DescriptorPool, fd: FileDescriptor, done: set[str]) -> None:
    if fd.name in done:
        return
    for dep in fd.dependencies:
        _add_file(pool, dep, done)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    proto.name = _PREFIX + proto.name
    proto.package = _PREFIX + proto.package
    proto.syntax = "proto2"  # required fields exist only in proto2
    for message in proto.message_type:
        _clear_proto3_optional(message)
    deps = [_PREFIX + d for d in proto.dependency]
    del proto.dependency[:]
    proto.dependency.extend(deps)
    del proto.service[:]
    for message in proto.message_type:
        _rename_types(message)
    pool.Add(proto)
    done.add(fd.name)


@functools.cache
def _flat_classes() -> dict[Signal, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    done: set[str] = set()
    classes: dict[Signal, type[Message]] = {}
    for signal, (fd, name) in _FILES.items():
        _add_file(pool, fd, done)
        classes[signal] = message_factory.GetMessageClass(pool.FindMessageTypeByName(_PREFIX + name))
    return classes


def has_nested_values(signal: Signal, data: bytes) -> bool:
    """True when the serialized request may hold array/kvlist attribute values (an empty
    array counts too; the caller then simply takes the thorough path)."""
    flat = _flat_classes()[signal]()
    try:
        flat.ParseFromString(data)
        # Serializing checks required fields in C; IsInitialized() is about three times slower.
        flat.SerializeToString()
    except (DecodeError, EncodeError):
        return True
    return False
