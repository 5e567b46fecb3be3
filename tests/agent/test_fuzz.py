"""Every RPC with generated requests: out-of-range numbers, NaN, huge and odd strings, unknown
enum values, empty and unknown ids, stale and forged tokens. Bad input is a clear refusal, never
INTERNAL or UNKNOWN or a hang, and rigd keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal.sim.nvml import demo_setup
from rigapi import pb, pb_grpc
from tests.agent.conftest import OPERATOR_TOKEN, RigdProcess, bearer, start_rigd

SERVICE = pb.DESCRIPTOR.services_by_name["RigAgent"]
BAD = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.DEADLINE_EXCEEDED})


@pytest.fixture(scope="module")
def fuzz_rigd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RigdProcess, list[str]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    options = demo_setup(tmp / "nvml", count=2)
    nvml = "\n".join(f'{key} = "{value}"' for key, value in options.items())
    rigd = start_rigd(tmp, f"[hal.nvml]\n{nvml}\nwatch_xid = false\n", backends=("host", "nvml"))
    inventory = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=10)
    yield rigd, [d.id for d in inventory.devices]
    assert rigd.stop() == 0


def strings(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known), st.just(""), st.text(max_size=40),
        st.integers(1000, 70_000).map(lambda n: "x" * n),
        st.sampled_from(["../../etc/passwd", "gpu/", "\x00", "stratum+tcp://127.0.0.1:1",
                         "stratum+tcp://10.0.0.1:3333", "ünïcødé", "a" * 201]),
    )


def value(field: FieldDescriptor, known: list[str], depth: int) -> st.SearchStrategy[Any]:
    kinds: dict[int, st.SearchStrategy[Any]] = {
        FieldDescriptor.TYPE_STRING: strings(known),
        FieldDescriptor.TYPE_DOUBLE: st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -1.0, 0.5, 1e6, 1e308, 150.0, 450.0])),
        FieldDescriptor.TYPE_UINT32: st.one_of(st.integers(0, 2**32 - 1),
                                               st.sampled_from([0, 1, 99, 100, 3600, 86401])),
        FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
        FieldDescriptor.TYPE_BOOL: st.booleans(),
        FieldDescriptor.TYPE_ENUM: st.integers(-3, 40),  # proto3 enums are open
    }
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        inner = message(field.message_type, known, depth + 1)
    else:
        inner = kinds[field.type]
    if field.is_repeated:
        return st.lists(inner, max_size=4)
    return inner


def message(descriptor: Descriptor, known: list[str], depth: int = 0
            ) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 2 or descriptor.full_name.startswith("google.protobuf"):
        return st.just({})
    return st.fixed_dictionaries(
        {}, optional={f.name: value(f, known, depth) for f in descriptor.fields})


def build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    for name, item in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                for element in item:
                    _fill(getattr(msg, name).add(), element)
            else:
                _fill(getattr(msg, name), item)
        elif field.is_repeated:
            getattr(msg, name).extend(item)
        else:
            setattr(msg, name, item)


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
def test_generated_requests_never_break_rigd(fuzz_rigd: tuple[RigdProcess, list[str]],
                                             method: str) -> None:
    rigd, known = fuzz_rigd
    descriptor = SERVICE.methods_by_name[method]
    request_cls = getattr(pb, descriptor.input_type.name)
    channel = grpc.insecure_channel(rigd.tcp_address)
    stub = pb_grpc.RigAgentStub(channel)
    rpc = getattr(stub, method)
    seen: set[str] = set()

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(values=message(descriptor.input_type, known))
    def check(values: dict[str, Any]) -> None:
        request = build(request_cls, values)
        try:
            result = rpc(request, metadata=bearer(OPERATOR_TOKEN), timeout=15)
            if descriptor.server_streaming:  # the first message comes at once, or the refusal
                next(result, None)
                result.cancel()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            assert exc.code() not in BAD, f"{method}({values!r:.300}) -> {exc.code()}: " \
                                          f"{exc.details()}"
            assert exc.details(), "a refusal says why"
            assert len(exc.details() or "") < 2000, "echoed input is clipped"
            seen.add(exc.code().name)

    try:
        check()
    finally:
        channel.close()
    assert rigd.proc.poll() is None, "rigd survived"
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(rigd.tcp_address))
    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
