"""The `rigd` command: its options, the configuration they override, and the start.

`rigd --demo` first starts the embedded demo rig (simulated GPUs, miners and a pool on loopback,
agent/demo) and then rigd on it; otherwise rigd runs on what the configuration names. The daemon
itself (agent/daemon.py) knows nothing of the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from agent import __version__
from agent.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    config_path,
    describe,
    load,
    validate,
)
from agent.core.logs import configure_logging
from agent.daemon import WATCHDOG_SLACK_S, SignalWatcher, StartupError, serve
from agent.demo.rig import DemoRig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rigd",
        description="The rig agent: finds the rig's devices and serves rig.v1.RigAgent to\n"
                    "rigctl (Unix socket) and controllers (TCP with mTLS): telemetry, power\n"
                    "limits, switching devices between hashing and inference, curtailment.",
        epilog="examples:\n"
               "  rigd --demo --log-format console     a simulated rig on this machine\n"
               "  rigd --check-config -c rigd.toml      validate a file, start nothing\n"
               "  rigd --print-config > rigd.toml       every setting, commented out\n"
               "  rigd                                  /etc/rigd/rigd.toml (systemd: "
               "deploy/rigd.service)\n\n"
               f"environment: {CONFIG_ENV} names the file read without --config (instead of "
               f"{DEFAULT_CONFIG_PATH}).\n"
               "exit codes: 0 stopped by SIGTERM/SIGINT, 2 configuration or start-up error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", "-c", metavar="FILE",
                        help=f"TOML configuration file (default: ${CONFIG_ENV} if set, else "
                             f"{DEFAULT_CONFIG_PATH} if present, else built-in defaults)")
    parser.add_argument("--demo", action="store_true",
                        help="run the embedded demo rig (simulated GPUs, miners and a pool on "
                             "loopback)")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="override server.unix_socket (default: rigd.sock in systemd's "
                             "$RUNTIME_DIRECTORY, else /run/rigd/rigd.sock as root, else "
                             "$XDG_RUNTIME_DIR/rigd/rigd.sock)")
    parser.add_argument("--tcp", metavar="HOST:PORT",
                        help="override server.tcp_address (default: no TCP listener)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="override log.level (unset there: info)")
    parser.add_argument("--log-format", choices=("json", "console"),
                        help="override log.format: json lines, or console (colour only on a "
                             "terminal) (unset there: json)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration (every backend's options and the TLS "
                             "files too) and exit")
    parser.add_argument("--print-config", action="store_true",
                        help="print every setting with its default and meaning as commented "
                             "TOML, then exit")
    parser.add_argument("--version", action="version", version=f"rigd {__version__}")
    return parser


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
    args = build_parser().parse_args(argv)
    if args.print_config:
        print(describe(), end="")
        return 0
    demo: Any = None
    try:
        config = build_config(args)
        source = config_path(args.config) or "built-in defaults"
        if args.check_config:
            print(f"rigd: {source}: configuration is valid")
            return 0
        configure_logging(config.log_level, config.log_format)
        signals = SignalWatcher(config.drain_s + config.shutdown_grace_s + WATCHDOG_SLACK_S)
        extra: dict[str, Any] = {}
        if config.demo:
            demo = DemoRig.start()
            config, extra = demo.apply(config)
        asyncio.run(serve(config, signals, extra))
    except (ConfigError, StartupError) as exc:
        print(f"rigd: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if demo is not None:
            demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
