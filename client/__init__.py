"""rig.v1 for controllers: a typed asyncio client of rigd, with leases that renew themselves,
operations followed to their end, telemetry streams that survive restarts, fan-out over a fleet,
and a blocking facade for scripts. It returns the API's dataclasses (hal.device, rigapi.model,
client.model), never protobuf messages, and imports nothing of rigd's server code.

    from client import Endpoint, Rig, Fleet, BlockingRig
    from client.errors import RigError, Unreachable, LeaseLost

Names load on first use (PEP 562), so a one-call script pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hal.lazy import exports

if TYPE_CHECKING:
    from client.blocking import BlockingFleet, BlockingRig
    from client.deadline import deadline
    from client.endpoint import Endpoint
    from client.errors import (
        EndpointError,
        Failed,
        InvalidArgument,
        LeaseLost,
        NotAllowed,
        NotFound,
        Refused,
        RigError,
        Timeout,
        Unavailable,
        Unreachable,
    )
    from client.fleet import Fleet, Results, Row
    from client.lease import Lease
    from client.rig import Rig

_HOME = {
    "BlockingFleet": "client.blocking", "BlockingRig": "client.blocking",
    "Endpoint": "client.endpoint",
    **dict.fromkeys(("EndpointError", "Failed", "InvalidArgument", "LeaseLost", "NotAllowed",
                     "NotFound", "Refused", "RigError", "Timeout", "Unavailable",
                     "Unreachable"), "client.errors"),
    "Fleet": "client.fleet", "Results": "client.fleet", "Row": "client.fleet",
    "Lease": "client.lease",
    "Rig": "client.rig", "deadline": "client.deadline",
}


__getattr__, __dir__ = exports("client", _HOME, globals())


__all__ = [
    "BlockingFleet",
    "BlockingRig",
    "Endpoint",
    "EndpointError",
    "Failed",
    "Fleet",
    "InvalidArgument",
    "Lease",
    "LeaseLost",
    "NotAllowed",
    "NotFound",
    "Refused",
    "Results",
    "Rig",
    "RigError",
    "Row",
    "Timeout",
    "Unavailable",
    "Unreachable",
    "deadline",
]
