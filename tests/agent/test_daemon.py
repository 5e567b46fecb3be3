"""rigd as a process: serving, reflection, health during shutdown, and start-up refusals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.agent.conftest import (
    DRAIN_OBSERVED_S,
    RigdProcess,
    free_port,
    start_rigd,
    write_config,
)


def run_rigd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.main", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def assert_one_clean_error(
    result: subprocess.CompletedProcess[str], fragment: str, *, after_discovery: bool = False
) -> None:
    """Exit 2 and one `rigd: error:` line; nothing else unless discovery had run (its log)."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("rigd: error: ")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0]
    if not after_discovery:
        assert lines == errors, result.stderr
    assert "Traceback" not in result.stderr


def test_reflection_alone_lists_services_and_calls_inventory(shared_rigd: RigdProcess) -> None:
    """A client with no generated code: everything it knows comes from server reflection."""
    channel = grpc.insecure_channel(shared_rigd.tcp_address)
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"rig.v1.RigAgent", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services

    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("rig.v1.RigAgent").FindMethodByName("GetInventory")
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    assert response_cls.DESCRIPTOR.file.pool is pool  # not the generated module's classes

    call = channel.unary_unary(
        "/rig.v1.RigAgent/GetInventory",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    inventory = call(request_cls(), timeout=5)
    assert inventory.rig_id == "test-rig"
    ids = [d.id for d in inventory.devices]
    assert any(i.startswith("host/") for i in ids)
    host = next(d for d in inventory.devices if d.id.startswith("host/"))
    assert "telemetry" in host.capabilities
    assert [b.name for b in inventory.backends] == ["host"]


@pytest.fixture
def draining_rigd(tmp_path: Path) -> Iterator[RigdProcess]:
    """A rigd whose drain is long enough to watch NOT_SERVING arrive during it."""
    process = start_rigd(tmp_path, settings={"server": {"drain_s": DRAIN_OBSERVED_S}})
    yield process
    process.stop()


def test_health_turns_not_serving_before_the_listener_closes(draining_rigd: RigdProcess
                                                             ) -> None:
    rigd = draining_rigd
    channel = grpc.insecure_channel(rigd.tcp_address)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="rig.v1.RigAgent"), timeout=30
    )
    first = next(watch)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    rigd.proc.send_signal(signal.SIGTERM)
    second = next(watch)
    alive_when_told = rigd.proc.poll() is None
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert alive_when_told, "NOT_SERVING must be announced while rigd still listens"
    assert rigd.proc.wait(timeout=30) == 0
    assert not Path(rigd.socket_path).exists(), "socket file is removed on shutdown"
    log = rigd.log_path.read_text()
    assert '"event": "shutting_down"' in log and '"event": "stopped"' in log


def test_sigint_also_stops_cleanly(rigd: RigdProcess) -> None:
    rigd.proc.send_signal(signal.SIGINT)
    assert rigd.proc.wait(timeout=30) == 0
    assert "Traceback" not in rigd.log_path.read_text()


def test_unknown_config_key_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text('[server]\ntcp_adress = "127.0.0.1:1"\n')
    result = run_rigd("--config", str(config))
    assert_one_clean_error(result, "unknown key 'tcp_adress'")
    assert "did you mean 'tcp_address'" in result.stderr


def test_malformed_toml_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text('[server\nunix_socket = "/tmp/x.sock"\n')
    assert_one_clean_error(run_rigd("--config", str(config)), "is not valid TOML")


def test_missing_config_file_is_one_clear_error(tmp_path: Path) -> None:
    assert_one_clean_error(run_rigd("--config", str(tmp_path / "nope.toml")), "does not exist")


def test_wrong_value_type_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text("[telemetry]\ninterval_s = \"fast\"\n")
    assert_one_clean_error(run_rigd("--config", str(config)), "telemetry.interval_s must be")


def test_non_loopback_tcp_needs_explicit_opt_in(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    config.write_text('[server]\ntcp_address = "0.0.0.0:50051"\n')
    assert_one_clean_error(run_rigd("--config", str(config)), "not a loopback address")


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "rigd.toml"
        write_config(config, str(tmp_path / "rigd.sock"), port, tmp_path / "audit.jsonl")
        result = run_rigd("--config", str(config))
    assert_one_clean_error(result, f"cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "rigd.sock").exists()


def test_socket_path_served_by_another_rigd_is_refused(rigd: RigdProcess, tmp_path: Path) -> None:
    config = tmp_path / "second.toml"
    write_config(config, rigd.socket_path, free_port(), tmp_path / "audit2.jsonl")
    assert_one_clean_error(run_rigd("--config", str(config)), "in use by another running process")
    # The first rigd is unharmed.
    from rigapi import pb

    assert rigd.stub().GetInventory(pb.GetInventoryRequest(), timeout=5).rig_id == "test-rig"


def test_socket_path_that_is_a_regular_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "rigd.sock"
    path.write_text("precious")
    config = tmp_path / "rigd.toml"
    write_config(config, str(path), free_port(), tmp_path / "audit.jsonl")
    assert_one_clean_error(run_rigd("--config", str(config)), "exists and is not a socket")
    assert path.read_text() == "precious"


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "rigd.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    rigd = start_rigd(tmp_path)
    try:
        assert rigd.proc.poll() is None
    finally:
        assert rigd.stop() == 0


def test_check_config_validates_without_serving(tmp_path: Path) -> None:
    config = tmp_path / "rigd.toml"
    write_config(config, str(tmp_path / "rigd.sock"), free_port(), tmp_path / "audit.jsonl")
    started = time.monotonic()
    result = run_rigd("--config", str(config), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert not (tmp_path / "rigd.sock").exists()
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("tcp", [False, True])
def test_inventory_over_both_transports(shared_rigd: RigdProcess, tcp: bool) -> None:
    from rigapi import pb

    inventory = shared_rigd.stub(tcp=tcp).GetInventory(pb.GetInventoryRequest(), timeout=5)
    assert inventory.agent_version
    assert len(inventory.devices) == 1
