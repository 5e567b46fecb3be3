"""rigctl: the operator's CLI for a running rigd (or a fleet of them), and the local FPGA card
tools. Every call to rigd goes through the client library (client/), as a controller's would.

Tables for people, `--json` for scripts (see agent/cli/output.py). Errors are one line saying
what happened and who failed. Exit codes: 0 done; 1 rigd refused the call or the operation
failed; 2 the command line is wrong; 3 no rigd answered; 4 diagnostics or a validation found a
fault.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

# Before grpc loads: its C core would print a refused TLS handshake as an info line of its own
# beside rigctl's one-line error.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from agent import __version__
from agent.cli import certs, completion, devices, diag, leases, power, top, workloads
from agent.cli.connect import CliError, Rig, add_connection_args
from agent.cli.exitcodes import EXIT_UNREACHABLE, EXIT_USAGE

COMMANDS = (devices, workloads, power, leases, diag, top, certs, completion)
FLEET_COMMANDS = ("inventory", "telemetry", "curtail")


def build_parser(describe_socket: bool = True) -> argparse.ArgumentParser:
    """rigctl's parser. `describe_socket`: name the default socket in the help (it costs
    loading rigd's configuration; main() asks for it only when help is asked for)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        help="print JSON (one object per line for streams) instead of tables")
    add_connection_args(common, after_command=True, describe_socket=describe_socket)
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
    add_connection_args(parser, describe_socket=describe_socket)
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
    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(describe_socket=any(w in ("-h", "--help") for w in words))
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "local", None) is _fpga:  # its own options, --help included
        args.fpga_args = [*unknown, *args.fpga_args]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    rig: Rig | None = None
    try:
        local = getattr(args, "local", None)
        if local is not None:  # runs on this machine, not through rigd
            result: int = local(args)
            return result
        if args.fleet:
            if args.command not in FLEET_COMMANDS:
                raise CliError(f"--fleet runs {', '.join(FLEET_COMMANDS)}, not {args.command}",
                               EXIT_USAGE)
            from agent.cli import fleet

            return fleet.run(args)
        rig = Rig(args)
        result = args.func(rig, args)
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
    finally:
        if rig is not None:
            with contextlib.suppress(Exception):  # the answer is out; closing must not hide it
                rig.close()
