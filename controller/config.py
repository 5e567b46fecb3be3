"""The site controller's configuration (`rigsite run -c site.toml`): a TOML file whose every key
is known, read through rigapi.schema like rigd's own (a typo is an error naming the key, with a
did-you-mean).

    site_id = "houston-1"
    interval_s = 60                      # one decision round a minute

    [rigs]
    file = "/etc/rigsite/rigs.txt"       # one rig a line: [NAME] HOST:PORT | unix:/path
    token_file = "/etc/rigsite/token"    # rigd's operator token
    ca_file = "/etc/rigsite/ca.pem"      # mTLS to rigd (with cert_file, key_file)

    [price]
    source = "http"                      # file | http | openadr
    url = "https://prices.example/ercot/lz_houston/rt"
    value_path = "price"                 # where the $/MWh is in the JSON
    time_path = "interval_end"           # when it was published (ISO 8601 or unix seconds)

    [[hashprice]]
    algorithm = "sha256d"
    source = "computed"                  # fixed | file | http | computed
    inputs_url = "https://coins.example/btc"
    coin_price_path = "price_usd"
    difficulty_path = "difficulty"
    fees_path = "fees_per_block_btc"
    block_subsidy = 3.125

    [[inference]]
    profile = "vllm-llama-8b"
    capacity_rps_per_gpu = 4.0           # from a load test
    wait_bound_s = 2.0
    usd_per_million_tokens = 0.20
    tokens_per_request = 600

    [etcd]
    endpoints = ["http://10.0.0.5:2379", "http://10.0.0.6:2379", "http://10.0.0.7:2379"]

See controller/README.md for every key, the safe defaults, and `rigsite run --print-config`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.policy import PolicyConfig
from controller.rules import PowerFigures, PriceLimits
from rigapi.schema import ConfigError, check_all, document, read_toml, setting
from rigapi.schema import describe as schema_describe

PRICE_SOURCES = ("file", "http", "openadr")
HASHPRICE_SOURCES = ("fixed", "file", "http", "computed")
PRICE_UNITS = ("usd_per_mwh", "usd_per_kwh")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class HashpriceSource:
    """One `[[hashprice]]` entry: where an algorithm's hashprice ($/TH/day) comes from."""

    algorithm: str = setting(section="hashprice",
                             help='the algorithm the miners report ("sha256d", "scrypt")')
    source: str = setting(section="hashprice", choices=HASHPRICE_SOURCES,
                          help="fixed (usd_per_th_day, never stale), file (CSV time_s,"
                               "algorithm,usd_per_th_day), http (a JSON feed), computed (from "
                               "coin price, difficulty, block subsidy and fees)")
    usd_per_th_day: float = setting(0.0, section="hashprice", bounds=(0, 1e6),
                                    help="fixed: the hashprice")
    file: str = setting("", section="hashprice", help="file: the CSV")
    time_origin_unix_s: float = setting(0.0, section="hashprice", bounds=(0, 1e11),
                                        help="file: its time_s are seconds after this (0: unix "
                                             "times)")
    url: str = setting("", section="hashprice", help="http: the JSON feed")
    value_path: str = setting("", section="hashprice",
                              help="http: where the $/TH/day is in the JSON (dotted, list "
                                   "indexes as numbers)")
    time_path: str = setting("", section="hashprice",
                             help='http/computed: when the value was published ("" = when '
                                  "fetched)")
    inputs_url: str = setting("", section="hashprice",
                              help="computed: a JSON document (http:// or https://, or a file "
                                   "path) holding the inputs named by the *_path keys")
    coin_price_path: str = setting("", section="hashprice",
                                   help="computed: the coin's price in USD in the inputs")
    difficulty_path: str = setting("", section="hashprice",
                                   help="computed: the network difficulty in the inputs")
    fees_path: str = setting("", section="hashprice",
                             help="computed: the fees per block in coins in the inputs "
                                  "(\"\" = fees_per_block)")
    coin_price_usd: float = setting(0.0, section="hashprice", bounds=(0, 1e9),
                                    help="computed: the coin's price when coin_price_path is "
                                         "not set")
    difficulty: float = setting(0.0, section="hashprice", bounds=(0, 1e30),
                                help="computed: the difficulty when difficulty_path is not set")
    block_subsidy: float = setting(3.125, section="hashprice", bounds=(0, 1e9),
                                   help="computed: coins per block (3.125 BTC since the 2024 "
                                        "halving)")
    fees_per_block: float = setting(0.0, section="hashprice", bounds=(0, 1e9),
                                    help="computed: coins of fees per block when fees_path is "
                                         "not set")
    poll_s: float = setting(300.0, section="hashprice", bounds=(1, 86400),
                            help="http/computed: how often the feed is read")


@dataclass(frozen=True, slots=True)
class InferenceProfile:
    """One `[[inference]]` entry: a runtime profile the site serves, and what serving is worth.
    Its demand is read from the runtimes' own /metrics (vLLM's names)."""

    profile: str = setting(section="inference",
                           help="the runtime profile's name in rigd's configuration")
    capacity_rps_per_gpu: float = setting(section="inference", bounds=(1e-6, 1e6),
                                          help="requests a second one GPU serves at most, "
                                               "measured by a load test")
    model: str = setting("", section="inference", help="the model it serves, for people")
    wait_bound_s: float = setting(2.0, section="inference", bounds=(0.001, 3600),
                                  help="the queue-wait bound the site promises")
    usd_per_gpu_hour: float = setting(0.0, section="inference", bounds=(0, 1e6),
                                      help="what a GPU serving earns per hour")
    usd_per_million_tokens: float = setting(0.0, section="inference", bounds=(0, 1e6),
                                            help="what a million tokens served earn")
    tokens_per_request: float = setting(0.0, section="inference", bounds=(0, 1e9),
                                        help="tokens of an average request (for the above)")
    warm_standby: bool = setting(False, section="inference",
                                 help="rigd's profile keeps its runtime warm (asleep) when the "
                                      "GPU stops serving: set as in rigd.toml")
    endpoints: tuple[str, ...] = setting((), section="inference",
                                         help="runtime base URLs served outside the rigs "
                                              "(rigd's own inference devices are found from "
                                              "their telemetry)")


def _check_address(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string HOST:PORT, got {value!r}")
    if not value:
        return value
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{where} must be HOST:PORT, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SiteConfig:
    site_id: str = setting("site", section="", help="this site's name (etcd keys, the VEN)")
    replica: str = setting(section="", factory=socket.gethostname,
                           help="this replica's name (default: the hostname; rigsite run "
                                "--replica overrides it)")
    interval_s: float = setting(60.0, section="", bounds=(0.05, 3600),
                                help="time between decision rounds")
    # [rigs]
    rig_endpoints: tuple[str, ...] = setting((), section="rigs", key="endpoints",
                                             help="rigs as HOST:PORT, unix:/path or NAME=TARGET")
    rig_file: str = setting("", section="rigs", key="file",
                            help="a file naming the rigs, one a line: [NAME] HOST:PORT | "
                                 "unix:/path (read at start)")
    rig_srv: str = setting("", section="rigs", key="srv",
                           help="a DNS SRV name listing the rigs (_rigd._tcp.site.example.)")
    rig_token_file: str = setting("", section="rigs", key="token_file",
                                  help="a file holding rigd's bearer token (operator role)")
    rig_ca_file: str = setting("", section="rigs", key="ca_file",
                               help="CA of rigd's certificates (mTLS, with cert_file, key_file)")
    rig_cert_file: str = setting("", section="rigs", key="cert_file",
                                 help="this controller's client certificate")
    rig_key_file: str = setting("", section="rigs", key="key_file", help="its private key")
    rig_server_name: str = setting("", section="rigs", key="server_name",
                                   help="the name in rigd's certificates, where it is not the "
                                        "address's host (one certificate name for every rig)")
    rig_deadline_s: float = setting(5.0, section="rigs", key="deadline_s", bounds=(0.1, 600),
                                    help="each rig's time for a round's reads; a slower rig is "
                                         "unreachable this round")
    rig_lease_ttl_s: int = setting(15, section="rigs", key="lease_ttl_s", bounds=(1, 3600),
                                   help="the lease held on each rig (renewed at a third of it)")
    rig_concurrency: int = setting(256, section="rigs", key="concurrency", bounds=(1, 100000),
                                   help="rigs asked at once")
    max_switches_per_rig: int = setting(4, section="rigs", bounds=(1, 64),
                                        help="switches in flight on one rig at most")
    max_switches_per_site: int = setting(64, section="rigs", bounds=(1, 100000),
                                         help="switches in flight on the site at most")
    hashing_intensity: float = setting(0.0, section="rigs", bounds=(0, 1),
                                       help="a GPU switched to hashing takes this share of "
                                            "device time (0 = rigd's configured intensity)")
    curtail_expiry_s: int = setting(900, section="rigs", bounds=(60, 86400),
                                    help="a Curtail sent for a cap without an end lifts itself "
                                         "this long after it was last sent (sent again at half)")
    # [price]
    price_source: str = setting("file", section="price", key="source", choices=PRICE_SOURCES,
                                help="where the energy price comes from")
    price_file: str = setting("", section="price", key="file",
                              help="file: a CSV time_s,usd_per_mwh (the replay's price.csv), "
                                   "read again when it changes")
    price_time_origin_unix_s: float = setting(
        0.0, section="price", key="time_origin_unix_s", bounds=(0, 1e11),
        help="file: its time_s are seconds after this (0: unix times)")
    price_interval_s: float = setting(300.0, section="price", key="interval_s",
                                      bounds=(1, 86400),
                                      help="file: a row's price is published when its interval "
                                           "ends (real-time prices settle after it)")
    price_url: str = setting("", section="price", key="url", help="http: the JSON feed")
    price_value_path: str = setting("price", section="price", key="value_path",
                                    help="http: where the price is in the JSON (dotted)")
    price_time_path: str = setting("", section="price", key="time_path",
                                   help='http: when it was published ("" = when fetched)')
    price_unit: str = setting("usd_per_mwh", section="price", key="unit", choices=PRICE_UNITS,
                              help="http: the feed's unit")
    price_poll_s: float = setting(60.0, section="price", key="poll_s", bounds=(0.05, 86400),
                                  help="http: how often the feed is read")
    price_max_age_s: float = setting(900.0, section="price", key="max_age_s",
                                     bounds=(1, 86400 * 7),
                                     help="an older price is unusable: nothing is woken")
    price_floor_usd_per_mwh: float = setting(-250.0, section="price", key="floor_usd_per_mwh",
                                             bounds=(-1e6, 0),
                                             help="a lower price is absurd: unusable")
    price_ceiling_usd_per_mwh: float = setting(10_000.0, section="price",
                                               key="ceiling_usd_per_mwh", bounds=(1, 1e6),
                                               help="a higher price is absurd: unusable")
    hashprice_max_age_s: float = setting(2 * 86400.0, section="price",
                                         key="hashprice_max_age_s", bounds=(1, 86400 * 30),
                                         help="an older hashprice is unusable")
    hashprices: tuple[HashpriceSource, ...] = setting((), section="", key="hashprice",
                                                      help="[[hashprice]] per algorithm")
    inference: tuple[InferenceProfile, ...] = setting((), section="", key="inference",
                                                      help="[[inference]] per runtime profile")
    # [policy]
    policy_window_s: float = setting(300.0, section="policy", key="window_s", bounds=(0.01, 1e6),
                                     help="a price window")
    policy_shed_windows: int = setting(1, section="policy", key="shed_windows", bounds=(1, 1000),
                                       help="N: windows above a miner's strike before it is shed")
    policy_resume_windows: int = setting(2, section="policy", key="resume_windows",
                                         bounds=(1, 1000),
                                         help="M: windows below it before it hashes again")
    policy_high_strike_ratio: float = setting(1.5, section="policy", key="high_strike_ratio",
                                              bounds=(1, 1e6),
                                              help="above this x strike: shed at once")
    policy_min_dwell_s: float = setting(600.0, section="policy", key="min_dwell_s",
                                        bounds=(0, 1e7), help="between a device's switches")
    policy_min_gain_usd_per_h: float = setting(0.0, section="policy", key="min_gain_usd_per_h",
                                               bounds=(0, 1e6),
                                               help="a switch must gain at least this per hour")
    policy_min_gain_ratio: float = setting(0.02, section="policy", key="min_gain_ratio",
                                           bounds=(0, 100),
                                           help="...and this share of what the device earns now")
    policy_give_back_windows: int = setting(3, section="policy", key="give_back_windows",
                                            bounds=(1, 1000),
                                            help="demand windows low before borrowed GPUs go back")
    policy_target_utilization: float = setting(0.8, section="policy", key="target_utilization",
                                               bounds=(0.01, 1),
                                               help="each GPU planned at this share of capacity")
    policy_cap_margin: float = setting(0.02, section="policy", key="cap_margin",
                                       bounds=(0, 0.99), help="plan this far below a grid cap")
    policy_max_switches_per_round: int = setting(0, section="policy",
                                                 key="max_switches_per_round",
                                                 bounds=(0, 1_000_000),
                                                 help="price switches per round (0: no limit)")
    policy_default_switch_cold_s: float = setting(
        60.0, section="policy", key="default_switch_cold_s", bounds=(0, 86400),
        help="a GPU's cold start to inference until one is measured (vLLM: 34-60 s)")
    policy_default_switch_warm_s: float = setting(
        0.6, section="policy", key="default_switch_warm_s", bounds=(0, 86400),
        help="a GPU's start from warm standby until one is measured")
    policy_default_switch_to_hashing_s: float = setting(
        1.0, section="policy", key="default_switch_to_hashing_s", bounds=(0, 86400),
        help="a device's start of hashing (a miner's wake) until one is measured")
    # [grid]
    grid_cap_w: float = setting(0.0, section="grid", key="cap_w", bounds=(0, 1e12),
                                help="the operator's standing site cap (0: none)")
    grid_cap_file: str = setting("", section="grid", key="cap_file",
                                 help='a JSON file {"cap_w": W, "deadline_unix_s": T, '
                                      '"ends_unix_s": T|null} read every round (an '
                                      "operator's cap of its own; missing file: none)")
    # [openadr] (the site's VEN)
    ven_vtn_url: str = setting("", section="openadr", key="vtn_url",
                               help='the VTN\'s OpenADR 2.0b base URL ("" = no site VEN)')
    ven_name: str = setting("", section="openadr", key="ven_name",
                            help="the site's venName (default: site_id)")
    ven_id: str = setting("", section="openadr", key="ven_id",
                          help="a venID the VTN provisioned (\"\" = the VTN assigns one)")
    ven_poll_interval_s: float = setting(0.0, section="openadr", key="poll_interval_s",
                                         bounds=(0, 3600),
                                         help="polls of the VTN (0 = as the VTN asks)")
    ven_report_interval_s: float = setting(10.0, section="openadr", key="report_interval_s",
                                           bounds=(1, 3600),
                                           help="the site's power reports' shortest interval")
    ven_retry_max_s: float = setting(60.0, section="openadr", key="retry_max_s",
                                     bounds=(1, 3600),
                                     help="longest wait between registration attempts")
    ven_deadline_s: float = setting(60.0, section="openadr", key="deadline_s", bounds=(0, 3600),
                                    help="the site must be below an event's cap by its start, "
                                         "and at least this long after the event arrived")
    ven_simple_levels: dict[str, float] = setting(
        section="openadr", key="simple_levels",
        factory=lambda: {"1": 0.75, "2": 0.5, "3": 0.25},
        help="SIMPLE level -> site cap as a fraction of the site's power when the event starts")
    ven_cert_file: str = setting("", section="openadr", key="cert_file",
                                 help="the VEN's certificate (TLS and signatures)")
    ven_key_file: str = setting("", section="openadr", key="key_file", help="its private key")
    ven_ca_file: str = setting("", section="openadr", key="ca_file", help="the VTN's CA")
    ven_vtn_fingerprint: str = setting("", section="openadr", key="vtn_fingerprint",
                                       help="the VTN's certificate fingerprint")
    # [etcd]
    etcd_endpoints: tuple[str, ...] = setting((), section="etcd", key="endpoints",
                                              help="etcd's client URLs (http://HOST:2379); none: "
                                                   "this replica leads alone, with no standby")
    etcd_prefix: str = setting("/rigsite", section="etcd", key="prefix",
                               help="keys under <prefix>/<site_id>/")
    etcd_lease_ttl_s: int = setting(10, section="etcd", key="lease_ttl_s", bounds=(2, 3600),
                                    help="how long a leader that stopped answering is trusted")
    etcd_timeout_s: float = setting(2.0, section="etcd", key="timeout_s", bounds=(0.1, 60),
                                    help="one request to etcd")
    # [journal]
    journal_dir: str = setting("", section="journal", key="dir",
                               help="JSON-lines journals (default: $STATE_DIRECTORY, else "
                                    "/var/lib/rigsite as root, else $XDG_STATE_HOME/rigsite)")
    journal_max_bytes: int = setting(64 << 20, section="journal", key="max_bytes",
                                     bounds=(1 << 16, 1 << 40),
                                     help="a journal this large is rotated (.1)")
    # [metrics]
    metrics_address: str = setting("", section="metrics", key="address",
                                   parse=_check_address,
                                   help='Prometheus /metrics HOST:PORT ("" = off); loopback '
                                        "unless allow_non_loopback")
    metrics_allow_non_loopback: bool = setting(False, section="metrics",
                                               key="allow_non_loopback",
                                               help="serve /metrics beyond loopback")
    # [log]
    log_level: str = setting("info", section="log", key="level", choices=LOG_LEVELS,
                             help="structlog JSON lines on stderr")

    @property
    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            window_s=self.policy_window_s, shed_windows=self.policy_shed_windows,
            resume_windows=self.policy_resume_windows,
            high_strike_ratio=self.policy_high_strike_ratio,
            min_dwell_s=self.policy_min_dwell_s,
            min_gain_usd_per_h=self.policy_min_gain_usd_per_h,
            min_gain_ratio=self.policy_min_gain_ratio,
            give_back_windows=self.policy_give_back_windows,
            target_utilization=self.policy_target_utilization,
            cap_margin=self.policy_cap_margin,
            max_switches_per_round=self.policy_max_switches_per_round or None,
            default_switch_cold_s=self.policy_default_switch_cold_s,
            default_switch_warm_s=self.policy_default_switch_warm_s,
            default_switch_to_hashing_s=self.policy_default_switch_to_hashing_s,
            prices=PriceLimits(max_age_s=self.price_max_age_s,
                               floor_usd_per_mwh=self.price_floor_usd_per_mwh,
                               ceiling_usd_per_mwh=self.price_ceiling_usd_per_mwh,
                               hashprice_max_age_s=self.hashprice_max_age_s),
            power=PowerFigures())

    @property
    def etcd_site_prefix(self) -> str:
        return f"{self.etcd_prefix.rstrip('/')}/{self.site_id}"

    def profile(self, name: str) -> InferenceProfile | None:
        return next((p for p in self.inference if p.profile == name), None)

    def journal_path(self) -> Path:
        if self.journal_dir:
            return Path(self.journal_dir)
        state = os.environ.get("STATE_DIRECTORY")
        if state:
            return Path(state.split(":")[0])
        if os.geteuid() == 0:
            return Path("/var/lib/rigsite")
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "rigsite"


def from_dict(data: dict[str, Any], *, source: str = "config",
              replica: str | None = None) -> SiteConfig:
    """Validate a parsed TOML document and build the configuration."""
    values = document(SiteConfig, data, source)
    if replica is not None:
        values["replica"] = replica
    config = SiteConfig(**values)
    validate(config, source)
    return config


def validate(config: SiteConfig, source: str = "config") -> None:
    check_all(config, source)
    for i, h in enumerate(config.hashprices):
        check_all(h, f"{source}: hashprice[{i}]")
        where = f"{source}: hashprice[{i}] ({h.algorithm})"
        needs = {"file": ("file",), "http": ("url", "value_path"), "fixed": (),
                 "computed": ()}[h.source]
        missing = [k for k in needs if not getattr(h, k)]
        if missing:
            raise ConfigError(f"{where}: source {h.source!r} needs {', '.join(missing)}")
        if h.source == "fixed" and h.usd_per_th_day <= 0:
            raise ConfigError(f"{where}: source \"fixed\" needs usd_per_th_day > 0")
        if h.source == "computed":
            if not (h.coin_price_path or h.coin_price_usd > 0):
                raise ConfigError(f"{where}: computed needs coin_price_path or coin_price_usd")
            if not (h.difficulty_path or h.difficulty > 0):
                raise ConfigError(f"{where}: computed needs difficulty_path or difficulty")
            if (h.coin_price_path or h.difficulty_path or h.fees_path) and not h.inputs_url:
                raise ConfigError(f"{where}: the *_path keys need inputs_url")
    algorithms = [h.algorithm for h in config.hashprices]
    if len(set(algorithms)) != len(algorithms):
        raise ConfigError(f"{source}: two [[hashprice]] entries for one algorithm")
    for i, p in enumerate(config.inference):
        check_all(p, f"{source}: inference[{i}]")
    profiles = [p.profile for p in config.inference]
    if len(set(profiles)) != len(profiles):
        raise ConfigError(f"{source}: two [[inference]] entries for one profile")
    rig_sources = [bool(config.rig_endpoints), bool(config.rig_file), bool(config.rig_srv)]
    if sum(rig_sources) != 1:
        raise ConfigError(f"{source}: name the rigs in one way: [rigs] endpoints, file or srv")
    mtls = (config.rig_ca_file, config.rig_cert_file, config.rig_key_file)
    if any(mtls) and not all(mtls):
        raise ConfigError(f"{source}: [rigs] mTLS needs ca_file, cert_file and key_file "
                          "together")
    if config.price_source == "file" and not config.price_file:
        raise ConfigError(f"{source}: price.source \"file\" needs price.file")
    if config.price_source == "http" and not config.price_url:
        raise ConfigError(f"{source}: price.source \"http\" needs price.url")
    if config.price_source == "openadr" and not config.ven_vtn_url:
        raise ConfigError(f"{source}: price.source \"openadr\" needs [openadr] vtn_url (the "
                          "site's VEN receives ELECTRICITY_PRICE events)")
    for url in (config.price_url, *(h.url for h in config.hashprices), config.ven_vtn_url,
                *config.etcd_endpoints):
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{source}: {url!r} is not an http:// or https:// URL")
    for level, fraction in config.ven_simple_levels.items():
        if level not in ("1", "2", "3") or not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ConfigError(f"{source}: openadr.simple_levels: levels 1..3 -> a fraction in "
                              f"(0, 1], got {level!r} = {fraction!r}")
    if config.metrics_address and not config.metrics_allow_non_loopback:
        host = config.metrics_address.rpartition(":")[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConfigError(f"{source}: metrics.address {config.metrics_address} is not "
                              "loopback; set metrics.allow_non_loopback to serve it there")
    if not config.replica or "/" in config.replica:
        raise ConfigError(f"{source}: replica must be a name without '/', got "
                          f"{config.replica!r}")
    try:
        config.policy  # noqa: B018 (PolicyConfig checks what spans its knobs)
    except ValueError as exc:
        raise ConfigError(f"{source}: [policy] {exc}") from None


def load(path: str | os.PathLike[str], *, replica: str | None = None) -> SiteConfig:
    return from_dict(read_toml(path), source=str(path), replica=replica)


def describe() -> str:
    """Every setting as commented TOML with its default and meaning (`rigsite run
    --print-config`; the README's list is checked against it)."""
    return schema_describe([(SiteConfig, ""), (HashpriceSource, "[[hashprice]]"),
                            (InferenceProfile, "[[inference]]")],
                           skip={"hashprices", "inference"},
                           placeholders={"replica": '"<hostname>"'})


def with_metrics(config: SiteConfig, address: str) -> SiteConfig:
    """The configuration with /metrics at `address` (rigsite run --metrics-address)."""
    changed = replace(config, metrics_address=_check_address(address, "--metrics-address"))
    validate(changed, "--metrics-address")
    return changed
