"""One rig over rig.v1, asyncio first: every RPC a method that returns dataclasses.

    async with Rig(Endpoint(address="rig12:50051", ca=..., cert=..., key=...)) as rig:
        inventory = await rig.inventory()
        lease = await rig.acquire_lease("controller-a", ttl_s=15)   # renewed in the background
        op = await rig.switch(["gpu/GPU-..."], WorkloadSpec(WorkloadKind.IDLE))  # to the end
        async for update in rig.stream_telemetry(interval_s=1.0):  # survives restarts
            ...

Every call has a deadline (`timeout_s`, the rig's default otherwise, and never past a
`deadline()` block's end); a failure is a `client.errors.RigError` naming the party that failed.
Mutating calls carry the fencing token of the lease this client holds on the rig; once that
lease is lost they are refused here, before reaching rigd (`LeaseLost`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from client.backoff import Backoff
from client.deadline import current_deadline
from client.endpoint import Endpoint
from client.errors import (
    RETRYABLE,
    NotAllowed,
    Refused,
    RigError,
    Timeout,
    from_rpc_error,
)
from client.model import Device, Inventory, LeaseInfo, PowerLimit, Snapshot
from hal.device import Capability
from rigapi import FRESH_STREAM_OPTIONS, SERVICE_NAME, convert, pb, pb_grpc
from rigapi.model import DiagnosticOutcome, Operation, WorkloadKind, WorkloadSpec

if TYPE_CHECKING:
    from client.lease import Lease
    from client.streams import TelemetryStream


def _workload(workload: WorkloadSpec | WorkloadKind | str) -> WorkloadSpec:
    if isinstance(workload, WorkloadSpec):
        return workload
    kind = WorkloadKind(workload)
    if kind == WorkloadKind.INFERENCE:
        raise ValueError("an inference workload names its runtime profile: "
                         "WorkloadSpec(WorkloadKind.INFERENCE, inference=InferenceSpec(profile))")
    return WorkloadSpec(kind)


ACTIONS = {"sleep": pb.DEVICE_ACTION_KIND_SLEEP, "wake": pb.DEVICE_ACTION_KIND_WAKE,
           "restart": pb.DEVICE_ACTION_KIND_RESTART,
           "pool_switch": pb.DEVICE_ACTION_KIND_POOL_SWITCH}


class Rig:
    """A client of one rigd over one channel, kept open until close()."""

    def __init__(self, endpoint: Endpoint | str | None = None, *, timeout_s: float = 10.0,
                 name: str = "", options: Sequence[tuple[str, Any]] = FRESH_STREAM_OPTIONS,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """`credentials`: the endpoint's mTLS credentials already read (a fleet reads its
        files once for every rig); read from the endpoint's files otherwise."""
        if endpoint is None:
            endpoint = Endpoint.from_env()
        elif isinstance(endpoint, str):
            endpoint = Endpoint.parse(endpoint)
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.endpoint = endpoint
        self.name = name or endpoint.where
        self.timeout_s = timeout_s
        # Read now: a bad endpoint (mTLS half given, an unreadable file) fails here, not later.
        self._credentials = credentials if credentials is not None or not endpoint.tls \
            else endpoint.credentials()
        self._metadata = endpoint.metadata()
        self._options = list(options)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.RigAgentStub | None = None
        self._lease: Lease | None = None

    def __repr__(self) -> str:
        return f"<Rig {self.name}>"

    # ---- plumbing ---------------------------------------------------------------------------

    def _rpc(self) -> pb_grpc.RigAgentStub:
        if self._stub is None:
            self._channel = self.endpoint.channel(self._options, self._credentials)
            self._stub = pb_grpc.RigAgentStub(self._channel)
        return self._stub

    @property
    def channel(self) -> grpc.aio.Channel:
        self._rpc()
        assert self._channel is not None
        return self._channel

    def connected(self) -> bool:
        """Whether the channel to rigd is up (READY) right now."""
        return self._channel is not None and \
            self._channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    def _timeout(self, timeout_s: float | None) -> float:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        at = current_deadline()
        if at is not None:
            left = at - time.monotonic()
            if left <= 0:
                raise Timeout(f"no time left for a call to {self.name}: its deadline passed",
                              code=grpc.StatusCode.DEADLINE_EXCEEDED, rig=self.name,
                              party="rigd", answered=False, connected=self.connected())
            timeout = min(timeout, left)
        return timeout

    def _stream_timeout(self) -> float | None:
        """A stream's deadline: none, unless the calling block has one."""
        at = current_deadline()
        if at is None:
            return None
        left = at - time.monotonic()
        return left if left > 0 else self._timeout(None)  # raises: no time left

    def error(self, exc: grpc.RpcError, started: float, timeout_s: float | None) -> RigError:
        return from_rpc_error(exc, rig=self.name, connected=self.connected(),
                              elapsed_s=time.monotonic() - started, timeout_s=timeout_s)

    async def _call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        timeout = self._timeout(timeout_s)
        started = time.monotonic()
        try:
            return await getattr(self._rpc(), method)(request, metadata=self._metadata,
                                                      timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, started, timeout) from None

    def _fencing(self, given: int | None) -> int:
        """The token a mutating call carries: the one given, else the held lease's (checked
        live here: a lost lease refuses the call before it is sent), else 0."""
        if given is not None:
            return given
        if self._lease is None:
            return 0
        self._lease.check()
        return self._lease.fencing_token

    async def _mutate(self, method: str, request: Any, given_token: int | None,
                      timeout_s: float | None) -> Any:
        try:
            return await self._call(method, request, timeout_s)
        except (Refused, NotAllowed):
            lease = self._lease
            if given_token is None and lease is not None and not lease.is_lost:
                # Refused while holding a lease: make sure it is still ours, and say so at once
                # if it is not (the caller's on_lost runs before this error reaches it).
                await lease.verify()
            raise

    async def connect(self, timeout_s: float | None = None) -> None:
        """Wait until the channel is up (or raise Unreachable / Timeout)."""
        await self.health(timeout_s=timeout_s)

    async def close(self) -> None:
        """Stop renewing a held lease (without releasing it) and close the channel."""
        if self._lease is not None:
            await self._lease.stop()
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> Rig:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- reads ------------------------------------------------------------------------------

    async def inventory(self, *, timeout_s: float | None = None) -> Inventory:
        reply = await self._call("GetInventory", pb.GetInventoryRequest(), timeout_s)
        return Inventory(
            rig_id=reply.rig_id, agent_version=reply.agent_version,
            devices=tuple(Device(
                convert.device_info_from(d), frozenset(d.capabilities),
                convert.health_from(d.health),
                convert.workload_from(d.workload) if d.HasField("workload") else None)
                for d in reply.devices),
            backends=tuple(convert.backend_from(b) for b in reply.backends),
            curtailment=convert.curtailment_from(reply.curtailment)
            if reply.HasField("curtailment") else None)

    async def telemetry(self, device_ids: Sequence[str] = (), *, max_age_s: float | None = None,
                        timeout_s: float | None = None) -> Snapshot:
        """The latest reading of each device (every device when none are named, with the rig's
        power); `max_age_s` asks for readings at most that old."""
        request = pb.GetTelemetryRequest(device_ids=device_ids,
                                         max_age_ms=round(max_age_s * 1000) if max_age_s else 0)
        reply = await self._call("GetTelemetry", request, timeout_s)
        return Snapshot(tuple(convert.reading_from(d) for d in reply.devices),
                        convert.rig_power_from(reply.rig_power)
                        if reply.HasField("rig_power") else None)

    def stream_telemetry(self, device_ids: Sequence[str] = (), *,
                         interval_s: float | None = None, stall_s: float | None = None,
                         backoff: Backoff | None = None) -> TelemetryStream:
        """Readings every `interval_s` (rigd's sampling interval when None), across restarts of
        rigd and network blips: see client.streams.TelemetryStream."""
        from client.streams import TelemetryStream

        return TelemetryStream(self, device_ids, interval_s, stall_s=stall_s, backoff=backoff)

    async def health(self, services: Sequence[str] = ("", SERVICE_NAME), *,
                     timeout_s: float | None = None) -> dict[str, str]:
        """The standard gRPC health check of each service ("" is rigd as a whole):
        "serving", "not_serving", "service_unknown"."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        statuses = {}
        for service in services:
            timeout = self._timeout(timeout_s)
            started = time.monotonic()
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                         metadata=self._metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                raise self.error(exc, started, timeout) from None
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                reply.status).lower()
        return statuses

    # ---- operations -------------------------------------------------------------------------

    async def operation(self, operation_id: str, *, timeout_s: float | None = None
                        ) -> Operation:
        reply = await self._call("GetOperation", pb.GetOperationRequest(
            operation_id=operation_id), timeout_s)
        return convert.operation_from(reply.operation)

    async def operations(self, *, limit: int = 50, running_only: bool = False,
                         timeout_s: float | None = None) -> list[Operation]:
        """Recent operations, newest first."""
        reply = await self._call("ListOperations", pb.ListOperationsRequest(
            limit=limit, running_only=running_only), timeout_s)
        return [convert.operation_from(op) for op in reply.operations]

    async def follow(self, operation: Operation | str, *, poll_s: float = 0.25,
                     max_poll_s: float = 2.0) -> AsyncIterator[Operation]:
        """Each change of an operation until it ends (the last one yielded is done).

        Follows WatchOperation; when the stream breaks (rigd restarting, a network blip, a
        stream refused for want of room) it asks GetOperation and opens the stream again,
        waiting longer between attempts while they fail. Only an answer that will not change
        (NOT_FOUND, not allowed) ends it with an error."""
        operation_id = operation if isinstance(operation, str) else operation.operation_id
        request = pb.WatchOperationRequest(operation_id=operation_id)
        last = b""
        backoff = Backoff(poll_s, max_poll_s)

        def changed(message: pb.Operation) -> Operation | None:
            nonlocal last
            raw = message.SerializeToString(deterministic=True)
            if raw == last:
                return None
            last = raw
            return convert.operation_from(message)

        while True:
            started = time.monotonic()
            call = self._rpc().WatchOperation(request, metadata=self._metadata,
                                              timeout=self._stream_timeout())
            try:
                async for message in call:
                    op = changed(message.operation)
                    if op is not None:
                        backoff.reset()
                        yield op
                        if op.done:
                            return
            except grpc.aio.AioRpcError as exc:
                error = self.error(exc, started, None)
                room = error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                if not isinstance(error, RETRYABLE) and not room:
                    raise error from None
            finally:
                call.cancel()
            try:  # the stream broke, or ended before the operation did: ask
                reply = await self._call("GetOperation", pb.GetOperationRequest(
                    operation_id=operation_id))
            except RETRYABLE:
                pass
            else:
                op = changed(reply.operation)
                if op is not None:
                    yield op
                    if op.done:
                        return
            await asyncio.sleep(backoff.next())

    async def wait(self, operation: Operation | str, *,
                   on_update: Callable[[Operation], None] | None = None,
                   timeout_s: float | None = None) -> Operation:
        """The operation once it has ended (follow()'s last); `on_update` sees every change."""
        final: Operation | None = operation if isinstance(operation, Operation) and \
            operation.done else None
        if final is not None:
            return final
        try:
            async with asyncio.timeout(timeout_s):
                async for op in self.follow(operation):
                    if on_update is not None:
                        on_update(op)
                    final = op
        except TimeoutError:
            raise Timeout(f"operation not ended within {timeout_s:g} s",
                          code=grpc.StatusCode.DEADLINE_EXCEEDED, rig=self.name, party="rigd",
                          answered=False, connected=self.connected()) from None
        assert final is not None
        return final

    # ---- leases -----------------------------------------------------------------------------

    @property
    def lease(self) -> Lease | None:
        """The lease this client holds on the rig (its token goes with every mutating call)."""
        return self._lease

    async def acquire_lease(self, holder: str, ttl_s: int, *, preempt: bool = False,
                            on_lost: Callable[[Lease], None] | None = None,
                            renew_every: float = 1 / 3, keep: bool = True,
                            timeout_s: float | None = None) -> Lease:
        """Become the rig's one writer. With `keep` the lease is renewed in the background
        every `renew_every` of its ttl; when it is lost (rigd says it is not ours any more, or
        it could not be renewed before it expired) `on_lost` is called at once, `lease.lost`
        is set, and this rig's mutating calls are refused until a new lease is acquired."""
        from client.lease import Lease

        if self._lease is not None:
            await self._lease.stop()
        sent = time.monotonic()
        reply = await self._call("AcquireLease", pb.AcquireLeaseRequest(
            holder=holder, ttl_s=ttl_s, preempt=preempt), timeout_s)
        self._lease = Lease(self, _lease_info(reply.lease), ttl_s, sent_at=sent,
                            on_lost=on_lost, renew_every=renew_every, keep=keep)
        return self._lease

    async def renew_lease(self, lease_id: str, ttl_s: int, *,
                          timeout_s: float | None = None) -> LeaseInfo:
        reply = await self._call("RenewLease", pb.RenewLeaseRequest(lease_id=lease_id,
                                                                    ttl_s=ttl_s), timeout_s)
        return _lease_info(reply.lease)

    async def release_lease(self, lease_id: str, *, timeout_s: float | None = None) -> None:
        await self._call("ReleaseLease", pb.ReleaseLeaseRequest(lease_id=lease_id), timeout_s)
        if self._lease is not None and self._lease.lease_id == lease_id:
            await self._lease.stop()
            self._lease = None

    def _forget_lease(self, lease: Lease) -> None:
        if self._lease is lease:
            self._lease = None

    # ---- changes ----------------------------------------------------------------------------

    async def start_switch(self, device_ids: Sequence[str],
                           workload: WorkloadSpec | WorkloadKind | str, *,
                           request_id: str | None = None, fencing_token: int | None = None,
                           timeout_s: float | None = None) -> Operation:
        """Ask for the switch; returns the operation at once (wait() follows it). A request id
        is made when none is given, so a retry after an unknown outcome is the same switch.
        In a hashing spec, empty fields (no pools, intensity 0) mean rigd's configured ones."""
        import uuid

        spec = _workload(workload)
        token = self._fencing(fencing_token)
        request = pb.SetWorkloadRequest(
            device_ids=device_ids, workload=convert.workload(spec, password=True),
            fencing_token=token,
            request_id=uuid.uuid4().hex if request_id is None else request_id)
        reply = await self._mutate("SetWorkload", request, fencing_token, timeout_s)
        return convert.operation_from(reply.operation)

    async def switch(self, device_ids: Sequence[str],
                     workload: WorkloadSpec | WorkloadKind | str, *,
                     request_id: str | None = None, fencing_token: int | None = None,
                     on_update: Callable[[Operation], None] | None = None,
                     timeout_s: float | None = None) -> Operation:
        """Switch devices and return when the switch has ended (succeeded, failed or rolled
        back: look at `.state`)."""
        op = await self.start_switch(device_ids, workload, request_id=request_id,
                                     fencing_token=fencing_token)
        if on_update is not None:
            on_update(op)
        return await self.wait(op, on_update=on_update, timeout_s=timeout_s)

    async def set_power_limit(self, device_id: str, watts: float, *,
                              fencing_token: int | None = None,
                              timeout_s: float | None = None) -> PowerLimit:
        token = self._fencing(fencing_token)
        reply = await self._mutate("SetPowerLimit", pb.SetPowerLimitRequest(
            device_id=device_id, power_limit_w=watts, fencing_token=token), fencing_token,
            timeout_s)
        return PowerLimit(device_id, reply.power_limit_w, reply.requested_w, reply.detail)

    async def start_curtailment(self, target_w: float, *, deadline_s: int = 60,
                                expiry_s: int = 3600, reason: str = "",
                                fencing_token: int | None = None,
                                timeout_s: float | None = None) -> Operation:
        token = self._fencing(fencing_token)
        reply = await self._mutate("Curtail", pb.CurtailRequest(
            rig_power_target_w=target_w, deadline_s=deadline_s, expiry_s=expiry_s,
            reason=reason, fencing_token=token), fencing_token, timeout_s)
        return convert.operation_from(reply.operation)

    async def curtail(self, target_w: float, *, deadline_s: int = 60, expiry_s: int = 3600,
                      reason: str = "", fencing_token: int | None = None,
                      on_update: Callable[[Operation], None] | None = None,
                      timeout_s: float | None = None) -> Operation:
        """Bring the rig below `target_w` within `deadline_s`; returns when rigd has confirmed
        it from telemetry (or found it cannot): the operation's detail says which."""
        op = await self.start_curtailment(target_w, deadline_s=deadline_s, expiry_s=expiry_s,
                                          reason=reason, fencing_token=fencing_token)
        return await self.wait(op, on_update=on_update, timeout_s=timeout_s)

    async def start_cancel_curtailment(self, *, fencing_token: int | None = None,
                                       timeout_s: float | None = None) -> Operation:
        token = self._fencing(fencing_token)
        reply = await self._mutate("CancelCurtailment", pb.CancelCurtailmentRequest(
            fencing_token=token), fencing_token, timeout_s)
        return convert.operation_from(reply.operation)

    async def cancel_curtailment(self, *, fencing_token: int | None = None,
                                 on_update: Callable[[Operation], None] | None = None,
                                 timeout_s: float | None = None) -> Operation:
        """End the curtailment in force; returns when every device is restored."""
        op = await self.start_cancel_curtailment(fencing_token=fencing_token)
        return await self.wait(op, on_update=on_update, timeout_s=timeout_s)

    async def device_action(self, device_id: str, action: str, *, pool_index: int = 0,
                            fencing_token: int | None = None,
                            timeout_s: float | None = None) -> str:
        """sleep, wake, restart or pool_switch (with `pool_index`); rigd's words back."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        token = self._fencing(fencing_token)
        reply = await self._mutate("DeviceAction", pb.DeviceActionRequest(
            device_id=device_id, action=ACTIONS[action], pool_index=pool_index,
            fencing_token=token), fencing_token, timeout_s)
        return str(reply.detail)

    # ---- diagnostics ------------------------------------------------------------------------

    async def diagnostics(self, level: int = 1, device_ids: Sequence[str] = ()
                          ) -> AsyncIterator[DiagnosticOutcome]:
        """Each test's result as it ends. A run cannot be resumed (rigd ends what the run
        started when its caller goes away), so a stream that breaks before its last result
        raises the error that broke it."""
        request = pb.RunDiagnosticsRequest(device_ids=device_ids,
                                           level=level)  # type: ignore[arg-type]
        started = time.monotonic()
        timeout = self._stream_timeout()
        call = self._rpc().RunDiagnostics(request, metadata=self._metadata, timeout=timeout)
        seen = total = 0
        try:
            async for message in call:
                outcome = convert.diagnostic_from(message)
                seen, total = outcome.done, outcome.total
                yield outcome
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, started, timeout) from None
        finally:
            call.cancel()
        if seen < total:
            raise RigError(f"the diagnostics stream ended after {seen} of {total} results",
                           code=grpc.StatusCode.UNAVAILABLE, rig=self.name, party="rigd")

    async def run_diagnostics(self, level: int = 1, device_ids: Sequence[str] = (), *,
                              on_result: Callable[[DiagnosticOutcome], None] | None = None
                              ) -> list[DiagnosticOutcome]:
        """Every test's result, once the run has ended."""
        results = []
        async for outcome in self.diagnostics(level, device_ids):
            if on_result is not None:
                on_result(outcome)
            results.append(outcome)
        return results

    # ---- helpers over the calls -------------------------------------------------------------

    async def limitable(self) -> list[str]:
        """The devices whose power limit can be set."""
        return [d.id for d in (await self.inventory()).devices
                if Capability.SET_POWER_LIMIT in d.capabilities]


def _lease_info(lease: pb.Lease) -> LeaseInfo:
    return LeaseInfo(lease.lease_id, lease.holder, lease.fencing_token,
                     convert.unix_s(lease.expire_time))

