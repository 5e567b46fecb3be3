"""What can go wrong calling a rig: a small set of exceptions mapped from gRPC status codes.

Every error keeps what rigd said: its status code, its message, and the structured detail rigd
attaches to a refusal (a `google.rpc.Status` carrying one `google.rpc.ErrorInfo` of domain
"rig.v1": a reason in UPPER_SNAKE and metadata naming the party that failed, `party` = rigd,
caller, device, firmware or pool, with `device_id` and `firmware_says`). When rigd attaches
none (an older rigd), the party comes from the status code and from whether rigd answered at
all (the channel's state when the call failed, the time it took against its deadline), never
from the message's text.

    RigError                   any failure of a call; .code .party .reason .device_id ...
      Unreachable              no answer from rigd at all: nothing listens, the connection or
                               the TLS handshake was refused, or rigd went away mid-call
      Timeout                  DEADLINE_EXCEEDED: .answered says whether rigd said so (a device
                               it waited on) or the caller's deadline passed with no answer
      NotAllowed               PERMISSION_DENIED, UNAUTHENTICATED
      InvalidArgument          INVALID_ARGUMENT, OUT_OF_RANGE
      NotFound                 NOT_FOUND
      Refused                  FAILED_PRECONDITION, ALREADY_EXISTS, ABORTED, RESOURCE_EXHAUSTED,
                               UNIMPLEMENTED
        LeaseLost              refused here, before any call: the lease this client held is lost
      Unavailable              UNAVAILABLE from rigd itself (a device, or rigd still starting)
      Failed                   INTERNAL, UNKNOWN, DATA_LOSS, CANCELLED and anything else
    EndpointError              a bad endpoint (mTLS half given, an unreadable file): no call made
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

DOMAIN = "rig.v1"
PARTIES = ("rigd", "caller", "device", "firmware", "pool")
# The party when rigd attached no ErrorInfo, where the code alone says it.
_CALLERS_FAULT = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS,
})
_RIGDS_FAULT = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                          grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.DATA_LOSS})


class EndpointError(ValueError):
    """The endpoint cannot be used as given; no call was made. `missing` names the mTLS parts
    not given (ca, cert, key), `path` a file that could not be read."""

    def __init__(self, message: str, missing: tuple[str, ...] = (), path: str = "") -> None:
        super().__init__(message)
        self.missing = missing
        self.path = path


class RigError(Exception):
    """A call to one rig failed. `str()` is rigd's own message."""

    def __init__(self, message: str, *, code: grpc.StatusCode, rig: str = "", party: str = "",
                 reason: str = "", device_id: str = "", firmware_says: str = "",
                 metadata: Mapping[str, str] | None = None, answered: bool = True,
                 status: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.rig = rig  # where the call went ("unix:/run/rigd/rigd.sock", "10.0.0.5:50051")
        self.party = party  # one of PARTIES; "" when neither rigd nor the code says
        self.reason = reason  # ErrorInfo.reason, e.g. "DEVICE_UNREACHABLE"; "" without details
        self.device_id = device_id
        self.firmware_says = firmware_says
        self.metadata: dict[str, str] = dict(metadata or {})
        self.answered = answered  # whether rigd itself answered with this status
        self.status = status  # the google.rpc.Status rigd attached (every detail), or None

    @property
    def detailed(self) -> bool:
        """Whether rigd attached its structured detail (an ErrorInfo of domain rig.v1)."""
        return bool(self.reason)

    def __repr__(self) -> str:
        parts = [f"{self.code.name}", repr(self.message)]
        parts += [f"{k}={v!r}" for k, v in (("rig", self.rig), ("party", self.party),
                                             ("reason", self.reason),
                                             ("device_id", self.device_id)) if v]
        return f"{type(self).__name__}({', '.join(parts)})"


class Unreachable(RigError):
    """rigd did not answer at all: nothing listens, the connection or the TLS handshake was
    refused, or rigd went away during the call."""


class Timeout(RigError):
    """DEADLINE_EXCEEDED. `answered` False: the caller's deadline passed with no answer from
    rigd (`connected` says whether a connection to it was up); True: rigd answered that
    something it waited on timed out (a device, with party and device_id when rigd says so)."""

    def __init__(self, message: str, *, connected: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.connected = connected


class NotAllowed(RigError):
    """PERMISSION_DENIED or UNAUTHENTICATED: this caller may not do that."""


class InvalidArgument(RigError):
    """INVALID_ARGUMENT or OUT_OF_RANGE: the request itself is wrong; nothing changed."""


class NotFound(RigError):
    """NOT_FOUND: no such device, operation or lease."""


class Refused(RigError):
    """rigd refused in the rig's present state: FAILED_PRECONDITION (leased by another, a
    device that cannot, a switch in progress), ALREADY_EXISTS, ABORTED, RESOURCE_EXHAUSTED,
    UNIMPLEMENTED."""


class LeaseLost(Refused):
    """Refused by this client before calling rigd: the lease whose fencing token the call would
    carry is lost (not renewed in time, taken over, or gone with a rigd restart)."""

    def __init__(self, message: str, *, rig: str = "") -> None:
        super().__init__(message, code=grpc.StatusCode.FAILED_PRECONDITION, rig=rig,
                         party="caller", answered=False)


class Unavailable(RigError):
    """UNAVAILABLE from rigd itself: a device it could not reach, or rigd not ready yet."""


class Failed(RigError):
    """INTERNAL, UNKNOWN, DATA_LOSS, CANCELLED or a code this client does not know."""


_CLASSES: dict[grpc.StatusCode, type[RigError]] = {
    grpc.StatusCode.PERMISSION_DENIED: NotAllowed,
    grpc.StatusCode.UNAUTHENTICATED: NotAllowed,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Refused,
    grpc.StatusCode.ALREADY_EXISTS: Refused,
    grpc.StatusCode.ABORTED: Refused,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Refused,
    grpc.StatusCode.UNIMPLEMENTED: Refused,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
}


def error_info(exc: grpc.RpcError) -> tuple[str, dict[str, str], Any] | None:
    """(reason, metadata, the whole google.rpc.Status) of the rig.v1 ErrorInfo in the call's
    status details, or None.

    grpcio-status is imported here, on the error path only: a command whose call succeeds
    never loads it."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    raw = next((value for key, value in trailing or () if key == "grpc-status-details-bin"),
               None)
    if raw is None:
        return None
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        # grpcio-status wants the Status's message to be the call's, word for word; a server
        # that clips the call's text would lose its details. The code must still agree.
        status = status_pb2.Status.FromString(raw)
        if status.code != exc.code().value[0]:
            return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return info.reason, dict(info.metadata), status
    return None


def from_rpc_error(exc: grpc.RpcError, *, rig: str, connected: bool, elapsed_s: float,
                   timeout_s: float | None) -> RigError:
    """The RigError for a failed call.

    `connected`: whether the channel was READY when the call failed (rigd answered; a refused
    connection or handshake leaves it in TRANSIENT_FAILURE or CONNECTING). `elapsed_s` against
    `timeout_s` tells a deadline this client's own timer ended from one rigd reported."""
    code: grpc.StatusCode = exc.code()
    message = exc.details() or code.name.lower().replace("_", " ")
    found = error_info(exc)
    if found is not None:
        reason, metadata, status = found
        kwargs: dict[str, Any] = dict(
            code=code, rig=rig, party=metadata.get("party", ""), reason=reason,
            device_id=metadata.get("device_id", ""),
            firmware_says=metadata.get("firmware_says", ""), metadata=metadata, status=status)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return Timeout(message, connected=True, **kwargs)
        return _CLASSES.get(code, Failed)(message, **kwargs)
    if code == grpc.StatusCode.UNAVAILABLE and not connected:
        return Unreachable(message, code=code, rig=rig, party="rigd", answered=False)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        # Our own timer: the call took its whole deadline. Otherwise rigd said it (a device).
        ours = timeout_s is not None and elapsed_s >= timeout_s * 0.98
        if ours:
            message = f"no answer from rigd within {timeout_s:.3g} s" + (
                "" if connected else " (no connection to it could be made)")
        return Timeout(message, code=code, rig=rig, party="rigd" if ours else "",
                       answered=not ours, connected=connected)
    party = "caller" if code in _CALLERS_FAULT else "rigd" if code in _RIGDS_FAULT else ""
    return _CLASSES.get(code, Failed)(message, code=code, rig=rig, party=party)


RETRYABLE: tuple[type[RigError], ...] = (Unreachable, Timeout, Unavailable)
"""What may pass by itself (a restart, a blip); everything else is an answer."""
