"""`rigctl certs init` as installed, and a remote-style rigctl over mTLS with what it made: a
rigd on a loopback TCP port with those certificates, roles from the certificate's name, and
one-line refusals for a wrong CA, a wrong client certificate and no certificate at all."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.agent.conftest import RigdProcess, start_rigd
from tests.agent.test_cli import RIGCTL, rigctl


def snippet(stdout: str) -> dict[str, object]:
    """The rigd.toml lines `certs init` prints, parsed as TOML."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# rigd: add to"))
    end = lines.index("", start)
    return tomllib.loads("\n".join(lines[start + 1:end]))


def certs_init(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return rigctl("certs", "init", str(directory), *args)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rigctl: "), result.stderr
    return lines[0]


def test_certs_init_writes_a_ca_a_server_and_clients(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    result = certs_init(pki, "--server-name", "rig12.example.net", "--server-name", "10.0.0.12",
                        "--client-name", "ops=admin", "--client-name", "ctrl-a=operator",
                        "--days", "2")
    assert result.returncode == 0, result.stderr
    names = ["ca", "server", "ops", "ctrl-a"]
    for name in names:
        assert stat.S_IMODE((pki / f"{name}.key").stat().st_mode) == 0o600, name
        assert stat.S_IMODE((pki / f"{name}.pem").stat().st_mode) == 0o644, name
    ca = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((pki / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["rig12.example.net", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.12", "127.0.0.1", "::1"], "loopback is included"
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    lifetime = server.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=1) < lifetime <= datetime.timedelta(days=2)
    for name in ("server", "ops", "ctrl-a"):
        leaf = x509.load_pem_x509_certificate((pki / f"{name}.pem").read_bytes())
        leaf.verify_directly_issued_by(ca)
    ctrl = x509.load_pem_x509_certificate((pki / "ctrl-a.pem").read_bytes())
    assert ctrl.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ctrl-a"

    config = snippet(result.stdout)
    assert config["server"] == {"tcp_address": "10.0.0.12:50051", "allow_non_loopback": True}
    assert config["tls"] == {"cert_file": str(pki / "server.pem"),
                             "key_file": str(pki / "server.key"),
                             "client_ca_file": str(pki / "ca.pem")}
    assert config["auth"] == {"certificate_roles": {"ops": "admin", "ctrl-a": "operator"}}
    assert f"--ca {pki / 'ca.pem'} --cert {pki / 'ops.pem'} --key {pki / 'ops.key'}" in \
        result.stdout
    assert f"RIGCTL_CERT={pki / 'ops.pem'}" in result.stdout

    # Nothing is overwritten without --force, not even the files that do not exist yet.
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    (pki / "ops.key").unlink()
    again = certs_init(pki)
    assert again.returncode == 1
    assert "already holds ca.pem, ca.key, server.pem, server.key" in one_line(again)
    assert sorted(p.name for p in pki.iterdir()) == sorted(set(before) - {"ops.key"})
    forced = certs_init(pki, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (pki / "ca.pem").read_bytes() != before["ca.pem"]
    assert stat.S_IMODE((pki / "server.key").stat().st_mode) == 0o600


def test_certs_init_key_group_and_bad_names(tmp_path: Path) -> None:
    result = certs_init(tmp_path, "--key-group", str(os.getgid()), "--server-name", "localhost")
    assert result.returncode == 0, result.stderr
    key = (tmp_path / "server.key").stat()
    assert stat.S_IMODE(key.st_mode) == 0o640 and key.st_gid == os.getgid()
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert snippet(result.stdout)["server"] == {"tcp_address": "127.0.0.1:50051"}, \
        "only loopback names: a loopback listener"
    bad = certs_init(tmp_path / "x", "--client-name", "ops=root")
    assert bad.returncode == 2 and "role 'root'" in bad.stderr
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RigdProcess, Path]]:
    """rigd with the [tls] and [auth] lines `certs init` printed, on a loopback port."""
    tmp = tmp_path_factory.mktemp("mtls")
    result = certs_init(tmp / "pki", "--client-name", "ops=operator",
                        "--client-name", "watcher=viewer")
    assert result.returncode == 0, result.stderr
    printed = snippet(result.stdout)
    roles = printed["auth"]["certificate_roles"]  # type: ignore[index]
    extra = "[tls]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                for k, v in printed["tls"].items())  # type: ignore[attr-defined]
    extra += "[auth.certificate_roles]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in roles.items())
    rigd = start_rigd(tmp, extra)
    yield rigd, tmp / "pki"
    rigd.stop()


def remote(rigd: RigdProcess, pki: Path, client: str, *args: str,
           ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    return rigctl("--address", rigd.tcp_address, "--ca", str(ca or pki / "ca.pem"),
                  "--cert", str(pki / f"{client}.pem"), "--key", str(pki / f"{client}.key"),
                  "--timeout", "10", *args)


def test_remote_rigctl_over_mtls_takes_its_role_from_the_certificate(
        mtls: tuple[RigdProcess, Path]) -> None:
    rigd, pki = mtls
    inventory = remote(rigd, pki, "ops", "inventory", "--json")
    assert inventory.returncode == 0, inventory.stderr
    assert json.loads(inventory.stdout)["rig_id"] == "test-rig"
    lease = remote(rigd, pki, "ops", "lease", "acquire", "--holder", "ops", "--ttl", "5")
    assert lease.returncode == 0, lease.stderr
    audit = [json.loads(line) for line in rigd.audit_path.read_text().splitlines()]
    assert audit[-1]["identity"] == "cert:ops" and audit[-1]["outcome"] == "OK"
    refused = remote(rigd, pki, "watcher", "lease", "acquire", "--holder", "w")
    assert refused.returncode == 1
    assert one_line(refused) == \
        "rigctl: not allowed: AcquireLease needs role operator; cert:watcher has viewer"


def test_remote_rigctl_takes_mtls_from_the_environment(mtls: tuple[RigdProcess, Path]) -> None:
    rigd, pki = mtls
    env = {**os.environ, "RIGD_ADDRESS": rigd.tcp_address, "RIGCTL_CA": str(pki / "ca.pem"),
           "RIGCTL_CERT": str(pki / "watcher.pem"), "RIGCTL_KEY": str(pki / "watcher.key")}
    result = subprocess.run([RIGCTL, "health"], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert "rigd: serving" in result.stdout


def test_wrong_ca_wrong_certificate_and_no_certificate_are_refused(
        mtls: tuple[RigdProcess, Path], tmp_path: Path) -> None:
    rigd, pki = mtls
    other = tmp_path / "other"
    assert certs_init(other, "--client-name", "ops=admin").returncode == 0

    wrong_ca = remote(rigd, pki, "ops", "inventory", ca=other / "ca.pem")
    assert wrong_ca.returncode == 3
    assert one_line(wrong_ca) == (
        f"rigctl: cannot reach rigd at {rigd.tcp_address}: TLS handshake failed: rigd's "
        f"certificate is not signed by the CA in {other / 'ca.pem'} (--ca), or has expired")

    stranger = remote(rigd, other, "ops", "inventory", ca=pki / "ca.pem")
    assert stranger.returncode == 3
    assert one_line(stranger).endswith(
        f"rigd refused the TLS handshake: it does not accept {other / 'ops.pem'} (not signed "
        "by the CA in its [tls] client_ca_file, or expired)")

    plain = rigctl("--address", rigd.tcp_address, "inventory")
    assert plain.returncode == 3
    assert "if it serves mTLS, give --ca, --cert and --key" in one_line(plain)

    ca_only = rigctl("--address", rigd.tcp_address, "--ca", str(pki / "ca.pem"), "inventory")
    assert ca_only.returncode == 2
    assert one_line(ca_only) == ("rigctl: mTLS needs --ca, --cert and --key together: --cert "
                                 "(env RIGCTL_CERT), --key (env RIGCTL_KEY) not given")

    misnamed = remote(rigd, pki, "ops", "inventory", "--server-name", "elsewhere.example")
    assert misnamed.returncode == 3
    assert "rigd's certificate is not for elsewhere.example" in one_line(misnamed)
