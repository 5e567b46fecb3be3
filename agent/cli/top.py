"""rigctl top: the rig at a glance, refreshed in place, like nvitop.

Devices with their workload and health, power and hashrate; the rig's power against a
curtailment's target with a short history; operations in flight with their phase. On a terminal
it redraws in place (rich's Live: a renderable and a refresh loop, nothing more is needed, so
not a whole TUI framework like textual); anywhere else it prints one plain frame per refresh.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import sys
import time
from typing import Any

from agent.cli.connect import Rig
from agent.cli.devices import power_text, status_text, workload_text
from agent.cli.output import HEALTH, KIND, NA, OP_STATE, PHASE, opt, short_id, si, watts
from rigapi import pb

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 60


def sparkline(values: list[float], ceiling: float) -> str:
    if not values or ceiling <= 0:
        return ""
    return "".join(SPARK[min(len(SPARK) - 1, int(v / ceiling * (len(SPARK) - 1)))]
                   for v in values)


class Frame:
    """What one refresh shows, from the latest stream message and the last polls."""

    def __init__(self) -> None:
        self.readings: list[pb.DeviceTelemetry] = []
        self.power: pb.RigPower | None = None
        self.history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.inventory: pb.GetInventoryResponse | None = None
        self.running: list[pb.Operation] = []

    def rows(self) -> list[list[str]]:
        rows = []
        for t in self.readings:
            temp = opt(t, "temp_c", lambda v: f"{v:.0f}C")
            rows.append([short_id(t.device_id)[:22], KIND[t.kind], workload_text(t), power_text(t),
                         opt(t, "hashrate_hs", lambda v: si(v, "H/s")), temp,
                         HEALTH[t.health.state] if not t.error else status_text(t)])
        return rows

    def header(self) -> str:
        rig = self.inventory.rig_id if self.inventory else "?"
        now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
        text = f"rig {rig}  {now}"
        if self.power is not None:
            text += f"   power {watts(self.power.total_w)}"
            c = self.inventory.curtailment if self.inventory is not None \
                and self.inventory.HasField("curtailment") else None
            if c is not None:
                text += (f" / target {watts(c.rig_power_target_w)} ({c.state}, "
                         f"{c.reason or c.source})")
        return text

    def spark(self) -> str:
        c = self.inventory.curtailment if self.inventory is not None \
            and self.inventory.HasField("curtailment") else None
        ceiling = max([*self.history, c.rig_power_target_w if c else 0.0], default=0.0)
        return sparkline(list(self.history), ceiling)

    def operations(self) -> list[list[str]]:
        rows = []
        for op in self.running:
            last = op.phases[-1] if op.phases else None
            rows.append([op.operation_id, op.kind, OP_STATE[op.state],
                         (last.device_id.split("/", 1)[-1][:16] if last and last.device_id
                          else "rig"),
                         PHASE[last.phase] if last else NA, (last.detail if last else "")[:50]])
        return rows


def render_rich(frame: Frame) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    devices = Table(expand=True, box=None, header_style="bold")
    for column in ("DEVICE", "KIND", "WORKLOAD", "POWER", "HASHRATE", "TEMP", "HEALTH"):
        devices.add_column(column, no_wrap=True)
    for row in frame.rows():
        style = "" if row[-1] in ("healthy", "ok") else "red"
        devices.add_row(*row, style=style)
    parts: list[Any] = [Text(frame.header(), style="bold"), Text(frame.spark(), style="cyan"),
                        devices]
    ops = frame.operations()
    if ops:
        table = Table(title="operations in flight", box=None, header_style="bold")
        for column in ("OPERATION", "KIND", "STATE", "DEVICE", "PHASE", "DETAIL"):
            table.add_column(column, no_wrap=True)
        for row in ops:
            table.add_row(*row)
        parts.append(table)
    parts.append(Text("Ctrl-C to quit", style="dim"))
    return Group(*parts)


def render_plain(frame: Frame) -> str:
    from agent.cli.output import table

    lines = [frame.header(), *([frame.spark()] if frame.spark() else []),
             table(["DEVICE", "KIND", "WORKLOAD", "POWER", "HASHRATE", "TEMP", "HEALTH"],
                   frame.rows())]
    ops = frame.operations()
    if ops:
        lines += ["operations in flight:",
                  table(["OPERATION", "KIND", "STATE", "DEVICE", "PHASE", "DETAIL"], ops)]
    return "\n".join(lines)


def cmd_top(rig: Rig, args: argparse.Namespace) -> int:
    frame = Frame()
    tty = sys.stdout.isatty() and not args.plain
    live: Any = None
    if tty:
        from rich.live import Live

        live = Live(auto_refresh=False, screen=True)
        live.start()
    polled = 0.0

    def follow(stub: Any, md: list[tuple[str, str]]) -> None:
        nonlocal polled
        request = pb.StreamTelemetryRequest(interval_ms=args.interval_ms)
        for n, msg in enumerate(stub.StreamTelemetry(request, metadata=md), start=1):
            frame.readings = list(msg.devices)
            if msg.HasField("rig_power"):
                frame.power = msg.rig_power
                frame.history.append(msg.rig_power.total_w)
            if time.monotonic() - polled >= 2.0:  # the slower facts, every couple of seconds
                frame.inventory = stub.GetInventory(pb.GetInventoryRequest(), metadata=md,
                                                    timeout=args.timeout)
                frame.running = list(stub.ListOperations(pb.ListOperationsRequest(
                    running_only=True, limit=10), metadata=md, timeout=args.timeout).operations)
                polled = time.monotonic()
            if live is not None:
                live.update(render_rich(frame), refresh=True)
            else:
                print(render_plain(frame) + "\n", flush=True)
            if args.count and n >= args.count:
                return

    try:
        rig.call(follow)
    finally:
        if live is not None:
            live.stop()
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("top", parents=[common], help="a live view of the rig (like nvitop)",
                       description="Devices, workloads, power against a curtailment target "
                                   "and operations in flight, refreshed in place; plain "
                                   "frames when the output is not a terminal.",
                       epilog="examples:\n  rigctl top\n  rigctl top --count 1 --plain > rig.txt",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval-ms", type=int, default=1000, metavar="MS",
                   help="refresh period (default: %(default)s)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="stop after N refreshes (default: until Ctrl-C)")
    p.add_argument("--plain", action="store_true", help="plain frames even on a terminal")
    p.set_defaults(func=cmd_top)
