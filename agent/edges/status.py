"""Every non-OK status rigd sends, made in one place: the gRPC code, a message for people, and a
standard `google.rpc.Status` detail with one `google.rpc.ErrorInfo` for programs.

ErrorInfo: domain "rig.v1"; `reason` an UPPER_SNAKE word; metadata "party" says who caused the
error and must act (PARTIES), "device_id" where a device is involved, "firmware_says" the
firmware's own words (clipped), and "limit" the setting a RESOURCE_EXHAUSTED refusal hit.
The contract (domain, parties) is rigapi.status's; a client reads the party from there, never
from the message text.

Two tables map what the layers raise: REFUSALS for agent.core.errors.Refused (its Code), and
HAL_ERRORS for the HAL's errors (hal.errors), first match wins (subclasses first). A device's or
firmware's failure is never INTERNAL: a miner that refuses the connection or does not answer is
UNAVAILABLE (party device), a firmware that says no is FAILED_PRECONDITION (party firmware).
INTERNAL is left for rigd's own bugs (party rigd).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from agent.core.errors import Code, Refused
from hal import errors
from rigapi.status import DOMAIN

MAX_MESSAGE_CHARS = 1000
MAX_FIRMWARE_SAYS_CHARS = 200

# Code -> (gRPC status, the party by default)
REFUSALS: dict[Code, tuple[grpc.StatusCode, str]] = {
    Code.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, "caller"),
    Code.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, "caller"),
    Code.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, "caller"),
    Code.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, "caller"),
    Code.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, "caller"),
    Code.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, "caller"),
    Code.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, "rigd"),
}

# HAL error -> (gRPC status, reason, party); the first class that matches wins.
HAL_ERRORS: tuple[tuple[type[errors.HalError], grpc.StatusCode, str, str], ...] = (
    (errors.FirmwareRefused, grpc.StatusCode.FAILED_PRECONDITION, "FIRMWARE_REFUSED",
     "firmware"),
    (errors.ProtocolError, grpc.StatusCode.UNAVAILABLE, "DEVICE_GARBLED_REPLY", "device"),
    (errors.DeviceLost, grpc.StatusCode.UNAVAILABLE, "DEVICE_UNREACHABLE", "device"),
    (errors.Timeout, grpc.StatusCode.UNAVAILABLE, "DEVICE_TIMEOUT", "device"),
    (errors.NotSupported, grpc.StatusCode.FAILED_PRECONDITION, "NOT_SUPPORTED", "device"),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, "DEVICE_REFUSED_VALUE",
     "caller"),
    # rigd's process lacks a privilege (the message says which): the operator fixes rigd
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, "RIGD_LACKS_PRIVILEGE",
     "rigd"),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, "DEVICE_UNAVAILABLE", "device"),
)


def clip(text: str, limit: int = 256) -> str:
    """Text as it may be echoed: at most `limit` characters, with the size."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated, {len(text)} chars]"


@dataclass(frozen=True, slots=True)
class Failure:
    """One non-OK status: what a caller gets back."""

    code: grpc.StatusCode
    message: str
    reason: str
    party: str
    device_id: str = ""
    firmware_says: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # e.g. {"limit": "server.max_streams"}

    def error_info(self) -> error_details_pb2.ErrorInfo:
        metadata = {"party": self.party, **self.extra}
        if self.device_id:
            metadata["device_id"] = self.device_id
        if self.firmware_says:
            metadata["firmware_says"] = clip(self.firmware_says, MAX_FIRMWARE_SAYS_CHARS)
        return error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=metadata)

    def status(self) -> grpc.Status:
        """The gRPC status with its details (trailing metadata grpc-status-details-bin)."""
        detail = any_pb2.Any()
        detail.Pack(self.error_info())
        message = clip(self.message, MAX_MESSAGE_CHARS)
        proto = status_pb2.Status(code=self.code.value[0], message=message, details=[detail])
        return rpc_status.to_status(proto)


class DeviceFailed(Exception):
    """A HAL error raised while serving a call on one device: said with the device's id."""

    def __init__(self, device_id: str, error: errors.HalError) -> None:
        super().__init__(str(error))
        self.device_id = device_id
        self.error = error


def refused(exc: Refused) -> Failure:
    code, party = REFUSALS[exc.code]
    return Failure(code, str(exc), exc.reason, exc.party or party)


def of_hal(exc: errors.HalError, device_id: str = "") -> Failure:
    for cls, code, reason, party in HAL_ERRORS:
        if isinstance(exc, cls):
            says = exc.firmware_says if isinstance(exc, errors.FirmwareRefused) else ""
            return Failure(code, str(exc), reason, party, device_id, says)
    return Failure(grpc.StatusCode.INTERNAL, f"internal error: {exc}", "INTERNAL", "rigd",
                   device_id)


def internal(exc: BaseException) -> Failure:
    """A bug in rigd: said as rigd's, without the traceback (that goes to rigd's log)."""
    return Failure(grpc.StatusCode.INTERNAL, f"internal error in rigd: {type(exc).__name__}",
                   "INTERNAL", "rigd")


def by_caller(code: grpc.StatusCode, message: str, reason: str, **extra: str) -> Failure:
    """A refusal made at the edge itself (authentication, malformed bodies, the streams
    budget): the caller's doing."""
    return Failure(code, message, reason, "caller", extra=dict(extra))


def failure_of(exc: BaseException, device_id: str = "") -> Failure:
    """What rigd says for an exception raised while serving a call."""
    if isinstance(exc, Refused):
        return refused(exc)
    if isinstance(exc, DeviceFailed):
        return of_hal(exc.error, exc.device_id)
    if isinstance(exc, errors.HalError):
        return of_hal(exc, device_id)
    return internal(exc)


async def abort(context: Any, failure: Failure) -> NoReturn:
    """End the call with `failure` (raises, as context.abort does)."""
    status = failure.status()
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")
