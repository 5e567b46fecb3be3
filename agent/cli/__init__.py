"""rigctl: the operator's CLI for a running rigd, and the local FPGA card tools.

Tables for people, `--json` for scripts (see agent/cli/output.py). Errors are one line saying
what happened. Exit codes: 0 done; 1 rigd refused the call or the operation failed; 2 the command
line is wrong; 3 no rigd answered; 4 diagnostics or a validation found a fault.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before grpc loads: its C core would print a refused TLS handshake as an info line of its own
# beside rigctl's one-line error.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from agent import __version__
from agent.cli import certs, completion, devices, diag, leases, power, top, workloads
from agent.cli.connect import CliError, Rig, add_connection_args
from agent.cli.exitcodes import EXIT_UNREACHABLE

COMMANDS = (devices, workloads, power, leases, diag, top, certs, completion)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        help="print JSON (one object per line for streams) instead of tables")
    add_connection_args(common, after_command=True)
    parser = argparse.ArgumentParser(
        prog="rigctl", description="Operate a rig through rigd: devices, workloads, power.",
        epilog="examples:\n  rigctl inventory\n  rigctl telemetry --watch\n"
               "  rigctl switch 0 inference\n  rigctl curtail 5000 --deadline 30\n"
               "  rigctl certs init /etc/rigd/pki --server-name rig12.example.net\n\n"
               "Run `rigctl COMMAND --help` for a command's options and examples.\n"
               "Exit codes: 0 done, 1 refused or failed, 2 bad command line, 3 rigd "
               "unreachable,\n4 tests found a fault.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rigctl {__version__}")
    add_connection_args(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub, common)
    # The FPGA tools load OpenCL: only when asked for, so every other command starts fast.
    fpga = sub.add_parser("fpga", add_help=False, help="examine, validate and program FPGA "
                          "cards on this machine (`rigctl fpga --help`)")
    fpga.add_argument("fpga_args", nargs=argparse.REMAINDER)
    fpga.set_defaults(func=None, local=_fpga)
    return parser


def _fpga(args: argparse.Namespace) -> int:
    from agent.cli import fpga

    return fpga.main(["fpga", *args.fpga_args])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "local", None) is _fpga:  # its own options, --help included
        args.fpga_args = [*unknown, *args.fpga_args]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        local = getattr(args, "local", None)
        if local is not None:  # runs on this machine, not through rigd
            result: int = local(args)
            return result
        result = args.func(Rig(args), args)
        return result
    except CliError as exc:
        print(f"rigctl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into `head`
        sys.stderr.close()
        return 0
    except ConnectionError as exc:  # pragma: no cover - grpc reports these as RpcError
        print(f"rigctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
