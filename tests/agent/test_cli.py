"""rigctl against a running rigd: tables for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.agent.conftest import RigdProcess


def rigctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_inventory_table_and_json(rigd: RigdProcess) -> None:
    table = rigctl("--socket", rigd.socket_path, "inventory")
    assert table.returncode == 0, table.stderr
    assert "rig test-rig" in table.stdout
    assert "DEVICE" in table.stdout and "host/" in table.stdout
    assert "BACKEND" in table.stdout
    data = json.loads(rigctl("--socket", rigd.socket_path, "inventory", "--json").stdout)
    assert data["rig_id"] == "test-rig"
    assert data["devices"][0]["kind"] == "DEVICE_KIND_HOST"


def test_telemetry_table_json_and_watch(rigd: RigdProcess) -> None:
    table = rigctl("--address", rigd.tcp_address, "telemetry")
    assert table.returncode == 0, table.stderr
    assert "cpu " in table.stdout and "mem " in table.stdout
    data = json.loads(rigctl("--address", rigd.tcp_address, "telemetry", "--json").stdout)
    host = data["devices"][0]["host"]
    assert int(host["mem_total_bytes"]) > int(host["mem_used_bytes"]) > 0
    watch = rigctl("--socket", rigd.socket_path, "telemetry", "--watch", "--count", "2",
                   "--interval-ms", "200")
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count("--- #") == 2


def test_unreachable_rigd_is_one_line(tmp_path: Path) -> None:
    result = rigctl("--socket", str(tmp_path / "none.sock"), "--timeout", "2", "inventory")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("rigctl: error:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_refusal_is_reported_with_its_code(rigd: RigdProcess) -> None:
    result = rigctl("--address", rigd.tcp_address, "power-limit", "gpu/none", "300")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "rigctl: error: PERMISSION_DENIED: SetPowerLimit needs role operator; anonymous has viewer"
    )
