"""Typed records to and from JSON (dexclient.records) give what protobuf's json_format gives.

The oracle is json_format itself, with the options the API is defined by
(``always_print_fields_with_no_presence``, ``unquote_int64_if_possible``),
over random instances of every message of the contracts: plain records take
the fast path, the others (enums, timestamps, bytes) fall back to json_format.
"""

from __future__ import annotations

import random
from typing import Any, cast

import pytest
from google.protobuf import json_format, message
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from dexclient import records
from dexengine.v1 import common_pb2, notifier_pb2, orders_pb2, router_pb2

MESSAGES = sorted(
    {
        descriptor.full_name: cls
        for module in (common_pb2, orders_pb2, router_pb2, notifier_pb2)
        for name, descriptor in module.DESCRIPTOR.message_types_by_name.items()
        for cls in [getattr(module, name)]
    }.items()
)
LARGE = [0, 1, 2**31 - 1, 2**53, 2**53 + 1, 2**62 + 3, 2**64 - 1]


def _fill(target: message.Message, rng: random.Random, depth: int = 0) -> None:
    for field in cast(Descriptor, target.DESCRIPTOR).fields:  # upb's descriptor type is the same object at runtime
        if rng.random() < 0.3:
            continue  # unset: defaults and presence both matter
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].cpp_type == FieldDescriptor.CPPTYPE_STRING:
                getattr(target, field.name).update({f"k{i}": f"v{rng.random()}" for i in range(rng.randint(0, 3))})
            continue
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                getattr(target, field.name).FromSeconds(rng.randint(0, 2**34))
            elif depth < 3 and field.is_repeated:
                for _ in range(rng.randint(0, 3)):
                    _fill(getattr(target, field.name).add(), rng, depth + 1)
            elif depth < 3:
                getattr(target, field.name).SetInParent()
                _fill(getattr(target, field.name), rng, depth + 1)
            continue
        if field.is_repeated:
            continue
        setattr(target, field.name, _value(field, rng))


def _value(field: FieldDescriptor, rng: random.Random) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return rng.randbytes(8)
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return rng.choice(["", "149.86", "SOL → USDC", 'quote "x"'])
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return rng.choice([v.number for v in field.enum_type.values])
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32):
        return rng.choice([0, 1, 7, 2**31 - 1])
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return rng.choice(LARGE[:-1] if field.cpp_type == FieldDescriptor.CPPTYPE_INT64 else LARGE)
    if field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return rng.choice([0.0, 1.5])
    raise AssertionError(f"no value for {field.full_name}")


def _oracle(value: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(value, always_print_fields_with_no_presence=True, unquote_int64_if_possible=True)


@pytest.mark.parametrize(("name", "cls"), MESSAGES, ids=[name for name, _ in MESSAGES])
def test_to_json_and_parse_are_json_formats(name: str, cls: type[message.Message]) -> None:
    rng = random.Random(name)
    for _ in range(60):
        original = cls()
        _fill(original, rng)
        printed = records.to_json(original)
        assert printed == _oracle(original)
        parsed = cls()
        records.parse(printed, parsed)
        assert parsed == original
        reference = cls()
        json_format.ParseDict({**printed, "someFutureField": 1}, reference, ignore_unknown_fields=True)
        ours = cls()
        records.parse({**printed, "someFutureField": 1}, ours)
        assert ours == reference, "a key it does not know is ignored, as json_format ignores it"


def test_the_records_of_the_api_take_the_fast_path() -> None:
    cls: type[message.Message]
    for cls in (common_pb2.Routing, common_pb2.Execution, common_pb2.Trigger, common_pb2.RoutingEvent):
        assert records._plan(cls.DESCRIPTOR) is not None, cls.DESCRIPTOR.full_name
    for cls in (common_pb2.Order, common_pb2.EventData, common_pb2.SignedTransaction):
        assert records._plan(cls.DESCRIPTOR) is None, "enums, timestamps and bytes go to json_format"


def test_parse_reads_proto_field_names_and_leaves_nulls_unset() -> None:
    execution = common_pb2.Execution()
    records.parse({"quoted_out": "1.5", "landedAtMs": "12", "slot": None, "fee_lamports": 5000}, execution)
    assert execution.quoted_out == "1.5" and execution.landed_at_ms == 12 and execution.fee_lamports == 5000
    assert not execution.HasField("slot")
