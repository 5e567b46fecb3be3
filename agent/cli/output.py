"""How rigctl prints: narrow tables for people, JSON for scripts.

JSON carries every field of the message (an absent reading is null, never left out), numbers as
numbers (64-bit too), enum values by the same short names the tables use ("gpu", "hashing"),
times as ISO 8601, and a "schema" key naming its version. A stream prints one compact object per
line, so `rigctl telemetry --watch --json | jq` works.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import Message

from rigapi import pb
from rigapi.convert import enum_prefix

SCHEMA = "rigctl/v1"
NA = "-"


def enum_names(enum: Any) -> dict[int, str]:
    """Proto enum values by their short names: DEVICE_KIND_GPU -> "gpu"."""
    prefix = enum_prefix(enum.DESCRIPTOR.name) + "_"
    return {number: name.removeprefix(prefix).lower() for name, number in enum.items()}


KIND = enum_names(pb.DeviceKind)
HEALTH = enum_names(pb.HealthState)
WORKLOAD = enum_names(pb.WorkloadKind)
WORKLOAD_STATE = enum_names(pb.WorkloadState)
OP_STATE = enum_names(pb.OperationState)
PHASE = enum_names(pb.SwitchPhase)


def to_dict(msg: Message) -> dict[str, Any]:
    """Every field of `msg`, unset optional ones as None."""
    return {f.name: _field(msg, f) for f in msg.DESCRIPTOR.fields}


def _field(msg: Message, field: Any) -> Any:
    value = getattr(msg, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _value(v, value_field) for k, v in value.items()}
    if field.is_repeated:
        return [_value(v, field) for v in value]
    if field.has_presence and not msg.HasField(field.name):
        return None
    return _value(value, field)


def _value(value: Any, field: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return value.ToJsonString()
        return to_dict(value)
    if field.enum_type is not None:
        prefix = enum_prefix(field.enum_type.name) + "_"
        known = field.enum_type.values_by_number.get(value)
        return known.name.removeprefix(prefix).lower() if known else value
    return value


def emit_json(kind: str, payload: Message | dict[str, Any], stream: bool = False) -> None:
    """One JSON document: indented for a single answer, one compact line in a stream."""
    data = to_dict(payload) if isinstance(payload, Message) else payload
    document = {"schema": SCHEMA, "kind": kind, **data}
    if stream:
        print(json.dumps(document, separators=(",", ":")), flush=True)
    else:
        print(json.dumps(document, indent=2))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def opt(msg: Message, name: str, fmt: Any) -> str:
    """A field as text, or "-" when the device did not give it."""
    return str(fmt(getattr(msg, name))) if msg.HasField(name) else NA


def si(value: float, unit: str) -> str:
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"),
                          (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def watts(value: float) -> str:
    return f"{value:,.0f} W" if value < 10_000 else f"{value / 1000:,.1f} kW"


def mib(n: int) -> str:
    return f"{n >> 20}MiB"


def short_id(device_id: str) -> str:
    """What a table shows of an id, and what --device accepts back (a unique prefix of the
    part after the kind): GPU-e2b99e58, 127.0.0.1:4028, pocl-3-1-debian/0."""
    rest = device_id.split("/", 1)[-1]
    if rest.startswith("GPU-"):
        return rest[:12]
    return rest


def clear_screen() -> None:
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J")
