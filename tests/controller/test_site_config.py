"""site.toml: strict like rigd.toml (unknown keys named, with a did-you-mean), every value
checked, the settings that only make sense together checked together; `rigsite run` exits 2
saying what is wrong."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, describe, from_dict, load
from tests.controller.live_site import ROOT

BASE: dict[str, Any] = {"rigs": {"endpoints": ["unix:/run/rigd/rigd.sock"]},
                        "price": {"source": "file", "file": "/var/lib/rigsite/price.csv"}}


def config(**sections: Any) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def test_a_minimal_site_and_its_policy() -> None:
    c = from_dict(config(policy={"shed_windows": 3, "max_switches_per_round": 0}))
    assert c.policy.shed_windows == 3 and c.policy.max_switches_per_round is None
    assert c.policy.prices.max_age_s == 900.0  # the safe default


@pytest.mark.parametrize(("data", "message"), [
    (config(intervl_s=5), "unknown key 'intervl_s' in config (did you mean 'interval_s'?)"),
    (config(price={"max_age": 60}),
     "unknown key 'max_age' in config [price] (did you mean 'max_age_s'?)"),
    (config(hashprice=[{"algorithm": "sha256d", "source": "fixed", "usd_per_th": 0.05}]),
     "unknown key 'usd_per_th' in config: hashprice[0] (did you mean 'usd_per_th_day'?)"),
    (config(inference=[{"profile": "llm"}]), "inference[0] lacks capacity_rps_per_gpu"),
    (config(interval_s="fast"), "interval_s must be a number, got str 'fast'"),
    (config(interval_s=0), "interval_s must be within 0.05 .. 3600, got 0.0"),
    (config(price={"source": "rss"}), "price.source must be one of file, http, openadr"),
    (config(rigs={"file": "/etc/rigsite/rigs.txt"}), "name the rigs in one way"),
    (config(rigs={"endpoints": [], "ca_file": "/ca.pem"}), "name the rigs in one way"),
    (config(rigs={"ca_file": "/ca.pem"}), "mTLS needs ca_file, cert_file and key_file"),
    (config(price={"source": "http"}), 'price.source "http" needs price.url'),
    (config(price={"source": "openadr"}), "needs [openadr] vtn_url"),
    (config(price={"source": "http", "url": "ftp://x/y"}), "is not an http:// or https:// URL"),
    (config(hashprice=[{"algorithm": "sha256d", "source": "computed"}]),
     "computed needs coin_price_path or coin_price_usd"),
    (config(hashprice=[{"algorithm": "sha256d", "source": "fixed", "usd_per_th_day": 0.05},
                       {"algorithm": "sha256d", "source": "fixed", "usd_per_th_day": 0.06}]),
     "two [[hashprice]] entries for one algorithm"),
    (config(metrics={"address": "0.0.0.0:9310"}), "is not loopback"),
    (config(openadr={"simple_levels": {"4": 0.5}}), "levels 1..3"),
    (config(policy={"target_utilization": 0}), "target_utilization must be within"),
    (config(policy={"shed_windows": 0}), "shed_windows must be within 1 .. 1000"),
])
def test_bad_configurations_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_dict(data)
    assert message in str(raised.value)


def test_every_setting_is_printed_and_the_printout_is_a_valid_config() -> None:
    text = describe()
    assert "# lease_ttl_s = 10  # how long a leader that stopped answering is trusted" in text
    uncommented = "\n".join(line[2:] if line.startswith("# ") and " = " in line
                            and not line.startswith("# [[") else line
                            for line in text.splitlines() if not line.startswith("# [["))
    # The entries' keys follow the last [section]; drop them for a parse of the rest.
    main = uncommented.split("\n\n# [[")[0]
    data = tomllib.loads("\n".join(line.split("  # ")[0] for line in main.splitlines()
                                   if "<" not in line))
    assert set(data) >= {"site_id", "rigs", "price", "policy", "grid", "openadr", "etcd",
                         "journal", "metrics", "log"}


@pytest.mark.processes
def test_rigsite_run_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[rigs]\nendpoints = ["unix:/x"]\n[price]\nfile = "p.csv"\n[etcd]\n'
                    'endpoint = ["http://127.0.0.1:2379"]\n')
    result = subprocess.run([sys.executable, "-m", "controller", "run", "-c", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert "unknown key 'endpoint'" in result.stderr and "did you mean 'endpoints'" in \
        result.stderr


def test_a_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[rigs\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(bad)
