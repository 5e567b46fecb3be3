"""How rigctl prints: narrow tables for people, JSON for scripts.

JSON carries every field of the message (an absent reading is null, never left out), numbers as
numbers (64-bit too), enum values by the same short names the tables use ("gpu", "hashing"),
times as ISO 8601, and a "schema" key naming its version. A stream prints one compact object per
line, so `rigctl telemetry --watch --json | jq` works.

The client library hands rigctl dataclasses; JSON is the rig.v1 message they came from, made
again by rigapi.convert (the round trip is exact: tests/agent/test_convert.py), so the schema is
the API's.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from rigapi import convert, pb

if TYPE_CHECKING:
    from client.model import Inventory, LeaseInfo, Snapshot, StreamUpdate

SCHEMA = "rigctl/v1"
NA = "-"


def enum_names(enum: Any) -> dict[int, str]:
    """Proto enum values by their short names: DEVICE_KIND_GPU -> "gpu"."""
    prefix = convert.enum_prefix(enum.DESCRIPTOR.name) + "_"
    return {number: name.removeprefix(prefix).lower() for name, number in enum.items()}


def word(member: enum.Enum | None) -> str:
    """An enum member as the tables name it ("gpu", "hashing", "rolled_back"); "unspecified"
    for a value this build does not know, and for a health nobody reported (the API's own
    name for it)."""
    if member is None or member.name == "UNKNOWN":
        return "unspecified"
    return str(member.value)


def opt(value: Any, fmt: Callable[[Any], Any]) -> str:
    """A reading as text, or "-" when the device did not give it."""
    return NA if value is None else str(fmt(value))


def utc(unix_s: float, fmt: str) -> str:
    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime(fmt)


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
        prefix = convert.enum_prefix(field.enum_type.name) + "_"
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


# ---- the client's dataclasses as the messages they came from (for --json) ---------------------


def inventory_message(inv: Inventory) -> pb.GetInventoryResponse:
    msg = pb.GetInventoryResponse(
        rig_id=inv.rig_id, agent_version=inv.agent_version,
        devices=[convert.device(d.info, d.capabilities, d.health, d.workload)
                 for d in inv.devices],
        backends=[convert.backend(b) for b in inv.backends])
    if inv.curtailment is not None:
        msg.curtailment.CopyFrom(convert.curtailment(inv.curtailment))
    return msg


def telemetry_message(snapshot: Snapshot) -> pb.GetTelemetryResponse:
    msg = pb.GetTelemetryResponse(devices=[convert.reading(r) for r in snapshot.readings])
    if snapshot.rig_power is not None:
        msg.rig_power.CopyFrom(convert.rig_power(snapshot.rig_power))
    return msg


def stream_message(update: StreamUpdate) -> pb.StreamTelemetryResponse:
    msg = pb.StreamTelemetryResponse(devices=[convert.reading(r) for r in update.readings],
                                     sequence=update.sequence,
                                     dropped_count=update.dropped_count)
    if update.rig_power is not None:
        msg.rig_power.CopyFrom(convert.rig_power(update.rig_power))
    return msg


def lease_message(lease: LeaseInfo) -> pb.Lease:
    return pb.Lease(lease_id=lease.lease_id, holder=lease.holder,
                    fencing_token=lease.fencing_token,
                    expire_time=convert.timestamp(lease.expire_unix_s))
