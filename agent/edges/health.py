"""Standard gRPC health checking (grpc.health.v1), on the agent's event loop.

Unlike grpcio-health-checking's servicer, `close()` ends every Watch after it has delivered
NOT_SERVING, so an open watcher never holds shutdown for the whole grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.edges.status import abort, by_caller

Status = int  # health_pb2.HealthCheckResponse.ServingStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthService(health_pb2_grpc.HealthServicer):
    def __init__(self, services: tuple[str, ...]) -> None:
        self._status: dict[str, Status] = dict.fromkeys(("", *services), NOT_SERVING)
        self._changed = asyncio.Condition()
        self._closed = False

    async def set_all(self, status: Status) -> None:
        async with self._changed:
            for name in self._status:
                self._status[name] = status
            self._changed.notify_all()

    async def close(self) -> None:
        """NOT_SERVING to every watcher, then end their streams."""
        async with self._changed:
            for name in self._status:
                self._status[name] = NOT_SERVING
            self._closed = True
            self._changed.notify_all()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any
                    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await abort(context, by_caller(
                grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:100]!r}",
                "UNKNOWN_SERVICE"))
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any
                    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                closed = self._closed
                if status == last and not closed:
                    await self._changed.wait()
                    continue
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if closed:
                return
