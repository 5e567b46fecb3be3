"""rigctl: the operator's CLI for a running rigd (and local FPGA card tools).

Human tables by default, `--json` for scripts. Errors are one line and a non-zero exit:
1 when rigd refused or failed the call, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message

from agent import __version__
from agent.api import pb, pb_grpc
from agent.config import default_socket_path

KIND_NAMES = {v: k.removeprefix("DEVICE_KIND_").lower() for k, v in pb.DeviceKind.items()}
HEALTH_NAMES = {v: k.removeprefix("HEALTH_STATE_").lower() for k, v in pb.HealthState.items()}
WORKLOAD_NAMES = {v: k.removeprefix("WORKLOAD_KIND_").lower() for k, v in pb.WorkloadKind.items()}
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
            (f"{WORKLOAD_NAMES[w.kind]} {w.state}".strip() if t.HasField("workload") else "idle"),
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
    if args.address:
        return grpc.insecure_channel(args.address)
    return grpc.insecure_channel(f"unix:{args.socket}")


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

    try:
        from agent.fpga_cli import add_fpga_parser, run_fpga
    except ImportError:  # pragma: no cover - the FPGA tools are part of the same package
        pass
    else:
        add_fpga_parser(sub).set_defaults(func=run_fpga)
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
