"""rigd: discover the rig's devices and serve rig.v1.RigAgent on a Unix socket and, optionally, TCP.

Shutdown (SIGTERM or SIGINT) is graceful: health turns NOT_SERVING first so load balancers and
controllers stop sending, the listeners stay open for `drain_s`, streams end, then in-flight
calls get `shutdown_grace_s` to finish. Startup errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import __version__
from agent.api import SERVICE_NAME, pb_grpc
from agent.auth import AuditLog, Authenticator, AuthInterceptor
from agent.config import Config, ConfigError, load, parse_address, validate
from agent.service import RigAgentService
from agent.telemetry import TelemetryCollector
from agent.workloads.manager import WorkloadManager
from hal import errors as hal_errors
from hal.registry import discover

log = structlog.get_logger("rigd")


class StartupError(Exception):
    """rigd cannot start; the message is one line an operator can act on."""


def configure_logging(level: str, fmt: str) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _prepare_socket_path(path: str) -> None:
    """Refuse a path another live process serves or that is not a socket; clear a stale one."""
    p = Path(path)
    if len(os.fsencode(path)) > 100:
        raise StartupError(f"unix socket path {path} is too long (max ~100 bytes)")
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"unix socket path {path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        p.unlink(missing_ok=True)  # stale: its server is gone
        return
    except OSError as exc:
        raise StartupError(f"unix socket path {path} is unusable: {exc.strerror}") from None
    finally:
        probe.close()
    raise StartupError(f"unix socket path {path} is in use by another running process")


def _check_port_free(host: str, port: int, address: str) -> None:
    """gRPC's own bind failure is a C-core log line plus a bare RuntimeError; say it plainly."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {address}: {exc.strerror}") from None


class Agent:
    def __init__(self, config: Config, extra_backend_options: dict[str, Any] | None = None) -> None:
        self.config = config
        self.stopped = threading.Event()
        self._stop_requested = threading.Event()
        self.socket_path = config.socket_path
        self.tcp_port: int | None = None
        self.server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
            interceptors=[AuthInterceptor(Authenticator(config), AuditLog(config.audit_path))],
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=config.max_workers * 8,
        )
        # Listeners first: a taken socket or port is reported before anything else happens.
        self._bind()
        try:
            self.discovery = discover(
                config.backends, {**config.backend_options, **(extra_backend_options or {})}
            )
        except hal_errors.InvalidArgument as exc:
            self._release_listeners()
            raise StartupError(f"configuration: {exc}") from None
        for status in self.discovery.backends:
            log.info(
                "backend", name=status.name, available=status.available,
                reason=status.reason or None, devices=status.device_count,
            )
        self.workloads = WorkloadManager()
        self.collector = TelemetryCollector(
            self.discovery.devices, config.telemetry_interval_s, config.device_timeout_s,
            self.workloads.status,
        )
        self.service = RigAgentService(
            config.rig_id, self.discovery, self.collector, self.workloads,
            config.stream_queue_max,
        )
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=ThreadPoolExecutor(max_workers=2),
        )
        pb_grpc.add_RigAgentServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            self.server,
        )

    def _bind(self) -> None:
        _prepare_socket_path(self.socket_path)
        old_umask = os.umask(0o777 & ~self.config.unix_socket_mode)
        try:
            bound = self.server.add_insecure_port(f"unix:{self.socket_path}")
        except RuntimeError:
            bound = 0
        finally:
            os.umask(old_umask)
        if not bound:
            raise StartupError(f"cannot listen on unix:{self.socket_path}")
        if self.config.tcp_address:
            try:
                self._bind_tcp()
            except StartupError:
                self._release_listeners()
                raise

    def _release_listeners(self) -> None:
        """Start-up failed after binding: free the port and the socket path for the next try."""
        self.server.stop(0)
        Path(self.socket_path).unlink(missing_ok=True)

    def _bind_tcp(self) -> None:
        host, port = parse_address(self.config.tcp_address)
        _check_port_free(host, port, self.config.tcp_address)
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.config.tls_cert_file:
                credentials = grpc.ssl_server_credentials(
                    [(Path(self.config.tls_key_file).read_bytes(),
                      Path(self.config.tls_cert_file).read_bytes())],
                    root_certificates=Path(self.config.tls_client_ca_file).read_bytes(),
                    require_client_auth=True,
                )
                self.tcp_port = self.server.add_secure_port(target, credentials)
            else:
                self.tcp_port = self.server.add_insecure_port(target)
        except RuntimeError:
            self.tcp_port = 0
        if not self.tcp_port:
            raise StartupError(f"cannot listen on {self.config.tcp_address}: address not available")

    def _start_workloads(self) -> None:
        """The [[hashing]] workloads of the configuration; a wrong device id stops start-up."""
        from agent.workloads.hashing.run import HashingRun

        devices = self.discovery.by_id()
        for spec in self.config.hashing:
            try:
                run = HashingRun.start(spec, devices)
            except hal_errors.InvalidArgument as exc:
                self.workloads.stop_all()
                self._release_listeners()
                raise StartupError(f"configuration: {exc}") from None
            except hal_errors.HalError as exc:
                log.error("hashing_not_started", device=spec.device, error=str(exc))
                continue
            self.workloads.attach(run.device_id, run)

    def start(self) -> None:
        self._start_workloads()
        self.collector.start()
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving", version=__version__, rig_id=self.config.rig_id,
            unix_socket=self.socket_path, tcp_port=self.tcp_port,
            devices=len(self.discovery.devices),
        )

    def request_stop(self) -> None:
        self._stop_requested.set()

    def run_until_stopped(self) -> None:
        self._stop_requested.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting_down", drain_s=self.config.drain_s)
        self.health.enter_graceful_shutdown()  # every service NOT_SERVING from now on
        self.stopped.wait(self.config.drain_s)
        self.service.stopping = True
        self.server.stop(self.config.shutdown_grace_s).wait()
        self.collector.stop()
        self.workloads.stop_all()
        self.discovery.close()
        try:
            Path(self.socket_path).unlink(missing_ok=True)
        except OSError:
            pass
        self.stopped.set()
        log.info("stopped")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rigd", description="The rig agent.")
    parser.add_argument("--config", "-c", help="TOML configuration file (defaults work without)")
    parser.add_argument("--demo", action="store_true",
                        help="run the embedded demo rig (simulated devices on loopback)")
    parser.add_argument("--unix-socket", help="override server.unix_socket")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="override server.tcp_address")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", choices=("json", "console"))
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"rigd {__version__}")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    config = load(args.config)
    overrides: dict[str, Any] = {}
    if args.unix_socket:
        overrides["unix_socket"] = args.unix_socket
    if args.tcp is not None:
        overrides["tcp_address"] = args.tcp
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.log_format:
        overrides["log_format"] = args.log_format
    if args.demo:
        overrides["demo"] = True
    if overrides:
        config = dataclasses.replace(config, **overrides)
        validate(config, "command line")
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demo: Any = None
    try:
        config = build_config(args)
        if args.check_config:
            print(f"rigd: {args.config or 'defaults'}: configuration is valid")
            return 0
        configure_logging(config.log_level, config.log_format)
        extra: dict[str, Any] = {}
        if config.demo:
            from agent.demo import DemoRig

            demo = DemoRig.start()
            config, extra = demo.apply(config)
        agent = Agent(config, extra)
        agent.start()
    except (ConfigError, StartupError) as exc:
        print(f"rigd: error: {exc}", file=sys.stderr)
        if demo is not None:
            demo.stop()
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run_until_stopped()
    finally:
        if demo is not None:
            demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
