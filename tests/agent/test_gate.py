"""The edge's gate through a real rigd: malformed bodies, cancelled streams, one budget for every
server stream, bounded strings, and statuses that name the party at fault."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.edges import limits
from agent.edges.gate import StreamBudget
from rigapi import pb, pb_grpc
from rigapi.status import error_info
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, bearer, start_rigd

SERVICE = pb.DESCRIPTOR.services_by_name["RigAgent"]
PROTO = (Path(__file__).resolve().parents[2] / "protos/rig/v1/rig_agent.proto").read_text()
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def audit_lines(rigd: RigdProcess) -> list[dict[str, Any]]:
    if not rigd.audit_path.exists():
        return []
    return [json.loads(line) for line in rigd.audit_path.read_text().splitlines()]


def failure(call: Any) -> grpc.RpcError:
    """The error a call (unary, or a stream's first message) ends with."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if not hasattr(result, "ListFields"):  # a stream: its first message
            next(iter(result))
    return info.value


def wait_for(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ---- malformed bodies -----------------------------------------------------------------------


def test_a_malformed_body_is_invalid_argument_naming_the_rpc_and_audited(rigd: RigdProcess
                                                                          ) -> None:
    channel = grpc.insecure_channel(f"unix:{rigd.socket_path}")  # admin: every RPC admits it
    garbage = b"\xff\xff\xff"  # a truncated varint: no message parses from it
    mutating = []
    for method in SERVICE.methods:
        path = f"/{SERVICE.full_name}/{method.name}"
        if method.server_streaming:
            rpc: Any = channel.unary_stream(path, request_serializer=None,
                                            response_deserializer=None)
        else:
            rpc = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        error = failure(lambda rpc=rpc: rpc(garbage, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, error)
        assert method.name in (error.details() or ""), error.details()
        info = error_info(error)
        assert info is not None and info.reason == "MALFORMED_REQUEST"
        assert info.metadata["party"] == "caller"
        if method.name in {"AcquireLease", "SetWorkload", "Curtail", "DeviceAction",
                           "RunDiagnostics"}:
            mutating.append(method.name)
    health = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                 response_deserializer=None)
    assert failure(lambda: health(garbage, timeout=10)).code() == \
        grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    lines = [line for line in audit_lines(rigd) if line["outcome"] == "INVALID_ARGUMENT"]
    audited = {line["method"] for line in lines}
    assert set(mutating) <= audited, "a malformed mutating call is audited like any refused one"
    assert all(line["request"] == {"malformed_bytes": 3} for line in lines)


# ---- cancellation ---------------------------------------------------------------------------


@contextlib.contextmanager
def unanswering_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connection to it neither opens nor fails
    until the caller gives up (the kernel drops the SYNs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


@pytest.mark.processes  # a rigd of its own
def test_a_cancelled_stream_is_audited_cancelled_without_a_traceback(tmp_path: Path) -> None:
    with unanswering_port() as port:
        # The quick diagnostics try the configured pool: it takes seconds not to answer, so
        # each run is still going when its caller cancels it.
        rigd = start_rigd(tmp_path, settings={"pool": {"urls": [f"stratum+tcp://127.0.0.1:{port}"]}})
        try:
            for _ in range(5):
                stream = rigd.stub().RunDiagnostics(
                    pb.RunDiagnosticsRequest(level=pb.DIAGNOSTIC_LEVEL_QUICK), timeout=30)
                assert next(stream).test_name
                stream.cancel()
            lines = wait_for(lambda: [line for line in audit_lines(rigd)
                                      if line["method"] == "RunDiagnostics"] if len(
                audit_lines(rigd)) >= 5 else None, 30, "five audit lines")
            assert [line["outcome"] for line in lines] == ["CANCELLED"] * 5
            assert rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).devices
        finally:
            assert rigd.stop() == 0
    log = rigd.log_path.read_text()
    assert "Traceback" not in log and "ValueError" not in log, log[-2000:]


# ---- one budget for every server stream -----------------------------------------------------


@pytest.mark.processes  # a rigd of its own
def test_every_server_stream_counts_against_one_budget(tmp_path: Path) -> None:
    rigd = start_rigd(tmp_path, settings={"server": {"max_streams": 4,
                                                     "max_streams_per_identity": 3}})
    anonymous = grpc.insecure_channel(rigd.tcp_address)
    stub, health = pb_grpc.RigAgentStub(anonymous), health_pb2_grpc.HealthStub(anonymous)
    opened: list[Any] = []

    def hold(stream: Any) -> Any:
        opened.append(stream)
        next(stream)
        return stream

    try:
        hold(health.Watch(health_pb2.HealthCheckRequest(), timeout=60))
        hold(health.Watch(health_pb2.HealthCheckRequest(), timeout=60))
        telemetry = hold(stub.StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=1000),
                                              timeout=60))
        # The anonymous caller holds three: a fourth server stream is refused, of any kind.
        fourth = {
            "WatchOperation": lambda: stub.WatchOperation(
                pb.WatchOperationRequest(operation_id="op-none"), timeout=10),
            "StreamTelemetry": lambda: stub.StreamTelemetry(pb.StreamTelemetryRequest(),
                                                            timeout=10),
            "Health.Watch": lambda: health.Watch(health_pb2.HealthCheckRequest(), timeout=10),
        }
        for name, call in fourth.items():
            error = failure(call)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (name, error)
            assert "server.max_streams_per_identity" in (error.details() or "")
            info = error_info(error)
            assert info is not None and info.reason == "STREAM_LIMIT"
            assert info.metadata["limit"] == "server.max_streams_per_identity"
        # Another identity (the Unix socket's) gets the fourth place; the fifth is refused,
        # naming the total.
        hold(rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=1000),
                                         timeout=60))
        error = failure(lambda: rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(),
                                                            timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info(error)
        assert info is not None and info.metadata["limit"] == "server.max_streams"
        assert info.metadata["party"] == "rigd"
        error = failure(lambda: stub.RunDiagnostics(  # a third identity: the total still holds
            pb.RunDiagnosticsRequest(), metadata=bearer(OPERATOR_TOKEN), timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "server.max_streams" in (error.details() or "")
        # A stream that ends gives its place back.
        telemetry.cancel()

        def reopened() -> Any:
            try:
                return hold(stub.StreamTelemetry(pb.StreamTelemetryRequest(), timeout=60))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return None

        wait_for(reopened, 10, "the cancelled stream's place")
    finally:
        for stream in opened:
            stream.cancel()
        anonymous.close()
        rigd.stop()


# ---- bounded strings ------------------------------------------------------------------------


def request_strings() -> set[str]:
    """Every string field of every request message, at any depth ("Message.field")."""
    found: set[str] = set()
    seen: set[str] = set()

    def walk(descriptor: Any) -> None:
        for field in descriptor.fields:
            if field.type == FieldDescriptor.TYPE_STRING:
                found.add(f"{descriptor.name}.{field.name}")
            elif field.type == FieldDescriptor.TYPE_MESSAGE and \
                    field.message_type.full_name not in seen:
                seen.add(field.message_type.full_name)
                walk(field.message_type)

    for method in SERVICE.methods:
        walk(method.input_type)
    return found


def test_every_request_string_has_a_limit_documented_in_the_proto_and_the_readme() -> None:
    assert request_strings() == set(limits.FIELDS)
    for key, limit in limits.FIELDS.items():
        message, field = key.split(".")
        body = PROTO[PROTO.index(f"\nmessage {message} {{"):]
        body = body[:body.index("\n}")]
        line = next(n for n, text in enumerate(body.splitlines())
                    if re.search(rf"\bstring {field} = ", text))
        comment = []
        for text in reversed(body.splitlines()[:line]):
            if not text.strip().startswith("//"):
                break
            comment.append(text)
        said = " ".join(comment)
        assert str(limit.max_chars) in said, f"the proto's comment on {key} gives its limit"
        if limit.max_items > 1:
            assert str(limit.max_items) in said, f"... and how many values {key} takes"
    start = README.index("\n### Limits of the API\n")
    table = README[start:README.index("\n#", start + 1)]
    missing = [row for row in limits.table() if row not in table]
    assert not missing, "README's 'Limits of the API' table differs:\n" + "\n".join(missing)


def _request_with(key: str, value: str | list[str], host: str) -> tuple[str, Any]:
    """The RPC and a request whose field `key` holds `value` and is otherwise valid."""
    message, field = key.split(".")
    if message in ("HashingSpec", "InferenceSpec"):
        kind = pb.WORKLOAD_KIND_HASHING if message == "HashingSpec" else \
            pb.WORKLOAD_KIND_INFERENCE
        spec = getattr(pb, message)(**{field: value})
        workload = pb.Workload(kind=kind, **{"hashing" if kind == pb.WORKLOAD_KIND_HASHING
                                             else "inference": spec})
        return "SetWorkload", pb.SetWorkloadRequest(device_ids=[host], workload=workload)
    return message.removesuffix("Request"), getattr(pb, message)(**{field: value})


def test_every_request_string_is_bounded_and_named(rigd: RigdProcess) -> None:
    stub = rigd.stub()  # admin: what is refused is the value, not the caller
    host = next(d.id for d in stub.GetInventory(pb.GetInventoryRequest(), timeout=10).devices)
    for key, limit in limits.FIELDS.items():
        repeated = limit.max_items > 1 or key.endswith("_ids") or key.endswith("pool_urls")
        too_long = "x" * (limit.max_chars + 1)
        cases: list[str | list[str]] = [[too_long] if repeated else too_long,
                                        ["x\u202ey"] if repeated else "x\u202ey"]
        if limit.max_items > 1:  # one value too many (short ones: the request stays small)
            cases.append(["stratum+tcp://a:1" if "pool" in key else "x"]
                         * (limit.max_items + 1))
        for value in cases:
            method, request = _request_with(key, value, host)
            error = failure(lambda m=method, r=request: getattr(stub, m)(r, timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (key, error)
            assert key in (error.details() or ""), (key, error.details())
            info = error_info(error)
            assert info is not None and info.reason in ("FIELD_TOO_LONG", "FIELD_MALFORMED")
            assert info.metadata["party"] == "caller"
    assert not stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations


@pytest.mark.parametrize("url,why", [
    ("stratum+tcp://" + "h" * 50_000 + ":3333", "at most 275"),
    ("stratum+tcp://" + "a" * 64 + ".example:3333", "bad host"),
    ("stratum+tcp://pool.example:0", "bad port"),
    ("stratum+tcp://pool.example:65536", "bad port"),
    ("stratum+tcp://pool.example:99999999999999999999", "bad port"),
    ("stratum+tcp://::1:3333", "bad host"),
    ("http://pool.example:3333", "must start with stratum+tcp://"),
])
def test_a_bad_pool_url_is_refused_before_anything_starts(rigd: RigdProcess, url: str,
                                                          why: str) -> None:
    stub = rigd.stub()
    host = next(d.id for d in stub.GetInventory(pb.GetInventoryRequest(), timeout=10).devices)
    started = time.monotonic()
    error = failure(lambda: stub.SetWorkload(pb.SetWorkloadRequest(
        device_ids=[host], workload=pb.Workload(
            kind=pb.WORKLOAD_KIND_HASHING, hashing=pb.HashingSpec(pool_urls=[url]))),
        timeout=10))
    assert time.monotonic() - started < 5
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert "HashingSpec.pool_urls[0]" in details and why in details, details
    assert len(details) < 600, "the caller's text is not echoed whole"
    assert not stub.ListOperations(pb.ListOperationsRequest(), timeout=10).operations


# ---- pacing ---------------------------------------------------------------------------------


def test_stream_messages_are_paced_a_few_per_turn_and_none_is_lost() -> None:
    """A hundred streams woken at once go out at most per_turn in each turn of the loop, in
    order, every one of them (a cancelled one gives its place to the next)."""
    from agent.edges.gate import StreamPacer

    async def body() -> None:
        pacer = StreamPacer(per_turn=8)
        turn, done = 0, []

        async def count_turns() -> None:
            nonlocal turn
            while len(done) < 99:
                turn += 1
                await asyncio.sleep(0)

        async def stream(index: int) -> None:
            await pacer.turn()
            done.append((index, turn))

        counter = asyncio.ensure_future(count_turns())
        tasks = [asyncio.ensure_future(stream(i)) for i in range(100)]
        await asyncio.sleep(0)
        tasks[50].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await counter
        assert [i for i, _ in done] == [i for i in range(100) if i != 50]
        per_turn = collections.Counter(t for _, t in done)
        assert max(per_turn.values()) <= 8, per_turn
        assert len(per_turn) >= 99 // 8, "spread over turns"

    asyncio.run(body())


# ---- the streams budget as a state machine --------------------------------------------------


class BudgetMachine(RuleBasedStateMachine):
    """Streams opened and closed by a few identities in any order: the budget admits exactly
    what the limits allow, refuses naming the limit that is full, and gives back what closes."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = StreamBudget(total=5, per_identity=3)
        self.open: collections.Counter[str] = collections.Counter()

    @rule(who=st.sampled_from(["anonymous", "token:a", "unix:uid=0:pid=1"]))
    def open_one(self, who: str) -> None:
        refusal = self.budget.take(who)
        if self.open[who] >= 3:
            assert refusal is not None and refusal.extra["limit"] == \
                "server.max_streams_per_identity"
        elif sum(self.open.values()) >= 5:
            assert refusal is not None and refusal.extra["limit"] == "server.max_streams"
            assert refusal.party == "rigd"
        else:
            assert refusal is None
            self.open[who] += 1
        if refusal is not None:
            assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED

    @precondition(lambda self: sum(self.open.values()) > 0)
    @rule(data=st.data())
    def close_one(self, data: st.DataObject) -> None:
        who = data.draw(st.sampled_from(sorted(w for w, n in self.open.items() if n)))
        self.budget.give_back(who)
        self.open[who] -= 1

    @invariant()
    def counts_agree(self) -> None:
        assert self.budget.open == sum(self.open.values()) <= 5


TestStreamBudget = BudgetMachine.TestCase
TestStreamBudget.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
