"""mTLS on TCP: client certificates are required, and a certificate's common name carries a role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rigapi import pb, pb_grpc
from tests.agent.conftest import RigdProcess, start_rigd


@pytest.fixture
def rigd_tls(tmp_path: Path, pki: Path) -> Iterator[RigdProcess]:
    extra = f"""
[auth.certificate_roles]
"ctrl-a" = "operator"
[tls]
cert_file = "{pki / 'server.pem'}"
key_file = "{pki / 'server.key'}"
client_ca_file = "{pki / 'ca.pem'}"
"""
    rigd = start_rigd(tmp_path, extra)
    yield rigd
    rigd.stop()


def _stub(rigd: RigdProcess, pki: Path, client: str | None) -> pb_grpc.RigAgentStub:
    key = (pki / f"{client}.key").read_bytes() if client else None
    cert = (pki / f"{client}.pem").read_bytes() if client else None
    credentials = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes(), key, cert)
    return pb_grpc.RigAgentStub(grpc.secure_channel(rigd.tcp_address, credentials))


def test_certificate_common_name_grants_its_role(rigd_tls: RigdProcess, pki: Path) -> None:
    stub = _stub(rigd_tls, pki, "ctrl-a")
    lease = stub.AcquireLease(pb.AcquireLeaseRequest(holder="ctrl-a", ttl_s=10), timeout=10)
    assert lease.lease.fencing_token > 0
    audit = [json.loads(line) for line in rigd_tls.audit_path.read_text().splitlines()]
    assert audit[-1]["identity"] == "cert:ctrl-a" and audit[-1]["outcome"] == "OK"


def test_unmapped_certificate_only_reads(rigd_tls: RigdProcess, pki: Path) -> None:
    stub = _stub(rigd_tls, pki, "stranger")
    assert stub.GetInventory(pb.GetInventoryRequest(), timeout=10).rig_id == "test-rig"
    with pytest.raises(grpc.RpcError) as info:
        stub.AcquireLease(pb.AcquireLeaseRequest(holder="x", ttl_s=10), timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "cert:stranger has viewer" in (info.value.details() or "")


def test_client_without_a_certificate_is_refused(rigd_tls: RigdProcess, pki: Path) -> None:
    stub = _stub(rigd_tls, pki, None)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetInventory(pb.GetInventoryRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The local Unix socket is unaffected.
    assert rigd_tls.stub().GetInventory(pb.GetInventoryRequest(), timeout=10).devices


def test_plaintext_client_cannot_talk_to_a_tls_port(rigd_tls: RigdProcess) -> None:
    with pytest.raises(grpc.RpcError):
        rigd_tls.stub(tcp=True).GetInventory(pb.GetInventoryRequest(), timeout=5)
