"""rigctl --fleet FILE inventory|telemetry|curtail: one command on every rig a file lists, through
the client library's Fleet (one channel per rig, bounded concurrency, a deadline per rig).

For people: each rig's own table under a line naming it and how long it took (or the one line
saying what failed), then a summary. With --json: one object per rig and line
({"kind": "fleet_rig", "rig", "ok", "latency_ms", "error", and the command's own document}),
then {"kind": "fleet_summary", ...}. Exit codes: 0 every rig did it; 1 some did not (refused,
failed, or an operation that did not succeed); 3 no rig answered at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable
from typing import Any

from agent.cli.connect import CliError, credentials_of, endpoint_error, explain
from agent.cli.devices import format_inventory, format_telemetry
from agent.cli.exitcodes import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from agent.cli.output import (
    SCHEMA,
    inventory_message,
    telemetry_message,
    to_dict,
    watts,
)
from agent.cli.power import curtailment_json, format_curtailment
from agent.cli.workloads import format_operation
from client.blocking import BlockingFleet
from client.errors import EndpointError, RigError, Timeout, Unreachable
from client.fleet import Fleet, Results, Row
from client.model import Inventory, Snapshot
from client.rig import Rig
from rigapi import convert
from rigapi.model import Operation, OperationState, RigPower


def _fleet(args: argparse.Namespace) -> BlockingFleet:
    template = credentials_of(args)
    try:
        return BlockingFleet(lambda: Fleet.from_file(
            args.fleet, template=template, concurrency=args.concurrency,
            deadline_s=args.timeout, timeout_s=args.timeout))
    except EndpointError as exc:
        raise endpoint_error(exc) from None


def error_line(row: Row[Any], fleet: BlockingFleet, timeout_s: float) -> str:
    """What happened to one rig, as rigctl says it for a single rig."""
    assert row.error is not None
    return str(explain(row.error, fleet.fleet.rigs[row.rig].endpoint, timeout_s))


def _kind(error: RigError) -> str:
    if isinstance(error, Unreachable):
        return "unreachable"
    if isinstance(error, Timeout) and not error.answered:
        return "no answer"
    return "refused or failed"


def summary(results: Results[Any], timeout_s: float, extra: str = "") -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for row in results.failed:
        assert row.error is not None
        kinds[_kind(row.error)] = kinds.get(_kind(row.error), 0) + 1
    latencies = sorted(row.latency_s for row in results)
    return {"rigs": len(results), "answered": len(results.ok), "failed": len(results.failed),
            "by_kind": kinds, "wall_ms": round(results.wall_s * 1000, 1),
            "slowest_ms": round(latencies[-1] * 1000, 1) if latencies else 0.0,
            "timeout_s": timeout_s, **({"note": extra} if extra else {})}


def summary_text(s: dict[str, Any]) -> str:
    text = f"{s['rigs']} rigs: {s['answered']} answered"
    if s["failed"]:
        kinds = s["by_kind"]
        parts = [f"{n} {k}" + (f" within {s['timeout_s']:g} s" if k == "no answer" else "")
                 for k, n in sorted(kinds.items())]
        text += f", {s['failed']} did not ({', '.join(parts)})"
    text += f"; {s['wall_ms']:.0f} ms in all, slowest rig {s['slowest_ms']:.0f} ms"
    return text + (f"; {s['note']}" if s.get("note") else "")


def show(results: Results[Any], fleet: BlockingFleet, args: argparse.Namespace,
         table: Callable[[Any], str], document: Callable[[Any], dict[str, Any]],
         kind: str, note: str = "", failed: Callable[[Any], bool] = lambda value: False
         ) -> int:
    for row in results:
        if args.json:
            line: dict[str, Any] = {"schema": SCHEMA, "kind": "fleet_rig", "command": kind,
                                    "rig": row.rig, "ok": row.ok,
                                    "latency_ms": round(row.latency_s * 1000, 1),
                                    "error": None}
            if row.error is not None:
                line["error"] = {"message": error_line(row, fleet, args.timeout),
                                 "code": row.error.code.name, "party": row.error.party,
                                 "reason": row.error.reason, "device_id": row.error.device_id}
            else:
                line[kind] = document(row.value)
            print(json.dumps(line, separators=(",", ":")), flush=True)
            continue
        where = fleet.fleet.rigs[row.rig].endpoint.where
        head = f"== {row.rig} ({where}) {row.latency_s * 1000:.0f} ms"
        if row.error is not None:
            print(f"{head}: {error_line(row, fleet, args.timeout)}\n")
        else:
            print(f"{head}\n{table(row.value)}\n")
    facts = summary(results, args.timeout, note)
    if args.json:
        print(json.dumps({"schema": SCHEMA, "kind": "fleet_summary", "command": kind, **facts},
                         separators=(",", ":")))
    else:
        print(summary_text(facts))
    if results.rows and not results.ok and "refused or failed" not in facts["by_kind"]:
        return EXIT_UNREACHABLE
    if results.failed or any(failed(r.value) for r in results.ok):
        return EXIT_FAILED
    return 0


def _fleet_power(results: Results[Snapshot]) -> str:
    total = sum(s.rig_power.total_w for s in results.values().values()
                if s.rig_power is not None)
    return f"rig power {watts(total)} in all"


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", EXIT_USAGE)
    fleet = _fleet(args)
    try:
        if args.command == "inventory":
            return show(fleet.inventory(), fleet, args,
                        lambda inv: format_inventory(inv, args.wide),
                        lambda inv: to_dict(inventory_message(inv)), "inventory")
        if args.command == "telemetry":
            if args.watch or args.query or args.format or args.device:
                raise CliError("with --fleet, telemetry shows every device's latest reading "
                               "(no --watch, --device, --query or --format)", EXIT_USAGE)
            results = fleet.telemetry()
            return show(results, fleet, args,
                        lambda snap: format_telemetry(snap.readings, snap.rig_power, args.wide),
                        lambda snap: to_dict(telemetry_message(snap)), "telemetry",
                        note=_fleet_power(results))
        return _curtail(fleet, args)
    finally:
        with contextlib.suppress(Exception):
            fleet.close()


def _curtail(fleet: BlockingFleet, args: argparse.Namespace) -> int:
    def op_document(op: Operation) -> dict[str, Any]:
        return to_dict(convert.operation(op))

    def not_succeeded(op: Operation) -> bool:
        return op.done and op.state != OperationState.SUCCEEDED

    if args.target == "status":
        async def status(rig: Rig) -> tuple[Inventory, RigPower]:
            inventory = await rig.inventory()
            power = (await rig.telemetry()).rig_power
            assert power is not None
            return inventory, power

        return show(fleet.map(status), fleet, args, lambda v: format_curtailment(*v),
                    lambda v: curtailment_json(*v), "curtailment")
    if args.target == "cancel":
        results = fleet.cancel_curtailment(wait=not args.no_wait)
        return show(results, fleet, args, format_operation, op_document, "operation",
                    failed=not_succeeded)
    try:
        target_w = float(args.target)
    except ValueError:
        raise CliError(f"give WATTS, status or cancel, not {args.target!r}", 2) from None
    if args.fencing_token:
        raise CliError("--fencing-token is one rig's: not with --fleet", EXIT_USAGE)
    results = fleet.curtail(target_w, deadline_s=args.deadline, expiry_s=args.expiry,
                            reason=args.reason, wait=not args.no_wait,
                            rig_deadline_s=args.timeout + (0 if args.no_wait else args.deadline))
    return show(results, fleet, args, format_operation, op_document, "operation",
                failed=not_succeeded)

