"""rigctl: the operator's CLI for a running rigd (and local FPGA card tools).

Human tables by default, `--json` for scripts. Errors are one line and a non-zero exit:
1 when rigd refused or failed the call, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from agent import __version__
from agent.api import FRESH_STREAM_OPTIONS, pb, pb_grpc
from agent.config import default_socket_path

KIND_NAMES = {v: k.removeprefix("DEVICE_KIND_").lower() for k, v in pb.DeviceKind.items()}
HEALTH_NAMES = {v: k.removeprefix("HEALTH_STATE_").lower() for k, v in pb.HealthState.items()}
WORKLOAD_NAMES = {v: k.removeprefix("WORKLOAD_KIND_").lower() for k, v in pb.WorkloadKind.items()}
WORKLOAD_STATES = {v: k.removeprefix("WORKLOAD_STATE_").lower()
                   for k, v in pb.WorkloadState.items()}
NA = "N/A"


class CliError(Exception):
    pass


# -- formatting ---------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _opt(msg: Message, field: str, fmt: Callable[[Any], str]) -> str:
    return fmt(getattr(msg, field)) if msg.HasField(field) else NA


def _si(value: float, unit: str) -> str:
    prefixes = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.1f} {unit}"


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)}MiB"


def _short_id(device_id: str, width: int = 28) -> str:
    return device_id if len(device_id) <= width else device_id[: width - 1] + "…"


def format_inventory(inv: pb.GetInventoryResponse) -> str:
    rows = []
    for d in inv.devices:
        health = HEALTH_NAMES[d.health.state] + (f" ({d.health.reason})" if d.health.reason else "")
        name = d.name or NA
        if d.model and d.model != d.name:
            name = f"{name} ({d.model})"
        rows.append([
            d.id, KIND_NAMES[d.kind], name, "yes" if d.simulated else "no", health,
            ",".join(d.capabilities),
        ])
    out = [f"rig {inv.rig_id}  (rigd {inv.agent_version}, {len(inv.devices)} devices)", ""]
    out.append(table(["DEVICE", "KIND", "NAME", "SIMULATED", "HEALTH", "CAPABILITIES"], rows))
    out += ["", table(["BACKEND", "AVAILABLE", "DEVICES", "REASON"], [
        [b.name, "yes" if b.available else "no", str(b.device_count), b.reason or ""]
        for b in inv.backends
    ])]
    return "\n".join(out)


def _gpu_rows(readings: list[pb.DeviceTelemetry]) -> str:
    rows = []
    for i, t in enumerate(readings):
        g = t.gpu
        mem = (f"{_mib(g.mem_used_bytes)} / {_mib(g.mem_total_bytes)}"
               if g.HasField("mem_used_bytes") and g.HasField("mem_total_bytes") else NA)
        power = (f"{_opt(t, 'power_w', lambda v: f'{v:.0f}W')} / "
                 f"{_opt(t, 'power_limit_w', lambda v: f'{v:.0f}W')}")
        rows.append([
            str(i), t.device_id.removeprefix("gpu/")[:12],  # "GPU-" + 8 hex: unique in a rig
            _opt(t, "temp_c", lambda v: f"{v:.0f}C"),
            _opt(g, "performance_state", lambda v: f"P{v}"),
            power, mem,
            _opt(g, "utilization_gpu_pct", lambda v: f"{v:.0f}%"),
            _opt(g, "clock_sm_mhz", lambda v: f"{v}MHz"),
            str(len(g.processes)),
            _opt(g, "last_xid", str),
            WORKLOAD_NAMES.get(t.workload.kind, "") if t.HasField("workload") else "",
            t.error or (HEALTH_NAMES[t.health.state] if t.health.state != pb.HEALTH_STATE_HEALTHY
                        else ""),
        ])
    return table(["GPU", "ID", "TEMP", "PERF", "PWR USAGE/CAP", "MEMORY USAGE", "UTIL", "SM CLK",
                  "PROCS", "XID", "WORKLOAD", "STATUS"], rows)


def _asic_rows(readings: list[pb.DeviceTelemetry]) -> str:
    rows = []
    for t in readings:
        a = t.asic
        temps = [b.temp_chip_c for b in a.boards if b.HasField("temp_chip_c")]
        rows.append([
            _short_id(t.device_id), a.firmware_family or NA,
            _opt(t, "hashrate_hs", lambda v: _si(v, "H/s")),
            _opt(a, "expected_hashrate_hs", lambda v: _si(v, "H/s")),
            _opt(t, "power_w", lambda v: f"{v:.0f}W"),
            f"{max(temps):.0f}C" if temps else NA,
            "/".join(str(f) for f in a.fans_rpm) or NA,
            _opt(a, "is_mining", lambda v: "yes" if v else "no"),
            t.error or "",
        ])
    return table(["ASIC", "FIRMWARE", "HASHRATE", "EXPECTED", "POWER", "CHIP TEMP", "FANS RPM",
                  "MINING", "STATUS"], rows)


def _other_rows(readings: list[pb.DeviceTelemetry]) -> str:
    rows = []
    for t in readings:
        w = t.workload
        shares = (f"{w.shares_accepted}/{w.shares_rejected}"
                  if w.HasField("shares_accepted") else NA)
        detail = ""
        if t.HasField("host"):
            h = t.host
            detail = (f"cpu {h.cpu_util_pct:.0f}% load {h.load_avg_1m:.2f} mem "
                      f"{_mib(h.mem_used_bytes)}/{_mib(h.mem_total_bytes)}")
        rows.append([
            _short_id(t.device_id, 36), KIND_NAMES[t.kind], HEALTH_NAMES[t.health.state],
            _opt(t, "temp_c", lambda v: f"{v:.0f}C"),
            _opt(t, "power_w", lambda v: f"{v:.0f}W"),
            (f"{WORKLOAD_NAMES[w.kind]} {WORKLOAD_STATES[w.state]}" if t.HasField("workload")
             else "idle"),
            _opt(t, "hashrate_hs", lambda v: _si(v, "H/s")), shares,
            t.error or detail,
        ])
    return table(["DEVICE", "KIND", "HEALTH", "TEMP", "POWER", "WORKLOAD", "HASHRATE",
                  "SHARES A/R", "DETAIL"], rows)


def format_telemetry(readings: Sequence[pb.DeviceTelemetry]) -> str:
    gpus = [t for t in readings if t.kind == pb.DEVICE_KIND_GPU]
    asics = [t for t in readings if t.kind == pb.DEVICE_KIND_ASIC]
    others = [t for t in readings if t.kind not in (pb.DEVICE_KIND_GPU, pb.DEVICE_KIND_ASIC)]
    sections = []
    if gpus:
        sections.append(_gpu_rows(gpus))
    if asics:
        sections.append(_asic_rows(asics))
    if others:
        sections.append(_other_rows(others))
    return "\n\n".join(sections)


# -- connection ---------------------------------------------------------------------------------


def _channel(args: argparse.Namespace) -> grpc.Channel:
    # A watcher wants the newest readings, not what piled up while its terminal was paused.
    if args.address:
        return grpc.insecure_channel(args.address, options=FRESH_STREAM_OPTIONS)
    return grpc.insecure_channel(f"unix:{args.socket}", options=FRESH_STREAM_OPTIONS)


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    token = os.environ.get("RIGCTL_TOKEN", "")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CliError(f"cannot read token file {args.token_file}: {exc.strerror}") from None
    return [("authorization", f"Bearer {token}")] if token else []


def _call(args: argparse.Namespace, fn: Callable[[pb_grpc.RigAgentStub, list[Any]], Any]) -> Any:
    where = args.address or f"unix:{args.socket}"
    with _channel(args) as channel:
        stub = pb_grpc.RigAgentStub(channel)
        try:
            return fn(stub, _metadata(args))
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                raise CliError(f"cannot reach rigd at {where} (is it running?)") from None
            raise CliError(f"{code.name}: {exc.details()}") from None


def _print_json(msg: Message) -> None:
    print(MessageToJson(msg, preserving_proto_field_name=True, indent=2))


# -- commands ------------------------------------------------------------------------------------


def cmd_inventory(args: argparse.Namespace) -> int:
    inv = _call(args, lambda s, md: s.GetInventory(pb.GetInventoryRequest(), metadata=md,
                                                   timeout=args.timeout))
    _print_json(inv) if args.json else print(format_inventory(inv))
    return 0


def cmd_telemetry(args: argparse.Namespace) -> int:
    if not args.watch:
        resp = _call(args, lambda s, md: s.GetTelemetry(
            pb.GetTelemetryRequest(device_ids=args.device), metadata=md, timeout=args.timeout))
        _print_json(resp) if args.json else print(format_telemetry(resp.devices))
        return 0

    def stream(stub: pb_grpc.RigAgentStub, md: list[Any]) -> None:
        request = pb.StreamTelemetryRequest(device_ids=args.device, interval_ms=args.interval_ms)
        for n, msg in enumerate(stub.StreamTelemetry(request, metadata=md), start=1):
            if args.json:
                _print_json(msg)
            else:
                print(f"--- #{msg.sequence} (dropped {msg.dropped_count})")
                print(format_telemetry(msg.devices), flush=True)
            if args.count and n >= args.count:
                return

    _call(args, stream)
    return 0


def cmd_power_limit(args: argparse.Namespace) -> int:
    resp = _call(args, lambda s, md: s.SetPowerLimit(pb.SetPowerLimitRequest(
        device_id=args.device_id, power_limit_w=args.watts, fencing_token=args.fencing_token),
        metadata=md, timeout=args.timeout))
    _print_json(resp) if args.json else print(
        f"{args.device_id}: power limit {resp.power_limit_w:.1f} W")
    return 0


# -- workloads and operations ------------------------------------------------------------------

PHASE_NAMES = {v: k.removeprefix("SWITCH_PHASE_").lower() for k, v in pb.SwitchPhase.items()}
OP_STATES = {v: k.removeprefix("OPERATION_STATE_").lower() for k, v in pb.OperationState.items()}


def resolve_devices(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """Device ids from what an operator types: a full id, a GPU index, the short id a table
    shows, or a unique prefix. Unknown or ambiguous names are an error that suggests."""
    inventory = _call(args, lambda s, md: s.GetInventory(pb.GetInventoryRequest(), metadata=md,
                                                         timeout=args.timeout))
    ids = [d.id for d in inventory.devices]
    gpu_index = {d.attributes.get("index"): d.id for d in inventory.devices
                 if d.kind == pb.DEVICE_KIND_GPU and "index" in d.attributes}
    resolved = []
    for name in names:
        if name in ids:
            resolved.append(name)
            continue
        if name in gpu_index:
            resolved.append(gpu_index[name])
            continue
        matches = [i for i in ids if i.startswith(name) or i.split("/", 1)[-1].startswith(name)]
        if len(matches) == 1:
            resolved.append(matches[0])
            continue
        if matches:
            raise CliError(f"{name!r} matches {len(matches)} devices: "
                           f"{', '.join(matches[:4])}; give more of the id")
        close = difflib.get_close_matches(name, ids, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CliError(f"no device {name!r}{hint}; see `rigctl inventory`")
    return resolved


def format_operation(op: pb.Operation) -> str:
    lines = [f"operation {op.operation_id} ({op.kind}): {OP_STATES[op.state]}"
             + (f": {op.error}" if op.error else "")]
    rows = []
    for phase in op.phases:
        took = f"{phase.duration_ms} ms" if phase.HasField("duration_ms") else "…"
        rows.append([phase.device_id, PHASE_NAMES[phase.phase], took, phase.detail])
    if rows:
        lines.append(table(["DEVICE", "PHASE", "TOOK", "DETAIL"], rows))
    return "\n".join(lines)


def _watch_operation(args: argparse.Namespace, operation_id: str) -> pb.Operation:
    """Print each phase as it completes; return the final operation."""
    printed: set[tuple[str, int, int]] = set()
    final = pb.Operation()

    def follow(stub: pb_grpc.RigAgentStub, md: list[Any]) -> None:
        nonlocal final
        for message in stub.WatchOperation(pb.WatchOperationRequest(operation_id=operation_id),
                                           metadata=md):
            final = message.operation
            if args.json:
                _print_json(final)
                continue
            for i, phase in enumerate(final.phases):
                key = (phase.device_id, phase.phase, i)
                if phase.HasField("duration_ms") and key not in printed:
                    printed.add(key)
                    print(f"  {phase.device_id}  {PHASE_NAMES[phase.phase]:<12} "
                          f"{phase.duration_ms:>7} ms  {phase.detail}", flush=True)

    _call(args, follow)
    return final


def cmd_switch(args: argparse.Namespace) -> int:
    kind = {"idle": pb.WORKLOAD_KIND_IDLE, "hashing": pb.WORKLOAD_KIND_HASHING,
            "inference": pb.WORKLOAD_KIND_INFERENCE}[args.workload]
    workload = pb.Workload(kind=kind)
    if args.workload == "inference":
        workload.inference.CopyFrom(pb.InferenceSpec(profile=args.profile, model=args.model))
    elif args.workload == "hashing" and (args.pool or args.intensity):
        workload.hashing.CopyFrom(pb.HashingSpec(pool_urls=args.pool,
                                                 intensity=args.intensity or 0.0))
    devices = resolve_devices(args, args.devices)
    request = pb.SetWorkloadRequest(device_ids=devices, workload=workload,
                                    fencing_token=args.fencing_token,
                                    request_id=args.request_id)
    op = _call(args, lambda s, md: s.SetWorkload(request, metadata=md,
                                                 timeout=args.timeout)).operation
    if args.no_wait:
        _print_json(op) if args.json else print(op.operation_id)
        return 0
    if not args.json:
        print(f"operation {op.operation_id}: {', '.join(devices)} -> {args.workload}")
    final = _watch_operation(args, op.operation_id)
    if not args.json:
        print(f"{OP_STATES[final.state]}" + (f": {final.error}" if final.error else ""))
    return 0 if final.state == pb.OPERATION_STATE_SUCCEEDED else 1


def cmd_ops(args: argparse.Namespace) -> int:
    if args.action == "watch":
        final = _watch_operation(args, args.operation_id)
        if not args.json:
            print(format_operation(final))
        return 0
    if args.action == "show":
        op = _call(args, lambda s, md: s.GetOperation(pb.GetOperationRequest(
            operation_id=args.operation_id), metadata=md, timeout=args.timeout)).operation
        _print_json(op) if args.json else print(format_operation(op))
        return 0
    listed = _call(args, lambda s, md: s.ListOperations(pb.ListOperationsRequest(
        limit=args.limit, running_only=args.running), metadata=md, timeout=args.timeout))
    if args.json:
        _print_json(listed)
        return 0
    rows = [[op.operation_id, op.kind, OP_STATES[op.state], ",".join(op.device_ids)[:60],
             op.error[:60]] for op in listed.operations]
    print(table(["OPERATION", "KIND", "STATE", "DEVICES", "ERROR"], rows))
    return 0


def format_curtailment(inv: pb.GetInventoryResponse, power: pb.RigPower) -> str:
    rig = (f"rig {power.total_w:.0f} W (measured {power.measured_w:.0f} W + estimated "
           f"{power.estimated_w:.0f} W)")
    if power.unknown_device_ids:
        rig += f"; no power reading from {', '.join(power.unknown_device_ids)}"
    if not inv.HasField("curtailment"):
        return f"no curtailment in force; {rig}"
    c = inv.curtailment
    expires = c.expire_time.ToDatetime().strftime("%H:%M:%S UTC")
    lines = [f"curtailment {c.operation_id}: target {c.rig_power_target_w:.0f} W, {c.state}, "
             f"until {expires} ({c.reason or 'no reason'}; by {c.source})", rig]
    if c.HasField("below_target_after_s"):
        lines.append(f"below target {c.below_target_after_s:.1f} s after the command "
                     f"(from {c.rig_power_before_w:.0f} W)")
    if c.HasField("shortfall_w"):
        lines.append(f"target missed by {c.shortfall_w:.0f} W")
    return "\n".join(lines)


def cmd_curtail(args: argparse.Namespace) -> int:
    if args.target == "status":
        inv = _call(args, lambda s, md: s.GetInventory(pb.GetInventoryRequest(), metadata=md,
                                                       timeout=args.timeout))
        power = _call(args, lambda s, md: s.GetTelemetry(pb.GetTelemetryRequest(), metadata=md,
                                                         timeout=args.timeout)).rig_power
        if args.json:
            _print_json(inv.curtailment)
            _print_json(power)
        else:
            print(format_curtailment(inv, power))
        return 0
    if args.target == "cancel":
        op = _call(args, lambda s, md: s.CancelCurtailment(pb.CancelCurtailmentRequest(
            fencing_token=args.fencing_token), metadata=md, timeout=args.timeout)).operation
    else:
        try:
            watts = float(args.target)
        except ValueError:
            raise CliError(f"curtail: give WATTS, status or cancel; got {args.target!r}") from None
        op = _call(args, lambda s, md: s.Curtail(pb.CurtailRequest(
            rig_power_target_w=watts, deadline_s=args.deadline, expiry_s=args.expiry,
            reason=args.reason, fencing_token=args.fencing_token), metadata=md,
            timeout=args.timeout)).operation
    if args.no_wait:
        _print_json(op) if args.json else print(op.operation_id)
        return 0
    final = _watch_operation(args, op.operation_id)
    if not args.json:
        print(f"{OP_STATES[final.state]}" + (f": {final.error}" if final.error else ""))
    return 0 if final.state == pb.OPERATION_STATE_SUCCEEDED else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rigctl", description="Operate a rig through rigd.")
    parser.add_argument("--socket", default=os.environ.get("RIGD_SOCKET", default_socket_path()),
                        help="rigd's Unix socket (default: %(default)s; env RIGD_SOCKET)")
    parser.add_argument("--address", help="reach rigd over TCP instead, e.g. 127.0.0.1:50051")
    parser.add_argument("--token-file", help="bearer token file (or env RIGCTL_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--version", action="version", version=f"rigctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inventory", help="devices, capabilities and backends")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser("telemetry", help="latest readings (or a stream with --watch)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", action="append", default=[], help="device id (repeatable)")
    p.add_argument("--watch", action="store_true", help="stream readings")
    p.add_argument("--interval-ms", type=int, default=1000)
    p.add_argument("--count", type=int, default=0, help="with --watch: stop after N messages")
    p.set_defaults(func=cmd_telemetry)

    p = sub.add_parser("power-limit", help="set one device's power limit")
    p.add_argument("device_id")
    p.add_argument("watts", type=float)
    p.add_argument("--fencing-token", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_power_limit)

    p = sub.add_parser("switch", help="switch devices between idle, hashing and inference")
    p.add_argument("devices", nargs="+", metavar="DEVICE",
                   help="device id, GPU index, short id or unique prefix")
    p.add_argument("workload", choices=("idle", "hashing", "inference"))
    p.add_argument("--profile", default="builtin", help="inference runtime profile")
    p.add_argument("--model", default="", help="inference model (default: the profile's)")
    p.add_argument("--pool", action="append", default=[],
                   help="hashing pool URL (default: the configured pool)")
    p.add_argument("--intensity", type=float, help="hashing intensity in (0, 1]")
    p.add_argument("--request-id", default="", help="idempotency key for retries")
    p.add_argument("--fencing-token", type=int, default=0)
    p.add_argument("--no-wait", action="store_true", help="print the operation id and return")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_switch)

    p = sub.add_parser("ops", help="operations: list, show ID, watch ID")
    p.add_argument("action", nargs="?", choices=("list", "show", "watch"), default="list")
    p.add_argument("operation_id", nargs="?", default="")
    p.add_argument("--running", action="store_true", help="only operations still running")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ops)

    p = sub.add_parser("curtail", help="curtail the rig: WATTS, status or cancel")
    p.add_argument("target", metavar="WATTS|status|cancel",
                   help="rig power target in watts, or status, or cancel")
    p.add_argument("--deadline", type=int, default=60, metavar="S",
                   help="seconds allowed to get below target (default 60)")
    p.add_argument("--expiry", type=int, default=3600, metavar="S",
                   help="seconds until it lifts by itself (default 3600)")
    p.add_argument("--reason", default="", help="free text for the audit log")
    p.add_argument("--fencing-token", type=int, default=0)
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curtail)

    try:
        from agent.fpga_cli import add_fpga_parser
    except ImportError:  # pragma: no cover - the FPGA tools are part of the same package
        pass
    else:
        add_fpga_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except CliError as exc:
        print(f"rigctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
