"""The rig.v1 API, shared by rigd and the controllers that call it: the generated messages (`pb`)
and service stubs (`pb_grpc`), the plain dataclasses both sides work on (`rigapi.model`) and the
conversion between the two. It imports nothing of the agent (`make lint` checks it)."""

from rigapi.rig.v1 import rig_agent_pb2 as pb
from rigapi.rig.v1 import rig_agent_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RigAgent"].full_name

# Channel options for a reader of telemetry streams that wants the newest readings after a
# pause. rigd waits for each message to be taken by the transport and drops the oldest of what
# piles up behind; what the transport holds unread is the reader's HTTP/2 stream window, which
# gRPC grows to hundreds of kilobytes (BDP probing) unless told otherwise. rigctl uses these.
FRESH_STREAM_OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 16384),
]

__all__ = ["FRESH_STREAM_OPTIONS", "SERVICE_NAME", "pb", "pb_grpc"]
