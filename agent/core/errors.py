"""The agent's one refusal: a request rigd will not carry out, with the status that says why.

Every layer raises `Refused(Code.X, message)`; the gRPC edge turns it into a status through one
table (agent/edges/status.py). Errors from devices stay the HAL's own (hal.errors); they are
mapped at the same edge. Code names are gRPC's, so a controller can act on the code alone.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # the request itself is wrong; nothing changed
    NOT_FOUND = "NOT_FOUND"  # it names something rigd does not have
    ALREADY_EXISTS = "ALREADY_EXISTS"  # a request_id reused for another request
    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # not now: the rig's state forbids it
    PERMISSION_DENIED = "PERMISSION_DENIED"  # not for this caller (or not its lease)
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # a limit is reached
    UNAVAILABLE = "UNAVAILABLE"  # rigd (or a part of it) cannot serve it now


class Refused(Exception):
    """rigd refuses the request; nothing has changed. `code` says which kind of refusal.

    Optionally `reason`, an UPPER_SNAKE word a program can switch on (default: the code's
    name), and `party`, who must act ("caller" by default; "rigd" for UNAVAILABLE)."""

    def __init__(self, code: Code, message: str, *, reason: str = "", party: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or code.value
        self.party = party
