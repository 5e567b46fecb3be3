"""The HAL's error set: small on purpose, each maps to exactly one gRPC status in the agent.

Backends translate their library's errors (NVML codes, OpenCL errors, firmware replies) into
these, so callers never need to know which backend raised.
"""

from __future__ import annotations


class HalError(Exception):
    """Base of every error the HAL raises on purpose."""


class DeviceLost(HalError):
    """The device stopped answering (GPU fell off the bus, miner unreachable). It may come back."""


class NotSupported(HalError):
    """This device or firmware cannot do that; never a silent no-op."""


class PermissionDenied(HalError):
    """The operation needs privileges the process lacks (the message says which)."""


class InvalidArgument(HalError):
    """A caller's value is out of range or malformed; device state is unchanged."""


class Timeout(HalError):
    """The device did not answer within the allotted time."""


class Unavailable(HalError):
    """A backend's library or hardware is missing, or a device is busy elsewhere."""


class ProtocolError(HalError):
    """A device answered with something we cannot parse; `raw` keeps the bytes for diagnosis."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw

    def __str__(self) -> str:
        base = super().__str__()
        if not self.raw:
            return base
        preview = self.raw[:120]
        suffix = "…" if len(self.raw) > len(preview) else ""
        return f"{base} (raw {len(self.raw)} bytes: {preview!r}{suffix})"


class FirmwareRefused(ProtocolError):
    """The firmware understood the request and said no (a cgminer-API `STATUS=E` reply, e.g.
    "Invalid pool id 5 - range is 0 - 0", "No ASCs"): not garbled bytes. `firmware_says` is
    the firmware's own message."""

    def __init__(self, message: str, firmware_says: str, raw: bytes = b"") -> None:
        super().__init__(message, raw)
        self.firmware_says = firmware_says


__all__ = [
    "DeviceLost",
    "FirmwareRefused",
    "HalError",
    "InvalidArgument",
    "NotSupported",
    "PermissionDenied",
    "ProtocolError",
    "Timeout",
    "Unavailable",
]
