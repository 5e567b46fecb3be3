"""Avalon 1566 (cgminer 4.11.1, Canaan): reads from the capture, `ascset` for control.

`ascset 0,softoff[,...]` sleeps and `0,softon[,...]` wakes (after the warm-up); both answer
with the captured Avalon replies (STATUS "I"). `0,worklevel,set,N` is stored and answered with
the captured "ASC 0 set OK". The `MM ID0` text blob in `stats`/`estats` is rewritten at serve
time: GHSspd and per-board MGHS scale with the state, WALLPOWER follows it, SYSTEMSTATU reads
"In Idle" while asleep.
"""

from __future__ import annotations

import json

from hal.sim.asic.server import FirmwareServer, MinerState, load_capture, rewrite_blob

CAPTURES = "avalon_1566_cgminer4.11.1"
ASCSET = "avalon_asicrs"


class AvalonSim(FirmwareServer):
    family = "avalon"
    multi_allowed = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0) -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        self.state = MinerState(nominal_power_w=3731.0, idle_power_w=146.0, warmup_s=warmup_s)
        self.work_level = 0

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if command == "ascset":
            return self._ascset(parameter or "")
        names = {"version": "rpc_version.json", "stats": "rpc_stats.json",
                 "estats": "rpc_estats.json", "devs": "rpc_devs.json", "pools": "rpc_pools.json"}
        if command not in names:
            return None
        text = load_capture(f"{CAPTURES}/{names[command]}").decode()
        if command in ("stats", "estats"):
            factor = self.state.hash_factor
            if factor != 1.0:
                text = rewrite_blob(text, ("GHSspd", "MGHS"), lambda v: v * factor)
            power = self.state.power_w()
            if power != self.state.nominal_power_w:
                text = rewrite_blob(text, ("WALLPOWER",), lambda _v: power)
            if self.state.sleeping:
                text = text.replace("Work: In Work", "Work: In Idle")
        return text.encode()

    def _ascset(self, parameter: str) -> bytes:
        args = parameter.split(",")
        action = args[1] if len(args) > 1 else ""
        if args[0] != "0":
            return json.dumps({"STATUS": [{"STATUS": "E", "Code": 120, "Msg":
                                           f"Invalid ASC id {args[0]}"}], "id": 1}).encode()
        if action == "softoff":
            self.state.sleep()
            return load_capture(f"{ASCSET}/ascset_softoff.json")
        if action == "softon":
            self.state.wake()
            return load_capture(f"{ASCSET}/ascset_softon.json")
        if action == "worklevel" and len(args) >= 4 and args[2] == "set":
            self.work_level = int(args[3])
            return load_capture(f"{ASCSET}/ascset_workmode.json")
        if action == "reboot":
            self.state.sleeping = True
            self.state.wake()
            return load_capture(f"{ASCSET}/ascset_workmode.json")
        return load_capture(f"{ASCSET}/ascset_help.json")
