"""rigctl inventory, telemetry, power-limit and the device actions (sleep, wake, restart,
pool-switch). nvidia-smi's habits where they fit: `-i INDEX`, every device unless told,
`power-limit ... default`, and `--query FIELDS --format csv` for scripts."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.cli.connect import CliError, Rig
from agent.cli.exitcodes import EXIT_FAILED, EXIT_USAGE
from agent.cli.output import (
    NA,
    clear_screen,
    emit_json,
    inventory_message,
    mib,
    opt,
    short_id,
    si,
    stream_message,
    table,
    telemetry_message,
    to_dict,
    watts,
    word,
)
from client.model import Inventory, PowerLimit
from hal.device import AsicTelemetry, DeviceKind, GpuTelemetry, HealthState, PowerSource
from rigapi import convert, pb
from rigapi.model import Reading, RigPower, WorkloadKind

if TYPE_CHECKING:
    from client.blocking import BlockingRig

ACTIONS = {"sleep": "sleep", "wake": "wake", "restart": "restart", "pool-switch": "pool_switch"}


def format_inventory(inv: Inventory, wide: bool = False) -> str:
    """The devices table; `wide` adds each device's capabilities (a GPU has six: 150 columns)."""
    rows = []
    for d in inv.devices:
        health = word(d.health.state) + (f": {d.health.reason}" if d.health.reason else "")
        info = d.info
        name = info.name or NA
        if info.model and info.model != info.name:
            name = f"{name} ({info.model})"
        workload = word(d.workload.kind) if d.workload is not None else "idle"
        if d.kind == DeviceKind.ASIC and workload == "idle":  # a miner runs its own
            workload = "firmware"
        rows.append([short_id(d.id), word(d.kind), name[:34] + ("*" if info.simulated else ""),
                     workload, health[:40]] + ([",".join(sorted(d.capabilities))] if wide
                                               else []))
    out = [f"rig {inv.rig_id} (rigd {inv.agent_version}, {len(inv.devices)} devices; "
           f"* = simulated)", ""]
    headers = ["DEVICE", "KIND", "NAME", "WORKLOAD", "HEALTH"] + (["CAPABILITIES"] if wide else [])
    out.append(table(headers, rows))
    out += ["", table(["BACKEND", "AVAILABLE", "DEVICES", "REASON"], [
        [b.name, "yes" if b.available else "no", str(b.device_count), b.reason or ""]
        for b in inv.backends
    ])]
    return "\n".join(out)


def status_text(r: Reading) -> str:
    if r.error:
        return r.error[:50]
    health = r.telemetry.health
    if health.state != HealthState.HEALTHY:
        return (word(health.state) + (f": {health.reason}" if health.reason else ""))[:50]
    return "ok"


def workload_text(r: Reading) -> str:
    w = r.workload
    if w is None:
        asic = r.telemetry.asic
        if asic is not None and asic.is_mining is not None:  # a miner hashes by itself
            return "hashing" if asic.is_mining else "not hashing"
        return "idle"
    text = f"{word(w.kind)} {word(w.state)}"
    if w.kind == WorkloadKind.HASHING and w.intensity is not None and w.intensity < 1:
        text += f" {w.intensity:.0%}"
    return text


def power_text(r: Reading) -> str:
    t = r.telemetry
    if t.power_w is None:
        return NA
    text = f"{t.power_w:.0f}W" + ("~" if t.power_source == PowerSource.ESTIMATED else "")
    if t.power_limit_w is not None:
        text += f"/{t.power_limit_w:.0f}W"
    return text


def hashrate_text(r: Reading) -> str:
    return opt(r.telemetry.hashrate_hs, lambda v: si(v, "H/s"))


def _gpu_rows(readings: list[Reading], wide: bool) -> str:
    rows = []
    for r in readings:
        t, g = r.telemetry, r.telemetry.gpu or GpuTelemetry()
        mem = (f"{mib(g.mem_used_bytes)}/{mib(g.mem_total_bytes)}"
               if g.mem_used_bytes is not None and g.mem_total_bytes is not None else NA)
        row = [opt(g.index, str), short_id(t.device_id), opt(t.temp_c, lambda v: f"{v:.0f}C"),
               power_text(r), mem, opt(g.utilization_gpu_pct, lambda v: f"{v:.0f}%"),
               workload_text(r), hashrate_text(r), status_text(r)]
        if wide:
            row[-1:-1] = [opt(g.performance_state, lambda v: f"P{v}"),
                          opt(g.clock_sm_mhz, lambda v: f"{v}MHz"), str(len(g.processes)),
                          opt(g.last_xid, str)]
        rows.append(row)
    headers = ["GPU", "ID", "TEMP", "POWER/CAP", "MEMORY", "UTIL", "WORKLOAD", "HASHRATE",
               "STATUS"]
    if wide:
        headers[-1:-1] = ["PERF", "SM CLK", "PROCS", "XID"]
    return table(headers, rows)


def _asic_rows(readings: list[Reading], wide: bool) -> str:
    rows = []
    for r in readings:
        a = r.telemetry.asic or AsicTelemetry()
        temps = [b.temp_chip_c for b in a.boards if b.temp_chip_c is not None]
        row = [short_id(r.device_id), a.firmware_family or NA, hashrate_text(r), power_text(r),
               f"{max(temps):.0f}C" if temps else NA,
               opt(a.is_mining, lambda v: "yes" if v else "no"), status_text(r)]
        if wide:
            row[-1:-1] = [opt(a.expected_hashrate_hs, lambda v: si(v, "H/s")),
                          "/".join(str(f) for f in a.fans_rpm) or NA]
        rows.append(row)
    headers = ["MINER", "FIRMWARE", "HASHRATE", "POWER/LIMIT", "CHIP", "MINING", "STATUS"]
    if wide:
        headers[-1:-1] = ["EXPECTED", "FANS RPM"]
    return table(headers, rows)


def _other_rows(readings: list[Reading]) -> str:
    rows = []
    for r in readings:
        w = r.workload
        shares = f"{w.shares_accepted}/{w.shares_rejected or 0}" \
            if w is not None and w.shares_accepted is not None else NA
        detail = ""
        h = r.telemetry.host
        if h is not None:
            detail = f"cpu {h.cpu_util_pct or 0:.0f}% mem {mib(h.mem_used_bytes or 0)}"
        rows.append([short_id(r.device_id)[:24], word(r.telemetry.kind), power_text(r),
                     workload_text(r), hashrate_text(r), shares,
                     detail if status_text(r) == "ok" else status_text(r)])
    return table(["DEVICE", "KIND", "POWER", "WORKLOAD", "HASHRATE", "SHARES A/R", "STATUS"],
                 rows)


def format_rig_power(power: RigPower) -> str:
    text = (f"rig power {watts(power.total_w)} (measured {watts(power.measured_w)}, "
            f"estimated {watts(power.estimated_w)}, ~ marks estimates)")
    if power.unknown_device_ids:
        text += f"; no power from {', '.join(short_id(d) for d in power.unknown_device_ids)}"
    return text


def format_telemetry(readings: Sequence[Reading], power: RigPower | None = None,
                     wide: bool = False) -> str:
    kinds = [(r, r.telemetry.kind) for r in readings]
    gpus = [r for r, k in kinds if k == DeviceKind.GPU]
    asics = [r for r, k in kinds if k == DeviceKind.ASIC]
    others = [r for r, k in kinds if k not in (DeviceKind.GPU, DeviceKind.ASIC)]
    sections = [format_rig_power(power)] if power is not None else []
    if gpus:
        sections.append(_gpu_rows(gpus, wide))
    if asics:
        sections.append(_asic_rows(asics, wide))
    if others:
        sections.append(_other_rows(others))
    return "\n\n".join(sections)


def _interval_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of milliseconds: {text!r}") from None
    if not 100 <= value <= 3_600_000:
        raise argparse.ArgumentTypeError("must be within 100 .. 3600000 ms")
    return value


def _query_or_help(text: str) -> list[str]:
    return ["help"] if text == "help" else _query(text)


def _positive_watts(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of watts: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of watts")
    return value


# ---- --query FIELDS --format csv ------------------------------------------------------------

CSV_DEFAULT_FIELDS = ("time", "device_id", "kind", "power_w", "temp_c", "hashrate_hs",
                      "workload.kind", "workload.state")


def query_fields() -> list[str]:
    """Every field --query takes: DeviceTelemetry's scalar fields, dotted into sub-records."""
    def walk(descriptor: Any, prefix: str) -> list[str]:
        names = []
        for field in descriptor.fields:
            if field.message_type is not None and not field.is_repeated \
                    and field.message_type.full_name != "google.protobuf.Timestamp":
                names += walk(field.message_type, f"{prefix}{field.name}.")
            else:
                names.append(prefix + field.name)
        return names
    return walk(pb.DeviceTelemetry.DESCRIPTOR, "")


def _query(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",") if f.strip()]
    known = query_fields()
    for name in fields:
        if name not in known:
            import difflib  # only to suggest: not on every command's start-up

            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"no field {name!r}{hint}; `rigctl telemetry --query help` lists them")
    if not fields:
        raise argparse.ArgumentTypeError("name at least one field")
    return fields


def _cell(value: Any) -> str:
    """A CSV cell: a missing reading is empty, lists and records compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _pick(reading: dict[str, Any], dotted: str) -> Any:
    value: Any = reading
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class CsvOut:
    def __init__(self, fields: Sequence[str], header: bool) -> None:
        self.fields = list(fields)
        self.header = header
        self.writer = csv.writer(sys.stdout, lineterminator="\n")

    def rows(self, readings: Sequence[Reading]) -> None:
        if self.header:
            self.writer.writerow(self.fields)
            self.header = False
        for reading in readings:
            data = to_dict(convert.reading(reading))
            self.writer.writerow([_cell(_pick(data, f)) for f in self.fields])
        sys.stdout.flush()


# ---- commands --------------------------------------------------------------------------------


def cmd_inventory(rig: Rig, args: argparse.Namespace) -> int:
    inv = rig.inventory()
    emit_json("inventory", inventory_message(inv)) if args.json else \
        print(format_inventory(inv, args.wide))
    return 0


def cmd_telemetry(rig: Rig, args: argparse.Namespace) -> int:
    if args.query == ["help"]:
        print("\n".join(query_fields()))
        return 0
    csv_out = None
    if args.format:
        csv_out = CsvOut(args.query or CSV_DEFAULT_FIELDS, header=args.format == "csv")
    elif args.query:
        raise CliError("--query goes with --format csv (or csv,noheader)", EXIT_USAGE)
    ids = rig.resolve(args.device) if args.device else []
    if not args.watch:
        snapshot = rig.call(lambda c: c.telemetry(ids))
        if csv_out is not None:
            csv_out.rows(snapshot.readings)
        elif args.json:
            emit_json("telemetry", telemetry_message(snapshot))
        else:
            print(format_telemetry(snapshot.readings, snapshot.rig_power, args.wide))
        return 0

    def follow() -> None:
        # The library's stream: it survives a rigd restart (the gap said on stderr).
        stream = rig.client.stream_telemetry(ids, interval_s=args.interval_ms / 1000)
        for n, update in enumerate(stream, start=1):
            if update.gap is not None:
                print(f"rigctl: the stream broke ({update.gap.error}); blind for "
                      f"{update.gap.blind_s:.1f} s", file=sys.stderr, flush=True)
            if csv_out is not None:
                csv_out.rows(update.readings)
            elif args.json:
                emit_json("telemetry", stream_message(update), stream=True)
            else:
                clear_screen()
                now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                print(f"rigctl telemetry  {now}  #{update.sequence}"
                      + (f"  ({update.dropped_count} dropped: reader too slow)"
                         if update.dropped_count else ""))
                print(format_telemetry(update.readings, update.rig_power, args.wide),
                      flush=True)
                print()
            if args.count and n >= args.count:
                return

    rig.call(lambda c: follow())
    return 0


def _limit_targets(rig: Rig, names: Sequence[str]) -> list[str]:
    """The devices named; `all`: every device whose power limit can be set."""
    if list(names) == ["all"]:
        ids = [d.id for d in rig.inventory().devices if "set_power_limit" in d.capabilities]
        if not ids:
            raise CliError("no device on this rig has a settable power limit")
        return ids
    return rig.resolve(names)


def _default_limits(rig: Rig, ids: list[str]) -> dict[str, float]:
    """Each device's default limit, as it reports it (NVML's default power management limit)."""
    snapshot = rig.call(lambda c: c.telemetry(ids))
    defaults = {r.device_id: r.telemetry.gpu.power_limit_default_w for r in snapshot.readings
                if r.telemetry.gpu is not None
                and r.telemetry.gpu.power_limit_default_w is not None}
    missing = [i for i in ids if i not in defaults]
    if missing:
        raise CliError(f"no default power limit known for {', '.join(missing)} (a GPU reports "
                       "its own; give watts for the others)")
    return defaults


def cmd_power_limit(rig: Rig, args: argparse.Namespace) -> int:
    *names, limit = args.target
    if not names:
        raise CliError("give the device(s), then WATTS or `default`", EXIT_USAGE)
    watts_each = None
    if limit != "default":
        try:
            watts_each = _positive_watts(limit)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"WATTS {limit!r}: {exc} (or `default`)", EXIT_USAGE) from None
    ids = _limit_targets(rig, names)
    wanted = dict.fromkeys(ids, watts_each) if watts_each is not None else \
        _default_limits(rig, ids)

    failed = False
    results = []
    for device_id, target_w in wanted.items():
        def set_limit(c: BlockingRig, d: str = device_id, w: float = target_w) -> PowerLimit:
            return c.set_power_limit(d, w, fencing_token=args.fencing_token)

        try:
            reply = rig.call(set_limit)
        except CliError as exc:
            if len(wanted) == 1:
                raise
            failed = True  # the others are still set: one refusal does not stop a fleet
            results.append({"device_id": device_id, "requested_w": target_w,
                            "error": str(exc)})
            if not args.json:
                print(f"rigctl: {device_id}: {exc}", file=sys.stderr)
            continue
        message = pb.SetPowerLimitResponse(power_limit_w=reply.power_limit_w,
                                           requested_w=reply.requested_w, detail=reply.detail)
        results.append({"device_id": device_id, **to_dict(message), "error": ""})
        if not args.json:
            text = (f"{device_id}: requested {reply.requested_w:g} W, applied "
                    f"{reply.power_limit_w:g} W")
            print(text + (f" ({reply.detail})" if reply.detail else ""))
    if args.json:
        emit_json("power_limit", {"results": results})
    return EXIT_FAILED if failed else 0


def cmd_action(rig: Rig, args: argparse.Namespace) -> int:
    ids = rig.resolve(args.devices)
    failed = 0
    for device_id in ids:
        def act(c: BlockingRig, d: str = device_id) -> str:
            return c.device_action(d, ACTIONS[args.command], pool_index=getattr(args, "pool", 0),
                                   fencing_token=args.fencing_token)

        try:
            detail = rig.call(act)
        except CliError as exc:
            print(f"{device_id}: {exc}")
            failed += 1
            continue
        if args.json:
            emit_json("device_action", {"device_id": device_id, "action": args.command,
                                        "detail": detail}, stream=True)
        else:
            print(f"{device_id}: {args.command}: {detail or 'done'}")
    return 1 if failed else 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("inventory", parents=[common], help="devices, capabilities, backends",
                       description="Every device rigd found, what it can do, and the backends "
                                   "that are unavailable and why.",
                       epilog="examples:\n  rigctl inventory\n  rigctl inventory --wide\n"
                              "  rigctl inventory --json | jq -r '.devices[].id'\n"
                              "  rigctl --address rig12:50051 --ca ca.pem --cert ops.pem "
                              "--key ops.key inventory",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wide", action="store_true",
                   help="add each device's capabilities to the table (--json always has them)")
    p.set_defaults(func=cmd_inventory)

    p = sub.add_parser(
        "telemetry", parents=[common], help="latest readings, or a live view with --watch",
        description="Readings of every device (or those named), and the rig's power.",
        epilog="examples:\n  rigctl telemetry\n  rigctl telemetry -d 0 -d 127.0.0.1:4028\n"
               "  rigctl telemetry --watch --interval-ms 500\n"
               "  rigctl telemetry --watch --json | jq .rig_power.total_w",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "-i", "--device", action="append", default=[], metavar="DEVICE",
                   help="a device (id, GPU index, short id or unique prefix); repeatable; "
                        "every device when left out")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval-ms", type=_interval_ms, default=1000, metavar="MS",
                   help="with --watch: milliseconds between readings, 100 .. 3600000 "
                        "(default: %(default)s)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="with --watch: stop after N readings (default: until Ctrl-C)")
    p.add_argument("--wide", action="store_true", help="every column (P-state, clocks, fans)")
    p.add_argument("--query", type=_query_or_help, default=[], metavar="FIELDS",
                   help="with --format: comma-separated fields, dotted into sub-records "
                        "(gpu.clock_sm_mhz); `--query help` lists them (default: "
                        f"{','.join(CSV_DEFAULT_FIELDS)})")
    p.add_argument("--format", choices=("csv", "csv,noheader"), default="",
                   help="one CSV row per device (per reading with --watch); a missing "
                        "reading is an empty cell")
    p.set_defaults(func=cmd_telemetry)

    p = sub.add_parser(
        "power-limit", parents=[common], help="set devices' power limits (watts, or default)",
        description="Set power limits; each answer is what the device applied (a miner's "
                    "firmware may pick its nearest profile; a curtailment may hold it lower "
                    "until it ends).",
        epilog="examples:\n  rigctl power-limit 0 450\n  rigctl power-limit 0 1 2 300\n"
               "  rigctl power-limit all 350          # every device with a settable limit\n"
               "  rigctl power-limit 0 default        # the GPU's own default limit",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="+", metavar="DEVICE... WATTS",
                   help="devices (id, GPU index, short id, unique prefix, or `all`), then the "
                        "limit in watts (W), e.g. 450, or `default`")
    _fencing(p)
    p.set_defaults(func=cmd_power_limit)

    for name, what in (("sleep", "stop hashing, draw standby power (miners)"),
                       ("wake", "hash again after a sleep (miners)"),
                       ("restart", "restart the miner's firmware"),
                       ("pool-switch", "mine for the miner's pool number N")):
        example = "rigctl pool-switch 10.0.0.5:4028 --pool 1" if name == "pool-switch" else \
            f"rigctl {name} 10.0.0.5:4028 10.0.0.6:4028"
        p = sub.add_parser(name, parents=[common], help=what, description=what.capitalize(),
                           epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("devices", nargs="+", metavar="DEVICE",
                       help="miners (id, short id or unique prefix, as `rigctl inventory` "
                            "shows them)")
        if name == "pool-switch":
            p.add_argument("--pool", type=int, required=True, metavar="N",
                           help="the pool's index in the miner's own list")
        _fencing(p)
        p.set_defaults(func=cmd_action)


def _fencing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fencing-token", type=int, default=0, metavar="N",
                   help="the token of the lease you hold (rigctl lease acquire); 0 = no lease")
