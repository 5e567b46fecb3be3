"""rigctl switch and rigctl ops: what devices run, and the operations that change it."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.connect import Rig
from agent.cli.output import OP_STATE, PHASE, emit_json, table
from rigapi import pb

KINDS = {"idle": pb.WORKLOAD_KIND_IDLE, "hashing": pb.WORKLOAD_KIND_HASHING,
         "inference": pb.WORKLOAD_KIND_INFERENCE}


def format_operation(op: pb.Operation) -> str:
    lines = [f"operation {op.operation_id} ({op.kind}): {OP_STATE[op.state]}"
             + (f": {op.error}" if op.error else "")]
    if op.detail:
        lines.append(op.detail)
    rows = [[p.device_id or "(rig)", PHASE[p.phase],
             f"{p.duration_ms} ms" if p.HasField("duration_ms") else "...", p.detail[:70]]
            for p in op.phases]
    if rows:
        lines.append(table(["DEVICE", "PHASE", "TOOK", "DETAIL"], rows))
    return "\n".join(lines)


def watch(rig: Rig, args: argparse.Namespace, operation_id: str) -> pb.Operation:
    """Print each phase as it ends (or each snapshot as JSON); return the final operation."""
    printed: set[int] = set()
    final = pb.Operation()

    def follow(stub: Any, md: list[tuple[str, str]]) -> None:
        nonlocal final
        for message in stub.WatchOperation(pb.WatchOperationRequest(operation_id=operation_id),
                                           metadata=md):
            final = message.operation
            if args.json:
                emit_json("operation", final, stream=True)
                continue
            for i, phase in enumerate(final.phases):
                if phase.HasField("duration_ms") and i not in printed:
                    printed.add(i)
                    print(f"  {phase.device_id or '(rig)'}  {PHASE[phase.phase]:<12} "
                          f"{phase.duration_ms:>7} ms  {phase.detail}", flush=True)

    rig.call(follow)
    return final


def finish(rig: Rig, args: argparse.Namespace, op: pb.Operation) -> int:
    """Follow an operation to its end unless --no-wait; exit 0 only if it succeeded."""
    if args.no_wait:
        emit_json("operation", op) if args.json else print(op.operation_id)
        return 0
    final = watch(rig, args, op.operation_id)
    if not args.json:
        print(OP_STATE[final.state] + (f": {final.error}" if final.error else ""))
    return 0 if final.state == pb.OPERATION_STATE_SUCCEEDED else 1


def cmd_switch(rig: Rig, args: argparse.Namespace) -> int:
    workload = pb.Workload(kind=KINDS[args.workload])
    if args.workload == "inference":
        workload.inference.CopyFrom(pb.InferenceSpec(profile=args.profile, model=args.model))
    elif args.workload == "hashing" and (args.pool or args.intensity):
        workload.hashing.CopyFrom(pb.HashingSpec(pool_urls=args.pool,
                                                 intensity=args.intensity or 0.0))
    devices = rig.resolve(args.devices)
    request = pb.SetWorkloadRequest(device_ids=devices, workload=workload,
                                    fencing_token=args.fencing_token, request_id=args.request_id)
    op = rig.call(lambda s, md: s.SetWorkload(request, metadata=md,
                                              timeout=args.timeout)).operation
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
        op = rig.call(lambda s, md: s.GetOperation(pb.GetOperationRequest(
            operation_id=args.operation_id), metadata=md, timeout=args.timeout)).operation
        emit_json("operation", op) if args.json else print(format_operation(op))
        return 0
    listed = rig.call(lambda s, md: s.ListOperations(pb.ListOperationsRequest(
        limit=args.limit, running_only=args.running), metadata=md, timeout=args.timeout))
    if args.json:
        emit_json("operations", listed)
        return 0
    rows = [[op.operation_id, op.kind, OP_STATE[op.state],
             op.create_time.ToDatetime().strftime("%H:%M:%S"),
             ",".join(d.split("/", 1)[-1][:14] for d in op.device_ids)[:48], op.error[:50]]
            for op in listed.operations]
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
