"""The configuration: every key known, every value checked where it is declared, every backend's
options checked by `--check-config` before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent.config.settings as cfg
from tests.agent.test_daemon import assert_one_clean_error, run_rigd


@pytest.mark.processes
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[hal.asic]\ntimeout_s = "3s"\n', "timeout_s"),
        ('[hal]\nbackends = ["host", "cuda"]\n', "unknown backend 'cuda'"),
        ("[hal.nvml]\nbogus = true\n", "bogus"),
        ("[hal.nvmll]\nlibrary_path = \"/x\"\n", "unknown backend 'nvmll' (did you mean 'nvml'?)"),
        ('[hal]\nbackends = ["host"]\n[hal.asic]\ntimeout_s = 2\n',
         "[hal.asic] has no effect: asic is not in hal.backends"),
        ("[hal.opencl]\nfpga_device_types = [\"fpga\"]\n", "fpga_device_types"),
        ("[hal.host]\nhostname = 7\n", "hostname"),
        ("[telemetry]\ninterval_s = 0.01\n", "telemetry.interval_s must be within 0.1 .. 3600"),
        ("[server]\nmax_request_bytes = 100\n", "server.max_request_bytes must be within"),
        ('[server]\nunix_socket_mode = "0999"\n', "unix_socket_mode must be octal text"),
        ('[log]\nformat = "xml"\n', "log.format must be one of json, console"),
        ('[auth]\nanonymous_role = "root"\n', "auth.anonymous_role must be one of"),
        ('[[auth.tokens]]\nname = "c"\nrole = "operator"\n', "lacks sha256"),
        ('[pool]\nversion_rolling = "maybe"\n', "version_rolling must be one of auto, on, off"),
        ('[pool]\nurls = ["http://127.0.0.1:1"]\n', "pool URL must start with stratum+tcp://"),
        ("[workloads]\nmin_dwell_s = -1\n", "workloads.min_dwell_s must be within"),
        ('[inference.profiles.mine]\nargv = ["x"]\ndevices = ["tpu"]\n', "'tpu'"),
        ('[inference.profiles.vllm]\nwarm_standby = true\nsleep_path = ""\nwake_path = ""\n',
         "warm_standby needs the runtime's sleep mode"),
        ('[inference.profiles.mine]\nargv = ["x", "{gpu}"]\n', "unknown placeholder"),
        ('[inference.profiles.vllm]\nstop_signal = "SIGSTOP"\n', "stop_signal must be one of"),
        ('[inference.profiles.vllm]\nmodle = "x"\n', "unknown key 'modle'"),
        ('[openadr]\nvtn_url = "http://192.0.2.7:8080/OpenADR2/Simple/2.0b"\n',
         "is not on loopback: a VTN elsewhere needs https://"),
        ('[openadr]\nvtn_url = "127.0.0.1:8080"\n', "must be an http:// or https:// URL"),
        ('[openadr]\nsimple_levels = { "4" = 0.5 }\n', "levels are 1, 2 and 3"),
        ('[openadr]\nsimple_levels = { "1" = 0.25, "2" = 0.5 }\n',
         "a higher level must not leave the rig more power"),
        ('[openadr]\nsimple_levels = { "1" = 1.5 }\n', "in (0, 1]"),
        ("[openadr]\ndeadline_s = 0\n", "openadr.deadline_s must be within 1 .. 3600"),
        ('[openadr]\ncert_file = "/etc/rigd/ven.pem"\n', "cert_file, key_file and ca_file"),
        ('[metrics]\naddress = "0.0.0.0:9477"\n',
         "metrics.address 0.0.0.0:9477 is not a loopback address"),
        ('[server]\nallow_non_loopback = true\n[metrics]\naddress = "0.0.0.0:9477"\n',
         "listening on 0.0.0.0 needs TLS: set metrics.cert_file and metrics.key_file"),
        ('[metrics]\ncert_file = "/etc/rigd/metrics.pem"\n', "needs cert_file and key_file"),
        ('[metrics]\naddress = "localhost"\n', "must be host:port"),
    ],
)
def test_check_config_refuses_what_start_up_would(tmp_path: Path, text: str, fragment: str
                                                   ) -> None:
    path = tmp_path / "rigd.toml"
    path.write_text(text)
    assert_one_clean_error(run_rigd("--config", str(path), "--check-config"), fragment)
    # The same one line stops a real start-up, before anything listens.
    path.write_text(f'[server]\nunix_socket = "{tmp_path}/r.sock"\n' + text
                    if not text.startswith("[server]") else text)
    assert_one_clean_error(run_rigd("--config", str(path)), fragment)
    assert not (tmp_path / "r.sock").exists()


def test_every_setting_is_declared_once_with_its_help() -> None:
    declared = list(cfg.declarations(cfg.Config))
    names = [s.name for s in declared]
    assert len(names) == len(set(names))
    fields = {f for f in cfg.Config.__dataclass_fields__ if f != "demo"}
    assert set(names) == fields, "a Config field without a declaration cannot be set"
    assert all(s.help for s in declared)
    paths = [s.path for s in declared]
    assert len(paths) == len(set(paths)), "two settings share a TOML key"


@pytest.mark.processes
def test_print_config_shows_every_key_with_its_default() -> None:
    result = run_rigd("--print-config")
    assert result.returncode == 0, result.stderr
    for setting in cfg.declarations(cfg.Config):
        if setting.name in ("tokens", "hashing", "backend_options"):
            continue
        assert f"# {setting.key} = " in result.stdout, setting.path
    assert '# unix_socket_mode = "0660"' in result.stdout
    assert "[[hashing]]" in result.stdout and "# version_rolling = " in result.stdout


def test_defaults_and_a_full_file_load(tmp_path: Path) -> None:
    assert cfg.from_dict({}) == cfg.Config(rig_id=cfg.Config().rig_id)
    path = tmp_path / "rigd.toml"
    path.write_text(
        'rig_id = "r1"\n[server]\nunix_socket_mode = "0600"\nmax_streams = 10\n'
        '[audit]\nmax_bytes = 8192\nbackups = 1\n'
        '[pool]\nurls = ["stratum+tcp://127.0.0.1:3333"]\nversion_rolling = "off"\n'
        '[inference.profiles.vllm]\nmodel = "Qwen/Qwen3-0.6B"\n'
        '[[hashing]]\ndevice = "auto"\nintensity = 0.25\n')
    config = cfg.load(path)
    assert config.rig_id == "r1" and config.unix_socket_mode == 0o600
    assert config.max_streams == 10 and config.audit_max_bytes == 8192
    assert config.pool_urls == ("stratum+tcp://127.0.0.1:3333",)
    assert config.pool_version_rolling == "off"
    (hashing,) = config.hashing
    assert hashing.pools == () and hashing.intensity == 0.25
    from agent.config.profiles import resolve

    vllm = resolve(config.inference_profiles)["vllm"]
    assert vllm.model == "Qwen/Qwen3-0.6B", "a key changes the shipped profile..."
    assert vllm.ready_model_listed and vllm.warm_standby, "...and the rest stays as shipped"
