"""Protocol-buffers wire format by hand, for the Braiins OS simulator's gRPC replies.

Deliberately not the protobuf library with hal/asic/bos_v1.proto: the simulator writes each
message field by field from the public API's field numbers, so a mistake in rigd's .proto
cannot pass both sides of a test; pyasic, decoding with its own copy of the upstream schema,
checks what is written here. Only what the simulator sends and reads: varints (uint, bool,
enum), doubles, strings and nested messages; proto3 rules (zero scalars are left out unless
the field has presence; a nested message is always written, even empty).
"""

from __future__ import annotations

import struct
from collections import defaultdict

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int64/enum values: two's complement on 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def uint(number: int, value: int | bool, *, presence: bool = False) -> bytes:
    """A uint32/uint64/bool/enum field; 0 is omitted unless the field has presence."""
    if not value and not presence:
        return b""
    return _key(number, VARINT) + _varint(int(value))


def double(number: int, value: float, *, presence: bool = False) -> bytes:
    if not value and not presence:
        return b""
    return _key(number, FIXED64) + struct.pack("<d", float(value))


def string(number: int, text: str, *, presence: bool = False) -> bytes:
    if not text and not presence:
        return b""
    return message(number, text.encode())


def message(number: int, *parts: bytes) -> bytes:
    """A nested message (or bytes) field, written even when empty."""
    payload = b"".join(parts)
    return _key(number, LENGTH) + _varint(len(payload)) + payload


def repeated(number: int, items: list[bytes]) -> bytes:
    return b"".join(message(number, item) for item in items)


Fields = dict[int, list[int | bytes]]


def decode(data: bytes) -> Fields:
    """Field number -> values in order: varints as int, everything else as its raw bytes
    (a nested message or string's payload, a fixed64/fixed32's 8/4 bytes)."""
    fields: Fields = defaultdict(list)
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, position = _read_varint(data, position)
            fields[number].append(value)
        elif wire_type == FIXED64:
            fields[number].append(data[position:position + 8])
            position += 8
        elif wire_type == LENGTH:
            length, position = _read_varint(data, position)
            fields[number].append(data[position:position + length])
            position += length
        elif wire_type == FIXED32:
            fields[number].append(data[position:position + 4])
            position += 4
        else:
            raise ValueError(f"wire type {wire_type} of field {number} is not supported")
        if position > len(data):
            raise ValueError("message truncated")
    return fields


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def first(fields: Fields, number: int, default: int | bytes = 0) -> int | bytes:
    values = fields.get(number)
    return values[-1] if values else default  # proto3: the last one wins
