"""Level 1: the rig's configuration and software, in seconds, without touching a device.

The blocking checks (files, the configuration) run in a thread; each returns one verdict.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from agent.config.profiles import RuntimeProfile
from agent.config.settings import Config, ConfigError, validate
from agent.runtime.curtail import Curtailment
from agent.runtime.diagnostics.checks import Result, Verdict, count
from hal.registry import BackendStatus

EARLIEST_SANE_UTC = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)  # before: an unset RTC
CLOCK_STEP_WARN_S = 2.0
CERT_EXPIRY_WARN = dt.timedelta(days=14)
STATE_DIR_FREE_WARN_BYTES = 256 << 20
_TIME_ERROR = 5  # ntp_adjtime(2): the kernel clock is not synchronised


def configuration(config: Config) -> Verdict:
    """The running configuration checked again as start-up checked it: the files it names may
    have gone since, a backend's options may no longer hold."""
    try:
        validate(config, "running configuration")
    except ConfigError as exc:
        return Result.FAIL, str(exc)
    return Result.PASS, (f"valid: {count(len(config.backends), 'backend')}, "
                         f"{count(len(config.hashing), '[[hashing]] device')}, "
                         f"{count(len(config.pool_urls), 'pool URL')}")


def _cert_files(config: Config) -> list[tuple[str, str]]:
    named = [("tls.cert_file", config.tls_cert_file),
             ("tls.client_ca_file", config.tls_client_ca_file),
             ("metrics.cert_file", config.metrics_cert_file),
             ("metrics.client_ca_file", config.metrics_client_ca_file),
             ("openadr.cert_file", config.openadr_cert_file),
             ("openadr.ca_file", config.openadr_ca_file)]
    return [(key, path) for key, path in named if path]


def certificates(config: Config, now: dt.datetime | None = None) -> Verdict:
    """Every certificate the configuration names parses and is within its validity; the
    private keys are readable. An expired server certificate takes a rig off its network."""
    from cryptography import x509

    files = _cert_files(config)
    keys = [k for k in (config.tls_key_file, config.metrics_key_file, config.openadr_key_file)
            if k]
    if not files:
        return Result.SKIP, "no certificate configured"
    now = now or dt.datetime.now(dt.UTC)
    soonest: tuple[dt.datetime, str] | None = None
    for key, path in files:
        try:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            return Result.FAIL, f"{key} {path}: cannot be read as PEM certificates: {exc}"
        for cert in certs:
            if cert.not_valid_before_utc > now:
                return Result.FAIL, f"{key} {path}: not valid before {cert.not_valid_before_utc}"
            if soonest is None or cert.not_valid_after_utc < soonest[0]:
                soonest = (cert.not_valid_after_utc, f"{key} {path}")
    unreadable = [k for k in keys if not os.access(k, os.R_OK)]
    if unreadable:
        return Result.FAIL, f"private key not readable: {', '.join(unreadable)}"
    assert soonest is not None
    expires, which = soonest
    when = expires.strftime("%Y-%m-%d %H:%M UTC")
    if expires <= now:
        return Result.FAIL, f"{which} expired {when}"
    if expires - now < CERT_EXPIRY_WARN:
        return Result.WARN, f"{which} expires {when}"
    return Result.PASS, f"{len(files)} files valid; the first to expire: {which} on {when}"


def state_dir(path: Path) -> Verdict:
    """The journal lives here: a write that fails loses what a restart brings back."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".diag-") as probe:
            probe.write(b"rigd diagnostics\n")
            probe.flush()
            os.fsync(probe.fileno())
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return Result.FAIL, f"{path} is not writable: {exc.strerror or exc}"
    text = f"{path} writable, {free / (1 << 30):.1f} GiB free"
    return (Result.WARN if free < STATE_DIR_FREE_WARN_BYTES else Result.PASS), text


def audit_log(path: str) -> Verdict:
    if not path:
        return Result.SKIP, "no audit file configured: audit lines go to rigd's log"
    target = Path(path)
    writable = os.access(target, os.W_OK) if target.exists() else \
        os.access(target.parent, os.W_OK)
    if not writable:
        return Result.FAIL, f"{path} is not writable"
    return Result.PASS, f"{path} writable"


def _ntp_state() -> int | None:
    """The kernel's clock state (ntp_adjtime, read only); None where it cannot be asked."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).ntp_adjtime
    except (AttributeError, OSError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
    timex = ctypes.create_string_buffer(256)  # struct timex (208 bytes), modes = 0
    state = int(fn(timex))
    return None if state < 0 else state


def clock(wall_minus_monotonic_at_start_s: float) -> Verdict:
    """Leases, curtailment expiries and OpenADR events are wall-clock times."""
    now = dt.datetime.now(dt.UTC)
    if now < EARLIEST_SANE_UTC:
        return Result.FAIL, f"the clock reads {now:%Y-%m-%d %H:%M} UTC: not set"
    stepped = (time.time() - time.monotonic()) - wall_minus_monotonic_at_start_s
    text = f"{now:%Y-%m-%d %H:%M:%S} UTC"
    if abs(stepped) > CLOCK_STEP_WARN_S:
        return Result.WARN, f"{text}; stepped by {stepped:+.1f} s since rigd started"
    state = _ntp_state()
    if state == _TIME_ERROR:
        return Result.WARN, f"{text}; the kernel says it is not synchronised (NTP)"
    return Result.PASS, text + ("" if state is None else "; synchronised")


def backend(status: BackendStatus) -> Verdict:
    if status.available:
        return Result.PASS, (f"{count(status.device_count, 'device')}, discovered in "
                             f"{status.discover_s:.2f} s")
    return Result.WARN, f"unavailable: {status.reason}"


def hashing_probe(kernel: dict[str, str], facet_id: str) -> Verdict:
    """The start-up probe's answer (the known-answer test at level 3 runs it again)."""
    reason = kernel.get(facet_id)
    if reason is None:
        return Result.SKIP, f"the start-up probe on {facet_id} has not finished"
    if reason:
        return Result.WARN, f"the hashing kernel does not run on {facet_id}: {reason}"
    return Result.PASS, f"the hashing kernel runs on {facet_id} (start-up probe)"


def profile(name: str, runtime: RuntimeProfile, wanted_by: Iterable[str]) -> Verdict:
    reason = runtime.unavailable_reason()
    wanted = sorted(wanted_by)
    if not reason:
        return Result.PASS, f"available ({runtime.argv[0]})"
    if wanted:
        return Result.FAIL, f"{reason}; and {', '.join(wanted)} should run it"
    return Result.SKIP, f"not available here: {reason}"


def pool(reached: dict[str, str], url: str) -> Verdict:
    """`reached`: URL -> "" when a TCP connection opened, else why not. One dead pool among
    failovers that answer is a warning; no pool at all is a failure."""
    reason = reached[url]
    if not reason:
        return Result.PASS, "a TCP connection opened"
    if any(not r for r in reached.values()):
        return Result.WARN, f"{reason} (another pool answers)"
    return Result.FAIL, reason


def curtailment(current: Curtailment | None) -> Verdict:
    if current is None:
        return Result.PASS, "none in force"
    expires = dt.datetime.fromtimestamp(current.expire_unix_s, dt.UTC)
    text = (f"{current.target_w:g} W target ({current.state}, {current.operation_id}), "
            f"until {expires:%H:%M:%S} UTC; level-3 load tests are skipped meanwhile")
    if current.state == "target_not_met":
        return Result.WARN, text + f"; {current.shortfall_w or 0:.0f} W short"
    return Result.PASS, text
