"""rigctl as installed (the `rigctl` entry point) against a running rigd: tables for people,
JSON for scripts, one-line errors with the right exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import RigdProcess

RIGCTL = str(Path(sys.executable).with_name("rigctl"))


def rigctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RIGCTL, *args], capture_output=True, text=True, timeout=60, env=env)


def test_inventory_table_and_json(shared_rigd: RigdProcess) -> None:
    table = rigctl("--socket", shared_rigd.socket_path, "inventory")
    assert table.returncode == 0, table.stderr
    assert "rig test-rig" in table.stdout
    assert "DEVICE" in table.stdout and "BACKEND" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 100
    assert "CAPABILITIES" not in table.stdout
    wide = rigctl("--socket", shared_rigd.socket_path, "inventory", "--wide").stdout
    assert "CAPABILITIES" in wide and "telemetry" in wide
    data = json.loads(rigctl("inventory", "--json", "--socket", shared_rigd.socket_path).stdout)
    assert data["schema"] == "rigctl/v1" and data["kind"] == "inventory"
    assert data["rig_id"] == "test-rig"
    host = data["devices"][0]
    assert host["kind"] == "host", "the names the tables use"
    assert host["simulated"] is False, "false fields are printed too"
    backend = data["backends"][0]
    assert backend == {"name": "host", "available": True, "reason": "", "device_count": 1}


def test_telemetry_table_json_and_watch(shared_rigd: RigdProcess) -> None:
    table = rigctl("--address", shared_rigd.tcp_address, "telemetry")
    assert table.returncode == 0, table.stderr
    assert "rig power" in table.stdout and "cpu " in table.stdout
    data = json.loads(rigctl("telemetry", "--json", "--address", shared_rigd.tcp_address).stdout)
    host = data["devices"][0]["host"]
    assert isinstance(host["mem_total_bytes"], int), "64-bit numbers are numbers"
    assert host["mem_total_bytes"] > host["mem_used_bytes"] > 0
    assert data["devices"][0]["temp_c"] is None or isinstance(data["devices"][0]["temp_c"],
                                                                float)
    assert "gpu" in data["devices"][0] and data["devices"][0]["gpu"] is None
    watch = rigctl("telemetry", "--watch", "--count", "2", "--interval-ms", "200", "--json",
                   "--socket", shared_rigd.socket_path)
    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert len(lines) == 2 and [json.loads(line)["sequence"] for line in lines] == [1, 2]
    text = rigctl("telemetry", "--watch", "--count", "2", "--interval-ms", "200",
                  "--socket", shared_rigd.socket_path)
    assert text.stdout.count("rigctl telemetry  20") == 2, "each refresh says when it is"


def test_unreachable_rigd_is_one_line_and_exit_3(tmp_path: Path) -> None:
    result = rigctl("--socket", str(tmp_path / "none.sock"), "--timeout", "2", "inventory")
    assert result.returncode == 3
    assert result.stderr.startswith("rigctl: cannot reach rigd at unix:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_refusal_says_what_happened_without_class_names(shared_rigd: RigdProcess) -> None:
    result = rigctl("--address", shared_rigd.tcp_address, "power-limit", "host", "300")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "rigctl: not allowed: SetPowerLimit needs role operator; anonymous has viewer")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("telemetry", "--watch", "--interval-ms", "-5"), "must be within 100 .. 3600000 ms"),
        (("power-limit", "host", "0"), "must be a positive number of watts"),
        (("power-limit", "host", "nan"), "must be a positive number of watts"),
        (("switch", "host", "mining"), "invalid choice: 'mining'"),
    ],
)
def test_bad_command_lines_are_usage_errors(shared_rigd: RigdProcess, args: tuple[str, ...],
                                            fragment: str) -> None:
    result = rigctl(*args, "--socket", shared_rigd.socket_path)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_devices_are_named_as_the_tables_show_them(shared_rigd: RigdProcess) -> None:
    result = rigctl("--socket", shared_rigd.socket_path, "telemetry", "-d", "hos", "--json")
    assert result.returncode == 0, result.stderr
    assert [d["device_id"][:5] for d in json.loads(result.stdout)["devices"]] == ["host/"]
    wrong = rigctl("--socket", shared_rigd.socket_path, "telemetry", "-d", "hots")
    assert wrong.returncode == 1
    assert "no device 'hots'" in wrong.stderr and "did you mean host/" in wrong.stderr
    assert "rigctl inventory" in wrong.stderr


def test_health_lease_and_ops_commands(rigd: RigdProcess) -> None:
    health = rigctl("--socket", rigd.socket_path, "health")
    assert health.returncode == 0 and "rigd: serving" in health.stdout
    lease = json.loads(rigctl("--socket", rigd.socket_path, "lease", "acquire", "--holder",
                              "ops-test", "--ttl", "30", "--json").stdout)
    assert lease["holder"].startswith("ops-test (unix:uid=")
    assert isinstance(lease["fencing_token"], int)
    released = rigctl("--socket", rigd.socket_path, "lease", "release", lease["lease_id"])
    # Another process is another identity over the Unix socket: it may not release it.
    assert released.returncode == 1 and "not allowed" in released.stderr
    ops = rigctl("--socket", rigd.socket_path, "ops")
    assert ops.returncode == 0 and ops.stdout.startswith("OPERATION")


def test_every_command_has_help_with_its_options(shared_rigd: RigdProcess) -> None:
    from agent.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:  # type: ignore[union-attr]
        result = rigctl(name, "--help")
        assert result.returncode == 0, name
        assert "--json" in result.stdout or name in ("fpga", "certs", "completion"), name
    assert "default: 1000" in rigctl("telemetry", "--help").stdout
    assert "examples:" in rigctl("switch", "--help").stdout


def test_top_renders_plain_frames_when_not_a_terminal(shared_rigd: RigdProcess) -> None:
    result = rigctl("--socket", shared_rigd.socket_path, "top", "--count", "2",
                    "--interval-ms", "200")
    assert result.returncode == 0, result.stderr
    frames = result.stdout.strip().split("\n\n")
    assert len(frames) == 2
    assert all(frame.startswith("rig test-rig") and "power" in frame for frame in frames)
    assert all("DEVICE  KIND  WORKLOAD" in frame and " host " in frame for frame in frames)
    assert "\x1b[" not in result.stdout, "no terminal codes into a pipe"


def test_fpga_tools_run_through_the_installed_rigctl() -> None:
    examine = rigctl("fpga", "examine", "--fpga-device-types", "cpu", "--json")
    assert examine.returncode == 0, examine.stderr
    cards = json.loads(examine.stdout)
    assert cards and "Traceback" not in examine.stderr
    assert rigctl("fpga", "--help").returncode == 0


def test_a_miner_power_limit_says_what_the_firmware_applied(tmp_path: Path) -> None:
    from hal.sim.asic import SimFleet
    from tests.agent.conftest import start_rigd
    from tests.agent.test_asic_rigd import asic_section

    with SimFleet.of(["luxos"], warmup_s=0.1) as fleet:
        rigd = start_rigd(tmp_path, asic_section(fleet.discover_options()),
                          backends=("host", "asic"))
        try:
            miner = fleet.addresses[0]
            result = rigctl("--socket", rigd.socket_path, "power-limit", str(miner), "1900")
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"asic/{miner}: requested 1900 W, applied ")
            assert "its nearest setting" in result.stdout
            refused = rigctl("--socket", rigd.socket_path, "power-limit", str(miner), "900000")
            assert refused.returncode == 1
            assert refused.stderr.startswith("rigctl: invalid: ") and "W" in refused.stderr
        finally:
            rigd.stop()


def test_nvidia_smi_habits_index_all_default_and_csv(tmp_path: Path) -> None:
    """-i INDEX, every device at once, a limit back to its default, --query/--format csv."""
    import csv
    import io

    from tests.agent.conftest import simulated_gpus, start_rigd

    sim, gpus, config = simulated_gpus(tmp_path, count=3)
    rigd = start_rigd(tmp_path, config, backends=("host", "nvml"))
    try:
        socket = ("--socket", rigd.socket_path)
        by_index = dict(enumerate(gpus))  # the simulator's order is NVML's index
        one = rigctl(*socket, "telemetry", "-i", "1", "--json")
        assert one.returncode == 0, one.stderr
        assert [d["device_id"] for d in json.loads(one.stdout)["devices"]] == [by_index[1]]

        # All at once: every device with a settable limit (the GPUs, not the host).
        result = rigctl(*socket, "power-limit", "all", "300")
        assert result.returncode == 0, result.stderr
        assert sorted(line.split(":")[0] for line in result.stdout.splitlines()) == sorted(gpus)
        assert {g.power_limit_mw for g in sim.read().gpus} == {300_000}
        # Back to each GPU's own default, as the GPU reports it (NVML's default limit).
        readings = json.loads(rigctl(*socket, "telemetry", "--json").stdout)["devices"]
        defaults = {d["device_id"]: d["gpu"]["power_limit_default_w"] for d in readings
                    if d["gpu"]}
        assert 300 not in defaults.values()
        result = rigctl(*socket, "power-limit", "0", "2", "default", "--json")
        assert result.returncode == 0, result.stderr
        results = json.loads(result.stdout)["results"]
        assert [r["device_id"] for r in results] == [by_index[0], by_index[2]]
        assert [r["requested_w"] for r in results] == [defaults[by_index[0]],
                                                        defaults[by_index[2]]]
        now = {f"gpu/{g.uuid}": g.power_limit_mw for g in sim.read().gpus}
        assert now[by_index[0]] == defaults[by_index[0]] * 1000
        assert now[by_index[1]] == 300_000, "a device not named keeps its limit"
        # The host has no default to go back to: refused before anything is sent.
        host = rigctl(*socket, "power-limit", "host", "default")
        assert host.returncode == 1 and "no default power limit known for host" in host.stderr

        # CSV of chosen fields, one row per device, a missing reading an empty cell.
        table = rigctl(*socket, "telemetry", "--query",
                       "device_id,gpu.index,gpu.power_limit_enforced_w,host.cpu_count",
                       "--format", "csv")
        assert table.returncode == 0, table.stderr
        rows = list(csv.reader(io.StringIO(table.stdout)))
        assert rows[0] == ["device_id", "gpu.index", "gpu.power_limit_enforced_w",
                           "host.cpu_count"]
        gpu_rows = {r[0]: r for r in rows[1:] if r[0].startswith("gpu/")}
        assert float(gpu_rows[by_index[1]][2]) == 300.0 and gpu_rows[by_index[1]][1] == "1"
        assert gpu_rows[by_index[1]][3] == "", "a GPU has no host fields"
        bare = rigctl(*socket, "telemetry", "-i", "0", "--query", "gpu.index",
                      "--format", "csv,noheader")
        assert bare.stdout == "0\n"
        listed = rigctl(*socket, "telemetry", "--query", "help")
        assert "gpu.clock_sm_mhz" in listed.stdout.split()
        wrong = rigctl(*socket, "telemetry", "--query", "gpu.clock_sm", "--format", "csv")
        assert wrong.returncode == 2 and "did you mean gpu.clock_sm_mhz?" in wrong.stderr
    finally:
        rigd.stop()
