"""rigd as installed (the `rigd` entry point) at start-up: what stops it is one line with the OS's
reason and exit code 2; the file it reads without -c; colour only on a terminal."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import daemon
from agent.core import certs
from tests.agent.conftest import write_config
from tests.agent.test_daemon import assert_one_clean_error
from tests.ports import free_port

RIGD = str(Path(sys.executable).with_name("rigd"))


def rigd(*args: str, env: dict[str, str] | None = None, timeout: float = 60
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIGD, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def config(tmp_path: Path, extra: str = "", **settings: dict[str, object]) -> Path:
    path = tmp_path / "rigd.toml"
    write_config(path, str(tmp_path / "rigd.sock"), free_port(), tmp_path / "audit.jsonl",
                 extra, settings=settings)
    return path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pki = tmp_path_factory.mktemp("pki")
    certs.init(pki, certs.server_names(["localhost"]), ["ops"], days=1, ca_days=1)
    return pki


def tls(pki: Path, cert: str = "server.pem", key: str = "server.key") -> dict[str, object]:
    return {"cert_file": str(pki / cert), "key_file": str(pki / key),
            "client_ca_file": str(pki / "ca.pem")}


def test_paths_under_a_regular_file_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "f"  # short: a socket path is at most 80 bytes
    blocker.write_text("not a directory")
    state = {"state_dir": str(tmp_path / "state")}
    cases = [
        ({"server": {"unix_socket": str(blocker / "s")}}, "for the unix socket"),
        ({"server": {"unix_socket": str(blocker / "r" / "s")}},
         "for the unix socket"),
        ({"workloads": {"state_dir": str(blocker / "state")}}, "for rigd's state"),
        ({"audit": {"path": str(blocker / "audit.jsonl")}}, "cannot open the audit log"),
    ]
    for settings, fragment in cases:
        result = rigd("--config", str(config(tmp_path, **{"workloads": state, **settings})))
        assert_one_clean_error(result, fragment)
        assert f"{blocker} is a file, not a directory" in result.stderr
    assert blocker.read_text() == "not a directory"
    assert not (tmp_path / "rigd.sock").exists()


def test_bind_failures_say_the_os_reason(tmp_path: Path, tls_files: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config(tmp_path, server={"tcp_address": f"127.0.0.1:{port}"})
        assert_one_clean_error(rigd("--config", str(path)),
                               f"cannot listen on 127.0.0.1:{port}: Address already in use")
    # An address this machine does not have (TEST-NET-1): nothing is exposed, the bind fails.
    elsewhere = f"192.0.2.1:{free_port()}"
    path = config(tmp_path, server={"tcp_address": elsewhere, "allow_non_loopback": True},
                  tls=tls(tls_files))
    assert_one_clean_error(rigd("--config", str(path)),
                           f"cannot listen on {elsewhere}: Cannot assign requested address")
    assert not (tmp_path / "rigd.sock").exists(), "the unix socket is released"


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"cert": "ca.key"}, "holds no PEM certificate"),
        ({"key": "ca.pem"}, "is unusable: no PEM private key"),
        ({"key": "ops.key"}, "does not belong to the certificate"),
    ],
)
def test_unusable_tls_files_are_named_before_listening(
        tmp_path: Path, tls_files: Path, files: dict[str, str], fragment: str) -> None:
    path = config(tmp_path, tls=tls(tls_files, **files))
    assert_one_clean_error(rigd("--config", str(path), "--check-config"), fragment)
    result = rigd("--config", str(path))
    assert_one_clean_error(result, fragment)
    assert "E0" not in result.stderr and "add_port" not in result.stderr, "no gRPC log lines"


def test_rigd_config_names_the_file_read_without_c(tmp_path: Path) -> None:
    """$RIGD_CONFIG stands in for /etc/rigd/rigd.toml (documented in `rigd --help`)."""
    path = config(tmp_path)
    env = {**os.environ, "RIGD_CONFIG": str(path)}
    checked = rigd("--check-config", env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == f"rigd: {path}: configuration is valid\n"
    missing = rigd("--check-config", env={**env, "RIGD_CONFIG": str(tmp_path / "none.toml")})
    assert_one_clean_error(missing, "does not exist")
    env.pop("RIGD_CONFIG")
    assert "/etc/rigd/rigd.toml if present" in rigd("--help", env=env).stdout


def _can_overlay_etc() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                           capture_output=True, timeout=30) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_overlay_etc(), reason="needs unshare with user namespaces")
def test_without_c_rigd_reads_etc_rigd_rigd_toml(tmp_path: Path) -> None:
    """The real /etc/rigd/rigd.toml, in a private mount namespace: /etc is overlaid with a
    directory that holds rigd/rigd.toml, so nothing on the machine is touched."""
    upper, work = tmp_path / "upper", tmp_path / "work"
    (upper / "rigd").mkdir(parents=True)
    work.mkdir()
    script = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc '
              '|| exit 99; shift 2; exec "$@"')
    env = {k: v for k, v in os.environ.items() if k != "RIGD_CONFIG"}

    def in_namespace(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             str(upper), str(work), RIGD, *args], capture_output=True, text=True, timeout=60,
            env=env)
        if result.returncode == 99:
            pytest.skip(f"overlayfs in a user namespace: {result.stderr.strip()}")
        return result

    (upper / "rigd" / "rigd.toml").write_text(config(tmp_path).read_text())
    result = in_namespace("--check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "rigd: /etc/rigd/rigd.toml: configuration is valid\n"
    (upper / "rigd" / "rigd.toml").write_text('[server]\nunix_sockett = "/x"\n')
    assert_one_clean_error(in_namespace("--check-config"),
                           "/etc/rigd/rigd.toml [server] (did you mean 'unix_socket'?)")
    assert not Path("/etc/rigd/rigd.toml").exists() or \
        "unix_sockett" not in Path("/etc/rigd/rigd.toml").read_text()


def _read_until(fd: int, marker: bytes, limit_s: float = 60) -> bytes:
    """Read from `fd` until `marker` shows (select's timeout bounds each wait)."""
    data = b""
    while marker not in data:
        ready, _, _ = select.select([fd], [], [], limit_s)
        if not ready:
            raise AssertionError(f"no {marker!r} within {limit_s} s: {data!r}")
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a pty whose other end closed
            chunk = b""
        if not chunk:
            raise AssertionError(f"ended before {marker!r}: {data!r}")
        data += chunk
    return data


@pytest.mark.parametrize("terminal", [False, True])
def test_console_log_colours_only_a_terminal(tmp_path: Path, terminal: bool) -> None:
    path = config(tmp_path)
    read_fd, write_fd = pty.openpty() if terminal else os.pipe()
    proc = subprocess.Popen([RIGD, "--config", str(path), "--log-format", "console"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=write_fd)
    os.close(write_fd)
    try:
        text = _read_until(read_fd, b"serving")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        os.close(read_fd)
    assert (b"\x1b[" in text) is terminal, text
    assert b"serving" in text and b'"event"' not in text, "console format, not JSON"


def _miners_config(tmp_path: Path, count: int) -> Path:
    """`count` miners listed with their family (nothing is identified), on loopback ports where
    nothing listens."""
    miners = ",\n  ".join(f'{{ address = "127.0.0.1:{port}", family = "luxos" }}'
                          for port in range(40000, 40000 + count))
    path = tmp_path / "rigd.toml"
    write_config(path, str(tmp_path / "rigd.sock"), free_port(), tmp_path / "audit.jsonl",
                 f"[hal.asic]\ntimeout_s = 1.0\nminers = [\n  {miners},\n]\n",
                 backends=("host", "asic"))
    return path


def _with_nofile(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return limit


def test_a_fleet_beyond_the_descriptor_limit_is_refused_in_one_line(tmp_path: Path) -> None:
    """300 miners need 300 x 3 connections + rigd's own: with a hard limit of 600 rigd says
    what `ulimit -n` it needs and does not start."""
    need = 300 * 3 + daemon.OWN_DESCRIPTORS
    result = subprocess.run([RIGD, "-c", str(_miners_config(tmp_path, 300))],
                            capture_output=True, text=True, timeout=60,
                            preexec_fn=_with_nofile(600, 600))
    assert_one_clean_error(result, f"need `ulimit -n` {need}")
    assert "hard limit" in result.stderr and f"LimitNOFILE={need}" in result.stderr
    assert not (tmp_path / "rigd.sock").exists(), "refused before listening"


def test_a_soft_limit_too_low_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    """The same fleet where the hard limit allows it: the soft limit is raised (and logged),
    rigd serves."""
    log_path = tmp_path / "rigd.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([RIGD, "-c", str(_miners_config(tmp_path, 300))],
                                stdout=subprocess.DEVNULL, stderr=log,
                                preexec_fn=_with_nofile(600, 4096))
    try:
        deadline = time.monotonic() + 60
        while "serving" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "rigd did not start"
            time.sleep(0.1)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        (line,) = [row for row in limits.splitlines() if row.startswith("Max open files")]
        assert line.split()[3:5] == ["4096", "4096"], line
        raised = [json.loads(row) for row in log_path.read_text().splitlines()
                  if "file_descriptor_limit_raised" in row]
        assert raised and raised[0]["soft_limit_was"] == 600 and raised[0]["limit"] == 4096
        assert raised[0]["needed"] == 300 * 3 + daemon.OWN_DESCRIPTORS
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
