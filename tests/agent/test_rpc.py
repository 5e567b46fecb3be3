"""RigAgent over real gRPC: roles, the audit trail, leases with fencing tokens, validation."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.edges.auth import METHOD_ROLES, MUTATING, AuditLog
from rigapi import pb
from tests.agent.conftest import ADMIN_TOKEN, OPERATOR_TOKEN, RigdProcess, bearer


def audit_lines(rigd: RigdProcess) -> list[dict[str, object]]:
    if not rigd.audit_path.exists():
        return []
    return [json.loads(line) for line in rigd.audit_path.read_text().splitlines()]


def code_of(call: object) -> grpc.StatusCode | None:
    """The status a call ends with; None when it succeeds."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return None


def host_id(rigd: RigdProcess) -> str:
    inv = rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=5)
    return next(d.id for d in inv.devices if d.id.startswith("host/"))


def test_anonymous_tcp_reads_but_cannot_mutate(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    assert stub.GetTelemetry(pb.GetTelemetryRequest(), timeout=5).devices
    code = code_of(lambda: stub.AcquireLease(pb.AcquireLeaseRequest(holder="x", ttl_s=10),
                                             timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    (line,) = audit_lines(rigd)
    assert line["method"] == "AcquireLease"
    assert line["identity"] == "anonymous" and line["outcome"] == "PERMISSION_DENIED"


def test_unknown_token_is_unauthenticated_and_audited(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    code = code_of(lambda: stub.SetPowerLimit(
        pb.SetPowerLimitRequest(device_id="host/x", power_limit_w=100),
        metadata=bearer("wrong"), timeout=5))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: stub.GetInventory(pb.GetInventoryRequest(), metadata=bearer("wrong"),
                                             timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    (line,) = audit_lines(rigd)
    assert line["identity"] == "unknown-token" and line["outcome"] == "UNAUTHENTICATED"


def test_every_mutating_call_is_audited_with_secrets_redacted(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    md = bearer(OPERATOR_TOKEN)
    lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-a", ttl_s=30), metadata=md,
                              timeout=5).lease
    spec = pb.Workload(kind=pb.WORKLOAD_KIND_HASHING, hashing=pb.HashingSpec(
        pool_urls=["stratum+tcp://127.0.0.1:3333"], user="u", password="hunter2"))
    assert code_of(lambda: stub.SetWorkload(pb.SetWorkloadRequest(
        device_ids=[host_id(rigd)], workload=spec, fencing_token=lease.fencing_token),
        metadata=md, timeout=5)) == grpc.StatusCode.FAILED_PRECONDITION  # the host cannot hash
    stub.ReleaseLease(pb.ReleaseLeaseRequest(lease_id=lease.lease_id), metadata=md, timeout=5)

    lines = audit_lines(rigd)
    assert [line["method"] for line in lines] == ["AcquireLease", "SetWorkload", "ReleaseLease"]
    assert [line["outcome"] for line in lines] == ["OK", "FAILED_PRECONDITION", "OK"]
    assert all(line["identity"] == "token:controller" for line in lines)
    assert "hunter2" not in rigd.audit_path.read_text()
    assert "hunter2" not in rigd.log_path.read_text()


def test_unix_socket_callers_are_known_by_uid_and_pid(rigd: RigdProcess) -> None:
    lease = rigd.stub().AcquireLease(pb.AcquireLeaseRequest(holder="rigctl", ttl_s=5, preempt=True),
                                     timeout=5).lease
    me = f"unix:uid={os.getuid()}:pid={os.getpid()}"
    assert lease.holder == f"rigctl ({me})"
    line = audit_lines(rigd)[-1]
    assert line["identity"] == me and line["role"] == "admin" and line["outcome"] == "OK"


def _acquire_in_another_process(socket_path: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import grpc, sys\n"
        "from rigapi import pb, pb_grpc\n"
        f"stub = pb_grpc.RigAgentStub(grpc.insecure_channel('unix:{socket_path}'))\n"
        "try:\n"
        "    stub.AcquireLease(pb.AcquireLeaseRequest(holder='second', ttl_s=30), timeout=10)\n"
        "except grpc.RpcError as exc:\n"
        "    print(exc.code().name, exc.details()); sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_a_second_local_process_cannot_silently_replace_a_lease(rigd: RigdProcess) -> None:
    stub = rigd.stub()
    first = stub.AcquireLease(pb.AcquireLeaseRequest(holder="first", ttl_s=30), timeout=5).lease
    result = _acquire_in_another_process(rigd.socket_path)
    assert result.returncode == 1, result
    assert result.stdout.startswith("FAILED_PRECONDITION rig is leased by first"), result.stdout
    # The first holder's lease and token still stand.
    assert code_of(lambda: stub.RenewLease(pb.RenewLeaseRequest(
        lease_id=first.lease_id, ttl_s=30), timeout=5)) is None


def test_a_live_token_is_useless_to_anyone_but_its_holder(rigd: RigdProcess) -> None:
    """Seeing a controller's fencing token (a log, a shared dashboard) grants nothing."""
    stub = rigd.stub(tcp=True)
    lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-a", ttl_s=60),
                              metadata=bearer(ADMIN_TOKEN), timeout=5).lease
    for token in (lease.fencing_token, lease.fencing_token + 1, lease.fencing_token - 1):
        with pytest.raises(grpc.RpcError) as info:
            stub.SetPowerLimit(pb.SetPowerLimitRequest(
                device_id=host_id(rigd), power_limit_w=100, fencing_token=token),
                metadata=bearer(OPERATOR_TOKEN), timeout=5)
        code, details = info.value.code(), info.value.details() or ""
        if token == lease.fencing_token:
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
            assert "belongs to ctrl-a (token:boss), not token:controller" in details
        else:  # forged: higher or lower than the live token
            assert code == grpc.StatusCode.FAILED_PRECONDITION, details
        assert str(lease.fencing_token) not in details, "a refusal never reveals the live token"
    # The holder itself gets past the lease (and meets the host's real limit).
    with pytest.raises(grpc.RpcError) as info:
        stub.SetPowerLimit(pb.SetPowerLimitRequest(
            device_id=host_id(rigd), power_limit_w=100, fencing_token=lease.fencing_token),
            metadata=bearer(ADMIN_TOKEN), timeout=5)
    assert "cannot set a power limit" in (info.value.details() or "")


def test_fencing_tokens_grow_by_unguessable_steps(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    admin = bearer(ADMIN_TOKEN)
    tokens = []
    for _ in range(6):
        lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="c", ttl_s=60, preempt=True),
                                  metadata=admin, timeout=5).lease
        tokens.append(lease.fencing_token)
    steps = [b - a for a, b in itertools.pairwise(tokens)]
    assert all(step > 0 for step in steps), tokens
    assert len(set(steps)) > 1 and max(steps) > 1, f"steps are not predictable: {steps}"


def test_fencing_tokens_refuse_a_controller_whose_lease_was_taken(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    op, admin = bearer(OPERATOR_TOKEN), bearer(ADMIN_TOKEN)
    first = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-a", ttl_s=60), metadata=op,
                              timeout=5).lease
    # Another identity cannot take a live lease without preempting...
    assert code_of(lambda: stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-b", ttl_s=60),
                                             metadata=admin, timeout=5)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    # ...and an operator may not preempt at all.
    assert code_of(lambda: stub.AcquireLease(pb.AcquireLeaseRequest(
        holder="ctrl-a2", ttl_s=60, preempt=True), metadata=op, timeout=5)) == \
        grpc.StatusCode.PERMISSION_DENIED
    second = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-b", ttl_s=60, preempt=True),
                               metadata=admin, timeout=5).lease
    assert second.fencing_token > first.fencing_token

    def set_limit(token: int, md: list[tuple[str, str]]) -> grpc.StatusCode:
        return code_of(lambda: stub.SetPowerLimit(pb.SetPowerLimitRequest(
            device_id=host_id(rigd), power_limit_w=100, fencing_token=token), metadata=md,
            timeout=5))

    # The old holder's token is stale; no token at all is refused too.
    for token in (first.fencing_token, 0):
        with pytest.raises(grpc.RpcError) as info:
            stub.SetPowerLimit(pb.SetPowerLimitRequest(
                device_id=host_id(rigd), power_limit_w=100, fencing_token=token),
                metadata=op, timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "leased by ctrl-b" in (info.value.details() or "")
    # The live token passes the lease check and meets the device's real limit: the host
    # cannot set a power limit, which is a different refusal.
    with pytest.raises(grpc.RpcError) as info:
        stub.SetPowerLimit(pb.SetPowerLimitRequest(
            device_id=host_id(rigd), power_limit_w=100, fencing_token=second.fencing_token),
            metadata=admin, timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot set a power limit" in (info.value.details() or "")
    # The first controller can neither renew nor release what is no longer its lease.
    assert code_of(lambda: stub.RenewLease(pb.RenewLeaseRequest(
        lease_id=first.lease_id, ttl_s=10), metadata=op, timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.ReleaseLease(pb.ReleaseLeaseRequest(
        lease_id=second.lease_id), metadata=op, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_an_expired_lease_frees_the_rig_and_stales_its_token(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    op = bearer(OPERATOR_TOKEN)
    lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl", ttl_s=1), metadata=op,
                              timeout=5).lease
    deadline = time.monotonic() + 30
    while True:  # the lease runs out by the wall clock, after 1 s
        with pytest.raises(grpc.RpcError) as info:
            stub.SetPowerLimit(pb.SetPowerLimitRequest(
                device_id=host_id(rigd), power_limit_w=100, fencing_token=lease.fencing_token),
                metadata=op, timeout=5)
        if "stale" in (info.value.details() or ""):
            break
        assert time.monotonic() < deadline, info.value.details()
        time.sleep(0.1)
    other = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-2", ttl_s=5),
                              metadata=bearer(ADMIN_TOKEN), timeout=5).lease
    assert other.fencing_token > lease.fencing_token


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.AcquireLeaseRequest(holder="x", ttl_s=0), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AcquireLeaseRequest(holder="x", ttl_s=100_000), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.AcquireLeaseRequest(holder="", ttl_s=10), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.SetPowerLimitRequest(device_id="gpu/nope", power_limit_w=100),
         grpc.StatusCode.NOT_FOUND),
        (pb.GetTelemetryRequest(device_ids=["gpu/nope"]), grpc.StatusCode.NOT_FOUND),
        (pb.StreamTelemetryRequest(interval_ms=5), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_requests_get_clear_codes(shared_rigd: RigdProcess, request_: object,
                                      code: grpc.StatusCode) -> None:
    stub = shared_rigd.stub()
    method = type(request_).__name__.removesuffix("Request")
    rpc = getattr(stub, method)
    with pytest.raises(grpc.RpcError) as info:
        result = rpc(request_, timeout=5)
        if method.startswith("Stream"):
            next(iter(result))
    assert info.value.code() == code
    assert info.value.details()


def test_nan_power_limit_is_invalid(shared_rigd: RigdProcess) -> None:
    stub = shared_rigd.stub()
    with pytest.raises(grpc.RpcError) as info:
        stub.SetPowerLimit(pb.SetPowerLimitRequest(device_id=host_id(shared_rigd),
                                                   power_limit_w=float("nan")), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_delivers_successive_readings(shared_rigd: RigdProcess) -> None:
    stream = shared_rigd.stub().StreamTelemetry(pb.StreamTelemetryRequest(interval_ms=200),
                                                timeout=10)
    messages = [next(stream) for _ in range(3)]
    stream.cancel()
    times = [m.devices[0].time.ToNanoseconds() for m in messages]
    assert times == sorted(times) and len(set(times)) == 3
    assert [m.sequence for m in messages] == [1, 2, 3]


def test_a_huge_field_grows_the_audit_by_one_bounded_line(rigd: RigdProcess) -> None:
    stub = rigd.stub(tcp=True)
    log_before = rigd.log_path.stat().st_size
    code = code_of(lambda: stub.AcquireLease(
        pb.AcquireLeaseRequest(holder="x" * 60_000, ttl_s=10), timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    (line,) = audit_lines(rigd)
    assert line["request"]["holder"].endswith("…[truncated, 60000 chars]")
    assert rigd.audit_path.stat().st_size < 2000
    # Over the explicit request size limit the transport refuses it before anything is logged.
    code = code_of(lambda: stub.AcquireLease(
        pb.AcquireLeaseRequest(holder="y" * 3_900_000, ttl_s=10), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(audit_lines(rigd)) == 1
    assert rigd.log_path.stat().st_size - log_before < 8000


def test_echoed_input_is_clipped(shared_rigd: RigdProcess) -> None:
    with pytest.raises(grpc.RpcError) as info:
        shared_rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=["g" * 250]),
                                        timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    details = info.value.details() or ""
    assert "truncated, 250 chars" in details and len(details) < 500
    with pytest.raises(grpc.RpcError) as info:  # beyond the field's limit: not even looked up
        shared_rigd.stub().GetTelemetry(pb.GetTelemetryRequest(device_ids=["g" * 60_000]),
                                        timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert "at most 300 characters, got 60000" in details and len(details) < 500


def test_every_rpc_names_its_role_and_viewers_cannot_mutate(rigd: RigdProcess) -> None:
    service = pb.DESCRIPTOR.services_by_name["RigAgent"]
    assert {m.name for m in service.methods} == set(METHOD_ROLES), "every RPC has its own role"
    stub = rigd.stub(tcp=True)  # anonymous TCP: viewer
    for method in service.methods:
        request = getattr(pb, method.input_type.name)()
        rpc = getattr(stub, method.name)

        def call(rpc: Any = rpc, request: Any = request,
                 streaming: bool = method.server_streaming) -> None:
            result = rpc(request, timeout=5)
            if streaming:
                next(iter(result), None)

        code = code_of(call)
        if method.name in MUTATING:
            assert code == grpc.StatusCode.PERMISSION_DENIED, method.name
        else:
            assert code != grpc.StatusCode.PERMISSION_DENIED, method.name
    # The operator role is enough for the control calls (they fail later, for other reasons).
    for name in ("SetWorkload", "SetPowerLimit", "Curtail"):
        request = getattr(pb, f"{name}Request")()
        code = code_of(lambda name=name, request=request: getattr(stub, name)(
            request, metadata=bearer(OPERATOR_TOKEN), timeout=5))
        assert code not in (grpc.StatusCode.PERMISSION_DENIED, None), name


def test_the_audit_file_rotates_at_its_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), max_bytes=4096, backups=2)
    for n in range(200):
        audit.record(method="SetPowerLimit", n=n, request={"pad": "z" * 100})
    audit.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / f).stat().st_size <= 4096 for f in files)
    newest = [json.loads(x) for x in path.read_text().splitlines()]
    assert newest[-1]["n"] == 199
    older = [json.loads(x) for x in (tmp_path / "audit.jsonl.1").read_text().splitlines()]
    assert older[-1]["n"] == newest[0]["n"] - 1, "nothing is lost between files"
