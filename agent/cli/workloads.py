"""rigctl switch and rigctl ops: what devices run, and the operations that change it."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.connect import CliError, Rig
from agent.cli.output import emit_json, table, utc, word
from rigapi import convert, pb
from rigapi.model import (
    HashingSpec,
    InferenceSpec,
    Operation,
    OperationState,
    WorkloadKind,
    WorkloadSpec,
)

KINDS = {"idle": WorkloadKind.IDLE, "hashing": WorkloadKind.HASHING,
         "inference": WorkloadKind.INFERENCE}


def _took(duration_s: float) -> int:
    return round(duration_s * 1000)


def format_operation(op: Operation) -> str:
    lines = [f"operation {op.operation_id} ({op.kind}): {word(op.state)}"
             + (f": {op.error}" if op.error else "")]
    if op.detail:
        lines.append(op.detail)
    rows = [[p.device_id or "(rig)", word(p.phase),
             f"{_took(p.duration_s)} ms" if p.duration_s is not None else "...", p.detail[:70]]
            for p in op.phases]
    if rows:
        lines.append(table(["DEVICE", "PHASE", "TOOK", "DETAIL"], rows))
    return "\n".join(lines)


def watch(rig: Rig, args: argparse.Namespace, operation_id: str) -> Operation:
    """Print each phase as it ends (or each snapshot as JSON); return the final operation.
    The library follows the operation across a broken stream (asking GetOperation)."""
    printed: set[int] = set()
    final: Operation | None = None

    def follow() -> None:
        nonlocal final
        for op in rig.client.follow(operation_id):
            final = op
            if args.json:
                emit_json("operation", convert.operation(op), stream=True)
                continue
            for i, phase in enumerate(op.phases):
                if phase.duration_s is not None and i not in printed:
                    printed.add(i)
                    print(f"  {phase.device_id or '(rig)'}  {word(phase.phase):<12} "
                          f"{_took(phase.duration_s):>7} ms  {phase.detail}", flush=True)

    rig.call(lambda c: follow())
    if final is None:  # follow() yields at least the operation as it stands
        raise CliError(f"operation {operation_id}: rigd sent nothing")
    return final


def finish(rig: Rig, args: argparse.Namespace, op: Operation) -> int:
    """Follow an operation to its end unless --no-wait; exit 0 only if it succeeded."""
    if args.no_wait:
        emit_json("operation", convert.operation(op)) if args.json else print(op.operation_id)
        return 0
    final = watch(rig, args, op.operation_id)
    if not args.json:
        print(word(final.state) + (f": {final.error}" if final.error else ""))
    return 0 if final.state == OperationState.SUCCEEDED else 1


def cmd_switch(rig: Rig, args: argparse.Namespace) -> int:
    spec = WorkloadSpec(KINDS[args.workload])
    if args.workload == "inference":
        spec = WorkloadSpec(spec.kind, inference=InferenceSpec(args.profile, args.model))
    elif args.workload == "hashing" and (args.pool or args.intensity):
        # Empty fields: rigd's configured ones (the configured pool, its intensity).
        spec = WorkloadSpec(spec.kind, hashing=HashingSpec(tuple(args.pool), "", "",
                                                            args.intensity or 0.0))
    devices = rig.resolve(args.devices)
    op = rig.call(lambda c: c.start_switch(devices, spec, request_id=args.request_id,
                                           fencing_token=args.fencing_token))
    if not args.json and not args.no_wait:
        print(f"operation {op.operation_id}: {', '.join(devices)} -> {args.workload}")
    return finish(rig, args, op)


def cmd_ops(rig: Rig, args: argparse.Namespace) -> int:
    if args.action in ("watch", "show") and not args.operation_id:
        raise SystemExit(f"rigctl ops {args.action}: give an OPERATION id (see `rigctl ops`)")
    if args.action == "watch":
        final = watch(rig, args, args.operation_id)
        if not args.json:
            print(format_operation(final))
        return 0
    if args.action == "show":
        op = rig.call(lambda c: c.operation(args.operation_id))
        emit_json("operation", convert.operation(op)) if args.json else \
            print(format_operation(op))
        return 0
    listed = rig.call(lambda c: c.operations(limit=args.limit, running_only=args.running))
    if args.json:
        emit_json("operations", pb.ListOperationsResponse(
            operations=[convert.operation(op) for op in listed]))
        return 0
    rows = [[op.operation_id, op.kind, word(op.state), utc(op.create_unix_s, "%H:%M:%S"),
             ",".join(d.split("/", 1)[-1][:14] for d in op.device_ids)[:48], op.error[:50]]
            for op in listed]
    print(table(["OPERATION", "KIND", "STATE", "STARTED", "DEVICES", "ERROR"], rows))
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "switch", parents=[common], help="switch devices between idle, hashing and inference",
        description="Switch devices to a workload and follow the operation's phases (drain, "
                    "stop, verify the memory freed, configure, start, ready).",
        epilog="examples:\n  rigctl switch 0 1 inference\n"
               "  rigctl switch GPU-e2b9 inference --profile vllm --model Qwen/Qwen3-0.6B\n"
               "  rigctl switch 0 hashing            # the configured pool\n"
               "  rigctl switch 0 idle --no-wait",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("devices", nargs="+", metavar="DEVICE",
                   help="id, GPU index, short id or unique prefix")
    p.add_argument("workload", choices=tuple(KINDS), help="what the devices run next")
    p.add_argument("--profile", default="builtin",
                   help="inference runtime profile (default: %(default)s)")
    p.add_argument("--model", default="", help="inference model (default: the profile's)")
    p.add_argument("--pool", action="append", default=[], metavar="URL",
                   help="hashing pool stratum+tcp://host:port (default: the configured pool)")
    p.add_argument("--intensity", type=float, metavar="X",
                   help="hashing intensity in (0, 1] (default: the configured one)")
    p.add_argument("--request-id", default="", metavar="ID",
                   help="idempotency key: a retry with it returns the same operation")
    p.add_argument("--fencing-token", type=int, default=0, metavar="N",
                   help="the token of the lease you hold; 0 = no lease")
    p.add_argument("--no-wait", action="store_true", help="print the operation id and return")
    p.set_defaults(func=cmd_switch)

    p = sub.add_parser("ops", parents=[common], help="operations: list, show ID, watch ID",
                       description="Recent operations (switches, curtailments, restores).",
                       epilog="examples:\n  rigctl ops --running\n  rigctl ops show OPERATION"
                              "\n  rigctl ops watch OPERATION",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", nargs="?", choices=("list", "show", "watch"), default="list",
                   help="list them, show one, or follow one until it ends (default: list)")
    p.add_argument("operation_id", nargs="?", default="", metavar="OPERATION",
                   help="for show and watch: the id `rigctl ops` lists")
    p.add_argument("--running", action="store_true", help="only operations still running")
    p.add_argument("--limit", type=int, default=20, help="how many (default: %(default)s)")
    p.set_defaults(func=cmd_ops)
