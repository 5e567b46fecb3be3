"""The error contract of rig.v1, for rigd and its callers alike.

Every non-OK status rigd sends carries, in its standard `google.rpc.Status` details
(`grpc-status-details-bin`), one `google.rpc.ErrorInfo` with domain DOMAIN, an UPPER_SNAKE
`reason`, and metadata: "party", one of PARTIES, who caused the error and must act; "device_id"
where a device is involved; "firmware_says", the firmware's own words (clipped); "limit", the
setting a RESOURCE_EXHAUSTED refusal hit. Read them with `error_info(rpc_error)`.
"""

from __future__ import annotations

from typing import Any

from google.rpc import error_details_pb2
from grpc_status import rpc_status

DOMAIN = "rig.v1"
# rigd itself; the caller (its request, its identity, its limits); the device (unreachable,
# silent, garbled); the device's firmware (it understood and said no); a mining pool.
PARTIES = ("rigd", "caller", "device", "firmware", "pool")


def error_info(error: Any) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a failed call (a grpc.RpcError that is also a grpc.Call, as the sync
    and asyncio stubs raise), None when the status carries none (not rigd's, or not rig.v1)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # details that contradict the status line: not a status rigd made
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return info
    return None
