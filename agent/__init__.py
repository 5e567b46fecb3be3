"""rigd: the per-rig agent (gRPC server, auth, workloads) and rigctl, built on `hal`."""

__version__ = "0.1.0"
