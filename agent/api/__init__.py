"""The rig.v1 API: generated messages (`pb`) and service stubs (`pb_grpc`)."""

from agent.api.rig.v1 import rig_agent_pb2 as pb
from agent.api.rig.v1 import rig_agent_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RigAgent"].full_name

__all__ = ["SERVICE_NAME", "pb", "pb_grpc"]
