"""Every string field of every request, bounded and shape-checked before the servicer sees it.

One row per field (FIELDS, keyed "Message.field"); a request field without a row is a bug caught
by the tests, so a new field cannot arrive unchecked. The README's "Limits of the API" table and
the proto's comments say the same (tests compare them). A refusal is INVALID_ARGUMENT naming the
field; what the caller sent is never echoed whole.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from agent.core.errors import Code, Refused
from agent.core.pool_url import MAX_URL_CHARS, parse_pool_url
from agent.runtime.leases import MAX_HOLDER_CHARS
from agent.runtime.switcher import MAX_DEVICES_PER_REQUEST
from hal.errors import InvalidArgument

MAX_DEVICE_IDS = 10_000  # a read may name this many devices (the request size bounds it too)
MAX_POOL_URLS = 8


@dataclass(frozen=True, slots=True)
class Shape:
    name: str  # as the docs say it
    pattern: re.Pattern[str] | None = None  # the whole value must match, else any text


# Printable text: any character but controls, format characters (bidi overrides among them),
# surrogates and unassigned ones.
TEXT = Shape("printable text")
DEVICE_ID = Shape("printable ASCII, no spaces", re.compile(r"[!-~]+"))
ID = Shape("letters, digits, `.` `_` `-`", re.compile(r"[A-Za-z0-9._-]+"))
NAME = Shape("letters, digits, `.` `_` `+` `-`", re.compile(r"[A-Za-z0-9._+-]+"))
POOL_URL = Shape("stratum+tcp://host:port (host: DNS name ≤ 253, IPv4 or [IPv6]; port "
                 "1 .. 65535)")


@dataclass(frozen=True, slots=True)
class Limit:
    max_chars: int
    shape: Shape
    max_items: int = 1  # repeated fields: how many values
    secret: bool = False  # never echoed, not even clipped


FIELDS: dict[str, Limit] = {
    "GetTelemetryRequest.device_ids": Limit(300, DEVICE_ID, MAX_DEVICE_IDS),
    "StreamTelemetryRequest.device_ids": Limit(300, DEVICE_ID, MAX_DEVICE_IDS),
    "RunDiagnosticsRequest.device_ids": Limit(300, DEVICE_ID, MAX_DEVICE_IDS),
    "SetWorkloadRequest.device_ids": Limit(300, DEVICE_ID, MAX_DEVICES_PER_REQUEST),
    "SetPowerLimitRequest.device_id": Limit(300, DEVICE_ID),
    "DeviceActionRequest.device_id": Limit(300, DEVICE_ID),
    "AcquireLeaseRequest.holder": Limit(MAX_HOLDER_CHARS, TEXT),
    "RenewLeaseRequest.lease_id": Limit(64, ID),
    "ReleaseLeaseRequest.lease_id": Limit(64, ID),
    "GetOperationRequest.operation_id": Limit(64, ID),
    "WatchOperationRequest.operation_id": Limit(64, ID),
    "SetWorkloadRequest.request_id": Limit(128, TEXT),
    "HashingSpec.algorithm": Limit(32, NAME),
    "HashingSpec.pool_urls": Limit(MAX_URL_CHARS, POOL_URL, MAX_POOL_URLS),
    "HashingSpec.user": Limit(256, TEXT),
    "HashingSpec.password": Limit(256, TEXT, secret=True),
    "InferenceSpec.profile": Limit(64, NAME),
    "InferenceSpec.model": Limit(512, TEXT),
    "CurtailRequest.reason": Limit(200, TEXT),
}


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c)[0] == "C" for c in text)


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}…"


def _check_value(where: str, limit: Limit, value: str) -> None:
    if len(value) > limit.max_chars:
        raise Refused(Code.INVALID_ARGUMENT,
                      f"{where}: at most {limit.max_chars} characters, got {len(value)}",
                      reason="FIELD_TOO_LONG")
    shown = "" if limit.secret else f" {_shown(value)}"
    if limit.shape is POOL_URL:
        try:
            parse_pool_url(value)
        except InvalidArgument as exc:
            raise Refused(Code.INVALID_ARGUMENT, f"{where}: {exc}",
                          reason="FIELD_MALFORMED") from None
        return
    pattern = limit.shape.pattern
    if (pattern is not None and value and not pattern.fullmatch(value)) \
            or not _printable(value):
        raise Refused(Code.INVALID_ARGUMENT, f"{where}:{shown} is not {limit.shape.name}",
                      reason="FIELD_MALFORMED")


def check(request: Message) -> None:
    """Refused (INVALID_ARGUMENT) at the first string field out of bounds, at any depth."""
    descriptor = request.DESCRIPTOR
    for field, value in request.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if field.is_repeated else [value]):
                check(item)
            continue
        if field.type != FieldDescriptor.TYPE_STRING:
            continue
        key = f"{descriptor.name}.{field.name}"
        limit = FIELDS[key]
        values = list(value) if field.is_repeated else [value]
        if len(values) > limit.max_items:
            raise Refused(Code.INVALID_ARGUMENT,
                          f"{key}: at most {limit.max_items} values, got {len(values)}",
                          reason="FIELD_TOO_LONG")
        for index, item in enumerate(values):
            _check_value(f"{key}[{index}]" if field.is_repeated else key, limit, item)


def table() -> list[str]:
    """The limits as the README's table rows."""
    rows = []
    for key, limit in FIELDS.items():
        count = f"{limit.max_items} × " if limit.max_items > 1 else ""
        rows.append(f"| `{key}` | {count}{limit.max_chars} | {limit.shape.name} |")
    return rows
