"""rigd's configuration: a TOML file whose every key is known, with defaults that work without one.

A typo in a key is an error naming the key, not a silently ignored setting: on a rig that controls
power, "I thought I had set that" is the bug to prevent. Each setting is declared once, as a field
of `Config` (or of a table's dataclass) carrying its TOML section, help text and allowed range;
parsing, type checks, range checks and the documentation all read that one declaration. Backend
sections under [hal.<name>] are checked by the backend's own pure `check_options`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import profiles
from agent.config.paths import default_socket_path
from agent.core.pool_url import parse_pool_url
from hal import errors as hal_errors
from hal.registry import DEFAULT_BACKENDS, check_options
from rigapi.schema import (
    ConfigError,
    Setting,
    check_value,
    coerce,
    declarations,
    octal,
    read_toml,
    setting,
    toml_default,
    unknown_key,
)
from rigapi.schema import describe as schema_describe

ROLES = ("viewer", "operator", "admin")
DEFAULT_CONFIG_PATH = "/etc/rigd/rigd.toml"
CONFIG_ENV = "RIGD_CONFIG"  # the file rigd reads without -c, instead of DEFAULT_CONFIG_PATH
# What a curtailment may do, in the order `[curtail] order` names them (agent/runtime/curtail).
CURTAIL_STEPS = ("hashing_intensity", "hashing_stop", "gpu_power_limit", "inference_stop")


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """One `[[auth.tokens]]` entry: `authorization: Bearer <token>` gets `role`."""

    name: str = setting(section="auth.tokens", help="shown in the audit log as token:<name>")
    role: str = setting(section="auth.tokens", help="viewer | operator | admin", choices=ROLES)
    sha256: str = setting(section="auth.tokens",
                          help="hex SHA-256 of the token; the token itself is never stored")


@dataclass(frozen=True, slots=True)
class HashingConfig:
    """One `[[hashing]]` entry: a device that hashes when rigd first starts (afterwards what
    each device runs is set through the API and kept in the journal)."""

    device: str = setting(section="hashing",
                          help='a device id from `rigctl inventory`, or "auto" for the best '
                               "OpenCL device")
    pools: tuple[str, ...] = setting((), section="hashing",
                                     help="stratum+tcp://host:port URLs in failover order "
                                          "(default: [pool] urls)")
    user: str = setting("", section="hashing", help="pool worker name (default: [pool] user)")
    intensity: float = setting(1.0, section="hashing", bounds=(0.0, 1.0),
                               help="share of device time the kernel may take, in (0, 1]")


@dataclass(frozen=True, slots=True)
class Config:
    rig_id: str = setting(section="", factory=socket.gethostname,
                          help="this rig's name in inventory (default: the hostname)")
    # [server]
    unix_socket: str = setting("", section="server",
                               help="local socket for rigctl (default: rigd.sock in systemd's "
                                    "$RUNTIME_DIRECTORY, else /run/rigd/rigd.sock as root, else "
                                    "$XDG_RUNTIME_DIR/rigd/rigd.sock)")
    unix_socket_mode: int = setting(0o660, section="server", parse=octal,
                                    help='file mode of the socket, octal text like "0660"')
    tcp_address: str = setting("", section="server",
                               help='"host:port" for controllers; "" = no TCP listener')
    allow_non_loopback: bool = setting(False, section="server",
                                       help="needed (with [tls]) to listen beyond loopback")
    drain_s: float = setting(1.0, section="server", bounds=(0, 60),
                             help="health reports NOT_SERVING this long before listeners close")
    shutdown_grace_s: float = setting(5.0, section="server", bounds=(0, 600),
                                      help="time in-flight calls get to finish at shutdown")
    max_request_bytes: int = setting(65536, section="server", bounds=(1024, 4 << 20),
                                     help="largest request message accepted")
    max_streams: int = setting(4096, section="server", bounds=(1, 100_000),
                               help="server streams open at once, all callers together "
                                    "(telemetry, operations, diagnostics, health Watch)")
    max_streams_per_identity: int = setting(
        2048, section="server", bounds=(1, 100_000),
        help="server streams one caller identity may hold open at once")
    # [auth]
    anonymous_role: str = setting("viewer", section="auth", choices=(*ROLES, "none"),
                                  help="role of TCP callers without a token or certificate")
    unix_socket_role: str = setting("admin", section="auth", choices=(*ROLES, "none"),
                                    help="role of local callers (the socket's mode guards it)")
    tokens: tuple[TokenGrant, ...] = setting((), section="auth",
                                             help="bearer tokens, see [[auth.tokens]]")
    certificate_roles: dict[str, str] = setting(section="auth", factory=dict,
                                                help="mTLS certificate common name -> role")
    # [tls]
    tls_cert_file: str = setting("", section="tls", key="cert_file",
                                 help="server certificate (PEM)")
    tls_key_file: str = setting("", section="tls", key="key_file", help="server key (PEM)")
    tls_client_ca_file: str = setting("", section="tls", key="client_ca_file",
                                      help="CA that signs client certificates (required)")
    # [audit]
    audit_path: str = setting("", section="audit", key="path",
                              help='JSON lines file; "" = audit events go to the log only')
    audit_max_bytes: int = setting(64 << 20, section="audit", key="max_bytes",
                                   bounds=(4096, 1 << 40),
                                   help="rotate the audit file when it reaches this size")
    audit_backups: int = setting(3, section="audit", key="backups", bounds=(0, 100),
                                 help="rotated audit files kept (path.1 .. path.N)")
    # [log]
    log_level: str = setting("info", section="log", key="level",
                             choices=("debug", "info", "warning", "error"), help="log level")
    log_format: str = setting("json", section="log", key="format",
                              choices=("json", "console"),
                              help="json lines, or console (colour only on a terminal)")
    # [telemetry]
    telemetry_interval_s: float = setting(1.0, section="telemetry", key="interval_s",
                                          bounds=(0.1, 3600),
                                          help="how often every device is read")
    device_timeout_s: float = setting(
        2.0, section="telemetry", bounds=(0.1, 60),
        help="a device read that takes longer is abandoned and reported failed")
    # [metrics]: Prometheus /metrics on a listener of its own (agent/edges/metrics.py)
    metrics_address: str = setting(
        "", section="metrics", key="address",
        help='"host:port" that serves Prometheus /metrics ("" = off); beyond loopback it '
             "needs server.allow_non_loopback and cert_file/key_file")
    metrics_cert_file: str = setting("", section="metrics", key="cert_file",
                                     help="TLS certificate (PEM) for /metrics: HTTPS, required "
                                          "beyond loopback")
    metrics_key_file: str = setting("", section="metrics", key="key_file",
                                    help="its private key (PEM)")
    metrics_client_ca_file: str = setting(
        "", section="metrics", key="client_ca_file",
        help='with cert_file: scrapers must present a certificate this CA signed ("" = none '
             "asked)")
    # [hal]
    backends: tuple[str, ...] = setting(DEFAULT_BACKENDS, section="hal",
                                        help="backends to discover devices with")
    backend_options: dict[str, dict[str, Any]] = setting(
        section="hal", factory=dict, help="[hal.<backend>] tables, checked by the backend")
    compute_facets: dict[str, str] = setting(
        section="hal", factory=dict,
        help="GPU id -> the OpenCL device that runs its hashing, where no OpenCL twin on the "
             "same PCI bus id exists (simulated GPUs)")
    # [pool]: the pool a hashing workload with an empty spec mines for
    pool_urls: tuple[str, ...] = setting((), section="pool", key="urls",
                                         help="stratum+tcp://host:port URLs in failover order")
    pool_user: str = setting("rigd", section="pool", key="user", help="worker name")
    pool_password: str = setting("x", section="pool", key="password", help="worker password")
    pool_version_rolling: str = setting(
        "auto", section="pool", key="version_rolling", choices=("auto", "on", "off"),
        help="BIP 310 version rolling: auto = ask, and mine without it where the pool refuses")
    # [workloads]
    state_dir: str = setting("", section="workloads",
                             help="journal and caches (default: systemd's $STATE_DIRECTORY, "
                                  "else /var/lib/rigd as root, else $XDG_STATE_HOME/rigd)")
    min_dwell_s: float = setting(60.0, section="workloads", bounds=(0, 86400),
                                 help="a device runs a workload at least this long before the "
                                      "next switch (against flapping; curtailment ignores it)")
    verify_timeout_s: float = setting(30.0, section="workloads", bounds=(1, 3600),
                                      help="how long a switch waits for the device's memory "
                                           "to be freed before it rolls back")
    hashing_ready_timeout_s: float = setting(60.0, section="workloads", bounds=(1, 3600),
                                             help="a hashing worker not mining by then (kernel "
                                                  "built, pool authorized) fails the switch")
    # [power]
    host_power_w: float = setting(0.0, section="power", key="host_w", bounds=(0, 100_000),
                                  help="the host's draw where nothing measures it (0 = "
                                       "unknown: the rig's total names the host as unknown)")
    opencl_power_w: dict[str, float] = setting(
        section="power", key="opencl_w", factory=dict,
        help="OpenCL device id -> watts while its hashing runs at full intensity (estimated "
             "power, scaled by the intensity)")
    # [curtail]
    curtail_order: tuple[str, ...] = setting(
        ("hashing_intensity", "hashing_stop", "gpu_power_limit", "inference_stop"),
        section="curtail", key="order",
        help="shedding steps in order; leave one out to never take it")
    curtail_min_intensity: float = setting(0.25, section="curtail", key="min_intensity",
                                           bounds=(0.01, 1.0),
                                           help="the hashing intensity the first step turns to")
    curtail_settle_s: float = setting(5.0, section="curtail", key="settle_s",
                                      bounds=(0.5, 600),
                                      help="how long a curtailed rig may read above its "
                                           "target (a miner woken by hand, a workload started) "
                                           "before a new round of shedding begins")
    curtail_verify_s: float = setting(30.0, section="curtail", key="verify_s",
                                      bounds=(0.5, 600),
                                      help="how long a device may take to show an action's "
                                           "effect in its own reading (asleep, its limit) "
                                           "before the action is sent once more, then counted "
                                           "failed")
    # [openadr]: the OpenADR 2.0b VEN (agent/edges/openadr.py), off unless vtn_url is set
    openadr_vtn_url: str = setting(
        "", section="openadr", key="vtn_url",
        help='the VTN\'s OpenADR 2.0b simpleHttp base URL ("" = no VEN); plain http:// is for '
             "tests on loopback only, a VTN elsewhere needs https:// with cert_file, key_file "
             "and ca_file")
    openadr_ven_name: str = setting("", section="openadr", key="ven_name",
                                    help="this rig's venName at the VTN (default: rig_id)")
    openadr_ven_id: str = setting("", section="openadr", key="ven_id",
                                  help='a venID the VTN provisioned ("" = the VTN assigns one)')
    openadr_poll_interval_s: float = setting(
        0.0, section="openadr", key="poll_interval_s", bounds=(0, 3600),
        help="how often the VTN is polled for events, at least 0.1 (0 = as the VTN asks at "
             "registration)")
    openadr_report_interval_s: int = setting(
        10, section="openadr", key="report_interval_s", bounds=(1, 3600),
        help="the shortest interval of the rig's power reports (TELEMETRY_USAGE, watts: total, "
             "measured, estimated); the VTN picks one between this and an hour")
    openadr_deadline_s: float = setting(
        60.0, section="openadr", key="deadline_s", bounds=(1, 3600),
        help="an event's curtailment must read below target this long after the event starts "
             "(or by the event's end, if sooner)")
    openadr_simple_levels: dict[str, float] = setting(
        section="openadr", key="simple_levels",
        factory=lambda: {"1": 0.75, "2": 0.5, "3": 0.25},
        help="SIMPLE signal level -> rig power target as a fraction of the rig's power when the "
             "event starts, in (0, 1], not rising with the level; level 0 is no curtailment, "
             "a level left out is opted out of")
    openadr_retry_max_s: float = setting(
        60.0, section="openadr", key="retry_max_s", bounds=(1, 3600),
        help="longest wait between attempts to register with a VTN that does not answer well "
             "(the wait doubles from 1 s)")
    openadr_cert_file: str = setting("", section="openadr", key="cert_file",
                                     help="this VEN's certificate (PEM): TLS client certificate "
                                          "and XML message signatures")
    openadr_key_file: str = setting("", section="openadr", key="key_file",
                                    help="its private key (PEM, unencrypted)")
    openadr_ca_file: str = setting("", section="openadr", key="ca_file",
                                   help="CA that signs the VTN's TLS certificate")
    openadr_vtn_fingerprint: str = setting(
        "", section="openadr", key="vtn_fingerprint",
        help='the VTN certificate\'s OpenADR fingerprint ("AB:CD:..."); when set, messages '
             "the VTN does not sign with it are ignored")
    # [inference]
    inference_profiles: dict[str, dict[str, Any]] = setting(
        section="inference", key="profiles", factory=dict,
        help="[inference.profiles.<name>] tables: shipped profiles changed, or new ones")
    # [[hashing]]
    hashing: tuple[HashingConfig, ...] = setting((), section="",
                                                 help="devices that hash at first start")
    demo: bool = False

    # Under systemd (deploy/rigd.service) rigd runs as its own user in the directories the unit
    # made for it: RuntimeDirectory= and StateDirectory= say where, whatever the uid.

    @property
    def socket_path(self) -> str:
        if self.unix_socket:
            return self.unix_socket
        runtime = _systemd_directory("RUNTIME_DIRECTORY")
        return str(runtime / "rigd.sock") if runtime else default_socket_path()

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        state = _systemd_directory("STATE_DIRECTORY")
        if state:
            return state
        if os.geteuid() == 0:
            return Path("/var/lib/rigd")
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "rigd"


def _systemd_directory(variable: str) -> Path | None:
    """The first directory systemd lists in $RUNTIME_DIRECTORY / $STATE_DIRECTORY."""
    value = os.environ.get(variable, "").split(":")[0]
    return Path(value) if value else None


# ---- the schema, derived from the declarations above -------------------------------------------


_TABLES: dict[str, type] = {"auth.tokens": TokenGrant, "hashing": HashingConfig}


def from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate a parsed TOML document and build a Config."""
    known: dict[str, dict[str, Setting]] = {}
    for s in declarations(Config):
        known.setdefault(s.section, {})[s.key] = s
    sections = {name for name in known if name} | {"hashing"}
    values: dict[str, Any] = {}

    def take(s: Setting, value: Any) -> None:
        where = f"{source}: {s.path}"
        values[s.name] = s.parse(value, where) if s.parse else coerce(value, s.hint, where)

    for key, value in data.items():
        if key in known[""]:
            take(known[""][key], value)
        elif key not in sections:
            raise unknown_key(key, source, [*known[""], *sections])
    for section in sorted(sections - {"hashing"}):
        if section not in data:
            continue
        table = data[section]
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if key in known[section]:
                take(known[section][key], value)
            elif section == "hal" and isinstance(value, dict):
                values.setdefault("backend_options", {})[key] = value
            else:
                raise unknown_key(key, f"{source} [{section}]", set(known[section]))
    config = Config(**values)
    validate(config, source)
    return config


def validate(config: Config, source: str = "config") -> None:
    """Every setting within its range, then the checks that span several settings."""
    for s in declarations(Config):
        check_value(s, getattr(config, s.name), f"{source}: {s.path}")
    for common_name, role in config.certificate_roles.items():
        if role not in ROLES:
            raise ConfigError(f"{source}: certificate {common_name!r} has unknown role {role!r}")
    for grant in config.tokens:
        digest = grant.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(
                f"{source}: auth.tokens sha256 for {grant.name!r} is not 64 hex digits")
    for entry in config.hashing:
        if not (entry.pools or config.pool_urls):
            raise ConfigError(f"{source}: hashing.pools is empty for device {entry.device!r} "
                              "and [pool] urls is not set")
        if entry.intensity <= 0:
            raise ConfigError(f"{source}: hashing.intensity must be in (0, 1], got 0")
    for url in [*config.pool_urls, *(u for entry in config.hashing for u in entry.pools)]:
        try:
            parse_pool_url(url)
        except hal_errors.InvalidArgument as exc:
            raise ConfigError(f"{source}: {exc}") from None
    profiles.resolve(config.inference_profiles, source)
    unknown = [step for step in config.curtail_order if step not in CURTAIL_STEPS]
    if unknown or len(set(config.curtail_order)) != len(config.curtail_order):
        raise ConfigError(f"{source}: curtail.order: steps are {', '.join(CURTAIL_STEPS)}, each "
                          "at most "
                          f"once; got {list(config.curtail_order)}")
    _check_exposure(config, source, "server.tcp_address", config.tcp_address, "[tls]",
                    bool(config.tls_cert_file and config.tls_client_ca_file),
                    "mTLS: set tls.cert_file, tls.key_file and tls.client_ca_file")
    tls = (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    if any(tls) and not all(tls):
        raise ConfigError(f"{source}: [tls] needs cert_file, key_file and client_ca_file together")
    _check_exposure(config, source, "metrics.address", config.metrics_address,
                    "metrics.cert_file and key_file",
                    bool(config.metrics_cert_file and config.metrics_key_file),
                    "TLS: set metrics.cert_file and metrics.key_file")
    metrics_tls = (config.metrics_cert_file, config.metrics_key_file)
    if any(metrics_tls) and not all(metrics_tls):
        raise ConfigError(f"{source}: [metrics] needs cert_file and key_file together")
    if config.metrics_client_ca_file and not config.metrics_cert_file:
        raise ConfigError(f"{source}: metrics.client_ca_file needs cert_file and key_file")
    for path in filter(None, (*tls, *metrics_tls, config.metrics_client_ca_file)):
        if not Path(path).is_file():
            raise ConfigError(f"{source}: TLS file {path} does not exist")
    if all(tls):  # read now: gRPC would fail to listen without saying which file is wrong
        from agent.core.certs import CertError, check_server_files

        try:
            check_server_files(config.tls_cert_file, config.tls_key_file,
                               config.tls_client_ca_file)
        except CertError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    _check_openadr(config, source)
    try:
        check_options(config.backends, config.backend_options)
    except hal_errors.InvalidArgument as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _check_exposure(config: Config, source: str, key: str, address: str, configure: str,
                    secured: bool, needs: str) -> None:
    """The exposure rule of every listener: loopback, unless server.allow_non_loopback is set
    and the listener is secured."""
    if not address:
        return
    host, _port = parse_address(address, source)
    if is_loopback(host):
        return
    if not config.allow_non_loopback:
        raise ConfigError(
            f"{source}: {key} {address} is not a loopback address; set "
            f"server.allow_non_loopback = true (and configure {configure}) to expose rigd")
    if not secured:
        raise ConfigError(f"{source}: listening on {host} needs {needs}")


SIMPLE_LEVELS = ("1", "2", "3")
_FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*")


def _check_openadr(config: Config, source: str) -> None:
    """[openadr]: a URL rigd may use, a level table that makes sense, files that exist."""
    if 0 < config.openadr_poll_interval_s < 0.1:
        raise ConfigError(f"{source}: openadr.poll_interval_s: 0 (as the VTN asks) or at least "
                          f"0.1, got {config.openadr_poll_interval_s!r}")
    levels = config.openadr_simple_levels
    for level, fraction in levels.items():
        if level not in SIMPLE_LEVELS:
            raise ConfigError(f"{source}: openadr.simple_levels: levels are 1, 2 and 3 (0 is no "
                              f"curtailment), got {level!r}")
        if not 0 < fraction <= 1:
            raise ConfigError(f"{source}: openadr.simple_levels.{level} must be a fraction of "
                              f"the rig's power in (0, 1], got {fraction!r}")
    listed = [levels[level] for level in SIMPLE_LEVELS if level in levels]
    if listed != sorted(listed, reverse=True):
        raise ConfigError(f"{source}: openadr.simple_levels: a higher level must not leave the "
                          f"rig more power, got {levels}")
    if config.openadr_vtn_fingerprint and not _FINGERPRINT.fullmatch(
            config.openadr_vtn_fingerprint):
        raise ConfigError(f"{source}: openadr.vtn_fingerprint must be hex pairs separated by "
                          f"colons, got {config.openadr_vtn_fingerprint!r}")
    files = (config.openadr_cert_file, config.openadr_key_file, config.openadr_ca_file)
    if any(files[:2]) and not all(files):
        raise ConfigError(f"{source}: [openadr] needs cert_file, key_file and ca_file together")
    for path in filter(None, files):
        if not Path(path).is_file():
            raise ConfigError(f"{source}: openadr file {path} does not exist")
    url = config.openadr_vtn_url
    if not url:
        return
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source}: openadr.vtn_url must be an http:// or https:// URL, got "
                          f"{url!r}")
    if not is_loopback(parts.hostname) and not (parts.scheme == "https" and all(files)):
        raise ConfigError(
            f"{source}: openadr.vtn_url {url} is not on loopback: a VTN elsewhere needs "
            "https:// and cert_file, key_file and ca_file (plain http is for tests)")
    if importlib.util.find_spec("openleadr") is None:
        raise ConfigError(f"{source}: {OPENLEADR_MISSING}")


OPENLEADR_MISSING = ("[openadr] is configured but openleadr is not installed: "
                     "pip install 'rigd[openadr]' (openleadr==0.5.36)")


def parse_address(address: str, source: str = "config") -> tuple[str, int]:
    """'127.0.0.1:50051' or '[::1]:50051' -> (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"{source}: address {address!r} must be host:port")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: port {port} out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_path(path: str | os.PathLike[str] | None) -> str | None:
    """The file rigd reads: -c's; else $RIGD_CONFIG (which must exist); else
    /etc/rigd/rigd.toml if it exists; None = the built-in defaults."""
    if path is not None:
        return str(path)
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV]
    return DEFAULT_CONFIG_PATH if Path(DEFAULT_CONFIG_PATH).is_file() else None


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate the config file `config_path(path)` names, or the defaults."""
    source = config_path(path)
    if source is None:
        return Config()
    return from_dict(read_toml(source), source=source)


def describe() -> str:
    """Every setting as commented TOML with its default and meaning (for the README and
    `rigd --print-config`); tests/agent/test_config.py checks the README against it."""
    return schema_describe([(Config, ""), (TokenGrant, "[[auth.tokens]]"),
                            (HashingConfig, "[[hashing]]")],
                           skip={"tokens", "hashing", "backend_options"},
                           placeholders=_PLACEHOLDERS)


_PLACEHOLDERS = {"rig_id": '"<hostname>"'}


def _toml_default(s: Setting) -> str:
    return toml_default(s, _PLACEHOLDERS)
