"""rigd's configuration: a TOML file whose every key is known, with defaults that work without one.

A typo in a key is an error naming the key, not a silently ignored setting: on a rig that controls
power, "I thought I had set that" is the bug to prevent. Backend sections under [hal.<name>] are
passed through to the backend, which validates its own options.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("viewer", "operator", "admin")


class ConfigError(Exception):
    """The configuration is unusable; the message is one line an operator can act on."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    name: str
    role: str
    sha256: str  # hex digest of the bearer token; the token itself is never stored


@dataclass(frozen=True, slots=True)
class HashingConfig:
    """A hashing workload started with the agent (the demo rig uses one)."""

    device: str  # hal device id, or "auto" for the best OpenCL device
    pools: tuple[str, ...]
    user: str = "rigd"
    password: str = "x"
    intensity: float = 1.0


@dataclass(frozen=True, slots=True)
class Config:
    rig_id: str = field(default_factory=socket.gethostname)
    # [server]
    unix_socket: str = ""  # resolved by default_socket_path() when empty
    unix_socket_mode: int = 0o660
    tcp_address: str = ""  # "" = no TCP listener
    allow_non_loopback: bool = False
    max_workers: int = 16
    drain_s: float = 1.0  # health reports NOT_SERVING this long before the listeners close
    shutdown_grace_s: float = 5.0
    # [auth]
    anonymous_role: str = "viewer"  # role of TCP callers without a token; "none" refuses them
    unix_socket_role: str = "admin"  # role of local callers (the socket's file mode guards it)
    tokens: tuple[TokenGrant, ...] = ()
    certificate_roles: dict[str, str] = field(default_factory=dict)  # mTLS common name -> role
    # [tls]
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # [audit]
    audit_path: str = ""  # JSON lines; "" = the audit events go to the log stream only
    # [log]
    log_level: str = "info"
    log_format: str = "json"
    # [telemetry]
    telemetry_interval_s: float = 1.0
    device_timeout_s: float = 2.0
    stream_queue_max: int = 16
    # [hal]
    backends: tuple[str, ...] = ("host", "nvml", "opencl", "asic")
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # [[hashing]]
    hashing: tuple[HashingConfig, ...] = ()
    demo: bool = False

    @property
    def socket_path(self) -> str:
        return self.unix_socket or default_socket_path()


def default_socket_path() -> str:
    if os.geteuid() == 0:
        return "/run/rigd/rigd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "rigd", "rigd.sock")
    return f"/tmp/rigd-{os.getuid()}/rigd.sock"


# Schema: section -> {key: (type(s), field name)}; sections map onto flat Config fields.
_Types = type | tuple[type, ...]
_SCHEMA: dict[str, dict[str, tuple[_Types, str]]] = {
    "": {"rig_id": (str, "rig_id")},
    "server": {
        "unix_socket": (str, "unix_socket"),
        "unix_socket_mode": (str, "unix_socket_mode"),
        "tcp_address": (str, "tcp_address"),
        "allow_non_loopback": (bool, "allow_non_loopback"),
        "max_workers": (int, "max_workers"),
        "drain_s": ((int, float), "drain_s"),
        "shutdown_grace_s": ((int, float), "shutdown_grace_s"),
    },
    "auth": {
        "anonymous_role": (str, "anonymous_role"),
        "unix_socket_role": (str, "unix_socket_role"),
        "tokens": (list, "tokens"),
        "certificate_roles": (dict, "certificate_roles"),
    },
    "tls": {
        "cert_file": (str, "tls_cert_file"),
        "key_file": (str, "tls_key_file"),
        "client_ca_file": (str, "tls_client_ca_file"),
    },
    "audit": {"path": (str, "audit_path")},
    "log": {"level": (str, "log_level"), "format": (str, "log_format")},
    "telemetry": {
        "interval_s": ((int, float), "telemetry_interval_s"),
        "device_timeout_s": ((int, float), "device_timeout_s"),
        "stream_queue_max": (int, "stream_queue_max"),
    },
    "hal": {"backends": (list, "backends")},
}
_TOP_LEVEL_TABLES = {*(_SCHEMA.keys() - {""}), "hashing"}
_HASHING_KEYS = {"device", "pools", "user", "password", "intensity"}
_TOKEN_KEYS = {"name", "role", "sha256"}


def _unknown(key: str, where: str, known: set[str] | list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown key {key!r} in {where}{suggestion}")


def _check_type(value: Any, types: _Types, where: str) -> None:
    # bool is an int in Python; a bool where a number is wanted is still a mistake.
    expected = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if not ok:
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")


def from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    """Validate a parsed TOML document and build a Config."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in _TOP_LEVEL_TABLES:
            continue
        if key == "hashing":
            continue
        if key not in _SCHEMA[""]:
            raise _unknown(key, source, [*_SCHEMA[""], *_TOP_LEVEL_TABLES])
        types, name = _SCHEMA[""][key]
        _check_type(value, types, f"{source}: {key}")
        values[name] = value

    for section, keys in _SCHEMA.items():
        if not section or section not in data:
            continue
        table = data[section]
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            if section == "hal" and isinstance(value, dict):
                values.setdefault("backend_options", {})[key] = value
                continue
            if key not in keys:
                raise _unknown(key, f"{source} [{section}]", set(keys))
            types, name = keys[key]
            _check_type(value, types, f"{source}: {section}.{key}")
            values[name] = value

    if "unix_socket_mode" in values:
        try:
            values["unix_socket_mode"] = int(values["unix_socket_mode"], 8)
        except ValueError:
            raise ConfigError(
                f"{source}: server.unix_socket_mode must be octal text like \"0660\""
            ) from None
    if "tokens" in values:
        values["tokens"] = tuple(_token(t, source) for t in values["tokens"])
    if "backends" in values:
        values["backends"] = tuple(_str_list(values["backends"], f"{source}: hal.backends"))
    if "hashing" in data:
        values["hashing"] = tuple(_hashing(h, source) for h in _table_list(data["hashing"], source))
    config = Config(**values)
    validate(config, source)
    return config


def _str_list(value: list[Any], where: str) -> list[str]:
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return value


def _table_list(value: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{source}: hashing must be an array of tables ([[hashing]])")
    return value


def _token(raw: Any, source: str) -> TokenGrant:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: auth.tokens entries must be tables")
    for key in raw:
        if key not in _TOKEN_KEYS:
            raise _unknown(key, f"{source} [[auth.tokens]]", _TOKEN_KEYS)
    missing = _TOKEN_KEYS - raw.keys()
    if missing:
        raise ConfigError(f"{source}: auth.tokens entry lacks {sorted(missing)}")
    digest = str(raw["sha256"]).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"{source}: auth.tokens sha256 for {raw['name']!r} is not 64 hex digits")
    return TokenGrant(name=str(raw["name"]), role=str(raw["role"]), sha256=digest)


def _hashing(raw: dict[str, Any], source: str) -> HashingConfig:
    for key in raw:
        if key not in _HASHING_KEYS:
            raise _unknown(key, f"{source} [[hashing]]", _HASHING_KEYS)
    if "device" not in raw or "pools" not in raw:
        raise ConfigError(f"{source}: [[hashing]] needs device and pools")
    pools = _str_list(raw["pools"], f"{source}: hashing.pools")
    if not pools:
        raise ConfigError(f"{source}: hashing.pools is empty")
    intensity = raw.get("intensity", 1.0)
    _check_type(intensity, (int, float), f"{source}: hashing.intensity")
    if not 0 < float(intensity) <= 1:
        raise ConfigError(f"{source}: hashing.intensity must be in (0, 1], got {intensity}")
    return HashingConfig(
        device=str(raw["device"]),
        pools=tuple(pools),
        user=str(raw.get("user", "rigd")),
        password=str(raw.get("password", "x")),
        intensity=float(intensity),
    )


def validate(config: Config, source: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    for role_field in ("anonymous_role", "unix_socket_role"):
        role = getattr(config, role_field)
        if role not in (*ROLES, "none"):
            raise ConfigError(
                f"{source}: auth.{role_field} must be one of {', '.join(ROLES)} or none, "
                f"got {role!r}"
            )
    for common_name, role in config.certificate_roles.items():
        if role not in ROLES:
            raise ConfigError(f"{source}: certificate {common_name!r} has unknown role {role!r}")
    for grant in config.tokens:
        if grant.role not in ROLES:
            raise ConfigError(f"{source}: token {grant.name!r} has unknown role {grant.role!r}")
    if config.tcp_address:
        host, _port = parse_address(config.tcp_address, source)
        if not config.allow_non_loopback and not is_loopback(host):
            raise ConfigError(
                f"{source}: server.tcp_address {config.tcp_address} is not a loopback address; "
                "set server.allow_non_loopback = true (and configure [tls]) to expose rigd"
            )
        if not is_loopback(host) and not (config.tls_cert_file and config.tls_client_ca_file):
            raise ConfigError(
                f"{source}: listening on {host} needs mTLS: set tls.cert_file, tls.key_file "
                "and tls.client_ca_file"
            )
    tls = (config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    if any(tls) and not all(tls):
        raise ConfigError(f"{source}: [tls] needs cert_file, key_file and client_ca_file together")
    for path in filter(None, tls):
        if not Path(path).is_file():
            raise ConfigError(f"{source}: TLS file {path} does not exist")
    if config.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{source}: log.level must be debug, info, warning or error")
    if config.log_format not in ("json", "console"):
        raise ConfigError(f"{source}: log.format must be json or console")
    if not 0.1 <= config.telemetry_interval_s <= 3600:
        raise ConfigError(f"{source}: telemetry.interval_s must be within 0.1 .. 3600")
    if not 0.1 <= config.device_timeout_s <= 60:
        raise ConfigError(f"{source}: telemetry.device_timeout_s must be within 0.1 .. 60")
    if not 1 <= config.stream_queue_max <= 10_000:
        raise ConfigError(f"{source}: telemetry.stream_queue_max must be within 1 .. 10000")
    if not 2 <= config.max_workers <= 256:
        raise ConfigError(f"{source}: server.max_workers must be within 2 .. 256")
    if not 0 <= config.drain_s <= 60 or not 0 <= config.shutdown_grace_s <= 600:
        raise ConfigError(f"{source}: server.drain_s / shutdown_grace_s out of range")


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


def load(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; None gives the defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    return from_dict(data, source=source)
