"""rigctl curtail: the rig to a watt target, its status, its end."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.connect import CliError, Rig
from agent.cli.devices import format_rig_power
from agent.cli.output import emit_json, to_dict, utc
from agent.cli.workloads import finish
from client.model import Inventory
from rigapi import convert
from rigapi.model import RigPower


def format_curtailment(inv: Inventory, power: RigPower) -> str:
    rig = format_rig_power(power)
    c = inv.curtailment
    if c is None:
        return f"no curtailment in force; {rig}"
    expires = utc(c.expire_unix_s, "%H:%M:%S UTC")
    lines = [f"curtailment {c.operation_id}: target {c.rig_power_target_w:,.0f} W, {c.state}, "
             f"until {expires} ({c.reason or 'no reason'}; by {c.source})", rig]
    if c.below_target_after_s is not None:
        lines.append(f"below target {c.below_target_after_s:.1f} s after the command "
                     f"(from {c.rig_power_before_w:,.0f} W)")
    if c.shortfall_w is not None:
        lines.append(f"target missed by {c.shortfall_w:,.0f} W")
    return "\n".join(lines)


def curtailment_json(inv: Inventory, power: RigPower) -> dict[str, Any]:
    return {"curtailment": to_dict(convert.curtailment(inv.curtailment))
            if inv.curtailment is not None else None,
            "rig_power": to_dict(convert.rig_power(power))}


def cmd_curtail(rig: Rig, args: argparse.Namespace) -> int:
    if args.target == "status":
        inv = rig.inventory()
        power = rig.call(lambda c: c.telemetry()).rig_power
        assert power is not None  # every device was asked for
        if args.json:
            emit_json("curtailment", curtailment_json(inv, power))
        else:
            print(format_curtailment(inv, power))
        return 0
    if args.target == "cancel":
        op = rig.call(lambda c: c.start_cancel_curtailment(fencing_token=args.fencing_token))
        return finish(rig, args, op)
    try:
        watts = float(args.target)
    except ValueError:
        raise CliError(f"give WATTS, status or cancel, not {args.target!r}", 2) from None
    op = rig.call(lambda c: c.start_curtailment(
        watts, deadline_s=args.deadline, expiry_s=args.expiry, reason=args.reason,
        fencing_token=args.fencing_token))
    return finish(rig, args, op)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "curtail", parents=[common], help="curtail the rig to WATTS, or: status, cancel",
        description="Bring the whole rig below a power target by a deadline, shedding hashing "
                    "before inference; it lifts by itself at its expiry. A new curtailment "
                    "replaces one in force when its target is lower.",
        epilog="examples:\n  rigctl curtail 5000 --deadline 30 --expiry 900 --reason 'ERCOT EEA2'"
               "\n  rigctl curtail status\n  rigctl curtail cancel",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="WATTS|status|cancel",
                   help="the rig's power target in watts, or status, or cancel")
    p.add_argument("--deadline", type=int, default=60, metavar="S",
                   help="seconds allowed to get below target, 1 .. 3600 (default: %(default)s)")
    p.add_argument("--expiry", type=int, default=3600, metavar="S",
                   help="seconds until it lifts by itself, 1 .. 86400 (default: %(default)s)")
    p.add_argument("--reason", default="", help="free text for the audit log")
    p.add_argument("--fencing-token", type=int, default=0, metavar="N",
                   help="the token of the lease you hold; 0 = no lease")
    p.add_argument("--no-wait", action="store_true", help="print the operation id and return")
    p.set_defaults(func=cmd_curtail)
