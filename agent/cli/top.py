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
from agent.cli.devices import hashrate_text, power_text, status_text, workload_text
from agent.cli.output import NA, opt, short_id, watts, word
from client.model import Inventory
from rigapi.model import Operation, Reading, RigPower

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
        self.readings: list[Reading] = []
        self.power: RigPower | None = None
        self.history: collections.deque[float] = collections.deque(maxlen=HISTORY)
        self.inventory: Inventory | None = None
        self.running: list[Operation] = []

    def rows(self) -> list[list[str]]:
        rows = []
        for r in self.readings:
            t = r.telemetry
            temp = opt(t.temp_c, lambda v: f"{v:.0f}C")
            rows.append([short_id(t.device_id)[:22], word(t.kind), workload_text(r),
                         power_text(r), hashrate_text(r), temp,
                         word(t.health.state) if not r.error else status_text(r)])
        return rows

    def header(self) -> str:
        rig = self.inventory.rig_id if self.inventory else "?"
        now = dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC")
        text = f"rig {rig}  {now}"
        if self.power is not None:
            text += f"   power {watts(self.power.total_w)}"
            c = self.inventory.curtailment if self.inventory is not None else None
            if c is not None:
                text += (f" / target {watts(c.rig_power_target_w)} ({c.state}, "
                         f"{c.reason or c.source})")
        return text

    def spark(self) -> str:
        c = self.inventory.curtailment if self.inventory is not None else None
        ceiling = max([*self.history, c.rig_power_target_w if c else 0.0], default=0.0)
        return sparkline(list(self.history), ceiling)

    def operations(self) -> list[list[str]]:
        rows = []
        for op in self.running:
            last = op.phases[-1] if op.phases else None
            rows.append([op.operation_id, op.kind, word(op.state),
                         (last.device_id.split("/", 1)[-1][:16] if last and last.device_id
                          else "rig"),
                         word(last.phase) if last else NA, (last.detail if last else "")[:50]])
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

    def follow() -> None:
        nonlocal polled
        client = rig.client
        stream = client.stream_telemetry(interval_s=args.interval_ms / 1000)
        for n, update in enumerate(stream, start=1):
            frame.readings = list(update.readings)
            if update.rig_power is not None:
                frame.power = update.rig_power
                frame.history.append(update.rig_power.total_w)
            if time.monotonic() - polled >= 2.0:  # the slower facts, every couple of seconds
                frame.inventory = client.inventory()
                frame.running = client.operations(running_only=True, limit=10)
                polled = time.monotonic()
            if live is not None:
                live.update(render_rich(frame), refresh=True)
            else:
                print(render_plain(frame) + "\n", flush=True)
            if args.count and n >= args.count:
                return

    try:
        rig.call(lambda c: follow())
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
