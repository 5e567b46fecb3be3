"""Avalon 1566 (cgminer 4.11.1, Canaan): reads from the capture, `ascset` for control.

`ascset 0,softoff[,...]` sleeps and `0,softon[,...]` wakes (after the warm-up); both answer
with the captured Avalon replies (STATUS "I"). `0,worklevel,set,N` is stored and answered with
the captured "ASC 0 set OK". The `MM ID0` text blob in `stats`/`estats` is rewritten at serve
time, WALLPOWER and the last PS field follow the power state, SYSTEMSTATU reads "In Idle"
while asleep. Every hashrate figure (GHSspd, GHSavg, each board's MGHS, the `devs` and
`summary` windows) is served from one RunningRate, as the firmware derives them from one
measurement. `summary` (not in the Avalon capture) is cgminer 4.11.1's, from the live capture,
with this miner's figures.
"""

from __future__ import annotations

import json
import re

from hal.sim.asic.server import (
    FirmwareServer,
    MinerState,
    RunningRate,
    load_capture,
    rewrite_blob,
    rewrite_blob_list,
    rewrite_numbers,
)

CAPTURES = "avalon_1566_cgminer4.11.1"
ASCSET = "avalon_asicrs"
GH, MH = 1e9, 1e6
_BLOB_TOTALS = ("GHSspd", "GHSavg")  # GH/s, whole module
_MHS_WINDOWS = ("MHS av", "MHS 5s", "MHS 30s", "MHS 1m", "MHS 5m", "MHS 15m")


class AvalonSim(FirmwareServer):
    family = "avalon"
    multi_allowed = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0) -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        self.state = MinerState(nominal_power_w=3731.0, idle_power_w=146.0, warmup_s=warmup_s)
        self.work_level = 0
        blob = json.loads(load_capture(f"{CAPTURES}/rpc_estats.json"))["STATS"][0]["MM ID0"]
        speed = re.search(r"GHSspd\[([\d.]+)\]", blob)
        boards = re.search(r"MGHS\[([^\]]*)\]", blob)
        elapsed = re.search(r"Elapsed\[(\d+)\]", blob)
        assert speed is not None and boards is not None and elapsed is not None
        self.elapsed_s = int(elapsed.group(1))
        self.rate = RunningRate.of_boards(float(speed.group(1)) * GH,
                                          [float(v) for v in boards.group(1).split()])

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if command == "ascset":
            return self._ascset(parameter or "")
        if command == "devdetails":  # an Avalon's cgminer 4.11.1 (asic-rs capture)
            return load_capture(f"{ASCSET}/devdetails.json")
        names = {"version": "rpc_version.json", "stats": "rpc_stats.json",
                 "estats": "rpc_estats.json", "devs": "rpc_devs.json", "pools": "rpc_pools.json",
                 "summary": "../cgminer_4.11.1_live_nodevice/summary.raw"}
        if command not in names:
            return None
        factor, power, asleep = self.state.hash_factor, self.state.power_w(), self.state.sleeping
        return self.rendered((command, factor, power, asleep),
                             lambda: self._render(names[command], command, factor))

    def _render(self, name: str, command: str, factor: float) -> str:
        text = load_capture(f"{CAPTURES}/{name}").decode().rstrip("\x00 ")
        if command in ("stats", "estats"):
            text = rewrite_blob(text, _BLOB_TOTALS, lambda _v: self.rate.total(factor, GH))
            text = rewrite_blob_list(text, "MGHS", self.rate.boards(factor, GH))
            power = self.state.power_w()
            text = rewrite_blob(text, ("WALLPOWER",), lambda _v: power)
            text = re.sub(r"(PS\[[^\]]*?)(\d+)\]", lambda m: f"{m.group(1)}{round(power)}]", text)
            if self.state.sleeping:
                text = text.replace("Work: In Work", "Work: In Idle")
        elif command in ("devs", "summary"):
            text = rewrite_numbers(text, _MHS_WINDOWS, lambda _v: self.rate.total(factor, MH))
        if command == "summary":
            text = rewrite_numbers(text, ("Elapsed",), lambda _v: self.elapsed_s)
        return text

    def _ascset(self, parameter: str) -> bytes:
        args = parameter.split(",")
        action = args[1] if len(args) > 1 else ""
        if args[0] != "0":
            return json.dumps({"STATUS": [{"STATUS": "E", "Code": 120, "Msg":
                                           f"Invalid ASC id {args[0]}"}], "id": 1}).encode()
        ignored = self.ignores_commands  # Fault.IGNORE: the firmware's answer, nothing done
        if action == "softoff":
            if not ignored:
                self.state.sleep()
            return load_capture(f"{ASCSET}/ascset_softoff.json")
        if action == "softon":
            if not ignored:
                self.state.wake()
            return load_capture(f"{ASCSET}/ascset_softon.json")
        if action == "worklevel" and len(args) >= 4 and args[2] == "set":
            if not ignored:
                self.work_level = int(args[3])
            return load_capture(f"{ASCSET}/ascset_workmode.json")
        if action == "reboot":
            self.state.sleeping = True
            self.state.wake()
            return load_capture(f"{ASCSET}/ascset_workmode.json")
        return load_capture(f"{ASCSET}/ascset_help.json")
