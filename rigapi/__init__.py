"""The rig.v1 API, shared by rigd and the controllers that call it: the generated messages (`pb`)
and service stubs (`pb_grpc`), the plain dataclasses both sides work on (`rigapi.model`) and the
conversion between the two. It imports nothing of the agent (`make lint` checks it)."""

from rigapi.rig.v1 import rig_agent_pb2 as pb
from rigapi.rig.v1 import rig_agent_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RigAgent"].full_name

# Channel options for a reader of telemetry streams: small HTTP/2 windows, so that the transport
# holds a few messages unread instead of the megabytes gRPC grows its window to (BDP probing).
# Freshness itself does not depend on them: rigapi.streams.fresh() skips what went stale in the
# transport, whatever it holds; with these, less is sent only to be skipped. rigctl uses them.
FRESH_STREAM_OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 16384),
]

__all__ = ["FRESH_STREAM_OPTIONS", "SERVICE_NAME", "pb", "pb_grpc"]
