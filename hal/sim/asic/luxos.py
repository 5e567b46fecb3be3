"""LuxOS on an Antminer S19k Pro (LUXminer 2025.4.8): reads from the capture, sessions for writes.

`logon` opens one session (a second logon while one is live is refused, like LuxOS); sessions
expire after `session_ttl_s` of inactivity. `curtail <sid>,sleep|wakeup`, `profileset
<sid>,<profile>`, `switchpool <sid>,<n>`, `logoff <sid>`. The logon/session/curtail/profileset
replies are synthesised in LuxOS's reply shape (no capture of them exists); all reads are the
capture with hashrate/power/profile/curtail fields rewritten to the state, every hashrate figure
(summary and stats windows, chain rates, each devs record's windows) from one RunningRate.
`groups`, `tempctrl`, `devdetails` and `atm`, which real LuxOS serves and pyasic reads, are
answered in LuxOS's shapes.
"""

from __future__ import annotations

import json
import os
import time

from hal.sim.asic.server import (
    FirmwareServer,
    MinerState,
    RunningRate,
    load_capture,
    rewrite_numbers,
    rewrite_sequence,
    rewrite_string,
    set_numbers,
    status_reply,
)

CAPTURES = "luxos_antminer_s19kpro_asicrs"
DESCRIPTION = "LUXminer 2025.4.8.220305-57b389c7"
_READS = ("version", "summary", "stats", "devs", "pools", "power", "fans", "temps", "config",
          "profiles", "events")
GH, MH = 1e9, 1e6
# Whole-miner windows (GH/s in summary and stats); every devs record repeats the MHS windows.
_TOTAL_KEYS = ("GHS 5s", "GHS av", "GHS 1m", "GHS 5m", "GHS 15m", "GHS 24h", "GHS 30m",
               "rate_30m")
_BOARD_MHS_KEYS = ("MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m", "MHS 30m", "MHS 60m", "MHS av")
# Thresholds in the TEMPCTRL shape Luxor documents for tempctrl/tempctrlset (no capture of
# this miner's exists); the values are LuxOS's documented S19 defaults.
_TEMPCTRL = {"Target": 55.0, "Hot": 65.0, "Dangerous": 70.0, "Mode": "Automatic"}


class LuxosSim(FirmwareServer):
    family = "luxos"
    multi_allowed = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0,
                 session_ttl_s: float = 60.0) -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        power = json.loads(load_capture(f"{CAPTURES}/power.json"))["POWER"][0]["Watts"]
        self.state = MinerState(nominal_power_w=float(power), idle_power_w=15.0,
                                warmup_s=warmup_s)
        profiles = json.loads(load_capture(f"{CAPTURES}/profiles.json"))["PROFILES"]
        self.profiles = {p["Profile Name"]: (float(p["Watts"]), float(p["Hashrate"]))
                         for p in profiles}
        config = json.loads(load_capture(f"{CAPTURES}/config.json"))["CONFIG"][0]
        self.base_profile = str(config["Profile"])
        rated = [w for w, _ in self.profiles.values()]
        base_w = self.profiles[self.base_profile][0]
        self.state.min_power_w = self.state.nominal_power_w * min(rated) / base_w
        self.state.max_power_w = self.state.nominal_power_w * max(rated) / base_w
        self.profile = self.base_profile
        stats = json.loads(load_capture(f"{CAPTURES}/stats.json"))["STATS"][1]
        summary = json.loads(load_capture(f"{CAPTURES}/summary.json"))["SUMMARY"][0]
        self.rate = RunningRate.of_boards(float(summary["GHS 5s"]) * GH,
                                          [float(stats[f"chain_rate{i}"]) for i in (1, 2, 3)])
        devs = json.loads(load_capture(f"{CAPTURES}/devs.json"))["DEVS"]
        self._devs_order = [int(record["ASC"]) for record in devs]  # records list ASC 2, 0, 1
        self.session_ttl_s = session_ttl_s
        self.session_id = ""
        self._session_seen = 0.0
        self.active_pool = 0
        self.refuse_writes = 0  # for tests: the next n session commands answer an error

    # --- sessions --------------------------------------------------------------------------
    def _live_session(self) -> str:
        if self.session_id and time.monotonic() - self._session_seen > self.session_ttl_s:
            self.session_id = ""
        return self.session_id

    def expire_session(self) -> None:
        """Tests: make the miner forget the session, as a timeout would."""
        self.session_id = ""

    def _ok(self, code: int, msg: str, extra: dict[str, object] | None = None) -> bytes:
        body = status_reply("S", code, msg, DESCRIPTION)
        return json.dumps({**body, **(extra or {})}).encode()

    def _err(self, code: int, msg: str) -> bytes:
        return json.dumps(status_reply("E", code, msg, DESCRIPTION)).encode()

    def _check_session(self, parameter: str | None) -> tuple[bytes | None, list[str]]:
        args = (parameter or "").split(",")
        live = self._live_session()
        if not live or args[0] != live:
            return self._err(322, "Invalid session id"), []
        self._session_seen = time.monotonic()
        return None, args[1:]

    # --- commands --------------------------------------------------------------------------
    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if command == "session":
            return self._ok(320, "Session", {"SESSION": [{"SessionID": self._live_session()}]})
        if command == "logon":
            if self._live_session():
                return self._err(321, "Another session is active")
            self.session_id = os.urandom(4).hex()
            self._session_seen = time.monotonic()
            return self._ok(320, "Logon", {"SESSION": [{"SessionID": self.session_id}]})
        if command in ("logoff", "curtail", "profileset", "switchpool", "resetminer"):
            error, args = self._check_session(parameter)
            if error is not None:
                return error
            return self._write(command, args)
        if command in _READS:
            return self._read(command)
        if command in ("groups", "tempctrl", "devdetails", "atm"):
            return self._synthesised(command)
        return None

    def _synthesised(self, command: str) -> bytes:
        """Reads real LuxOS serves that the S19k Pro capture lacks, in LuxOS's reply shapes:
        `groups` and `atm` as the luxos-tooling captures show them, `tempctrl` as Luxor
        documents it, `devdetails` in cgminer's shape (one record per board)."""
        if command == "groups":
            pools = json.loads(load_capture(f"{CAPTURES}/pools.json"))["POOLS"]
            groups = sorted({int(p["GROUP"]) for p in pools})
            return self._ok(324, "List groups", {"GROUPS": [
                {"GROUP": g, "Name": "default" if g == 0 else f"group{g}", "Quota": 1.0}
                for g in groups]})
        if command == "tempctrl":
            return self._ok(329, "Temperature control", {"TEMPCTRL": [_TEMPCTRL]})
        if command == "atm":
            atm = json.loads(load_capture("luxos_luxos_tooling/atm.json"))["ATM"][0]
            return self._ok(339, "ATM configuration values", {"ATM": [
                {**atm, "Enabled": False, "MaxProfile": self.base_profile}]})
        devs = json.loads(load_capture(f"{CAPTURES}/devs.json"))["DEVS"]
        model = json.loads(load_capture(f"{CAPTURES}/version.json"))["VERSION"][0]["Type"]
        return self._ok(69, "Device Details", {"DEVDETAILS": [
            {"DEVDETAILS": n, "Name": "", "ID": int(d["ID"]), "Driver": "bitmain",
             "Kernel": "", "Model": model, "Device Path": d.get("Connector", "")}
            for n, d in enumerate(sorted(devs, key=lambda d: int(d["ID"])))]})

    def _write(self, command: str, args: list[str]) -> bytes:
        if command == "logoff":
            self.session_id = ""
            return self._ok(321, "Logoff")
        if self.refuse_writes > 0:
            self.refuse_writes -= 1
            return self._err(45, f"{command} refused: miner busy")
        if command == "curtail":
            mode = args[0] if args else ""
            if self.ignores_commands and mode in ("sleep", "wakeup"):
                return self._ok(354, f"Curtail {mode}")  # Fault.IGNORE: nothing happens
            if mode == "sleep":
                self.state.sleep()
            elif mode == "wakeup":
                self.state.wake()
            else:
                return self._err(355, f"Invalid curtail mode '{mode}'")
            return self._ok(354, f"Curtail {mode}")
        if command == "profileset":
            name = args[0] if args else ""
            if name not in self.profiles:
                return self._err(341, f"Invalid profile '{name}'")
            if self.ignores_commands:
                return self._ok(340, f"Profile set to {name}")  # Fault.IGNORE
            self.profile = name
            base_watts = self.profiles[self.base_profile][0]
            ratio = self.profiles[name][0] / base_watts
            self.state.set_target(
                None if name == self.base_profile else self.state.nominal_power_w * ratio
            )
            return self._ok(340, f"Profile set to {name}")
        if command == "switchpool":
            index = int(args[0]) if args and args[0].isdigit() else -1
            if not 0 <= index < 4:
                return self._err(26, f"Invalid pool id {index}")
            self.active_pool = index
            return self._ok(27, f"Switching to pool {index}")
        self.state.sleeping = True
        self.state.wake()
        return self._ok(10, "Reset miner")

    def _read(self, command: str) -> bytes:
        factor = self.state.hash_factor
        if self.state.power_target_w is not None and not self.state.sleeping:
            # A profile changes hashrate by its rated ratio, not exactly the power ratio.
            rated = self.profiles[self.profile][1] / self.profiles[self.base_profile][1]
            factor = 0.0 if self.state.warming else rated
        key = (command, factor, self.state.power_w(), self.profile, self.state.sleeping)
        return self.rendered(key, lambda: self._render(command, factor))

    def _render(self, command: str, factor: float) -> str:
        text = load_capture(f"{CAPTURES}/{command}.json").decode()
        if command in ("summary", "stats"):
            text = set_numbers(text, dict.fromkeys(_TOTAL_KEYS, self.rate.total(factor, GH)))
            boards = self.rate.boards(factor, GH)
            text = set_numbers(text, {f"chain_rate{index}": board_gh
                                      for index, board_gh in enumerate(boards, start=1)})
            # LUXminer's "total rate" is the boards' mean, not their sum.
            text = set_numbers(text, {"total rate": sum(boards) / len(boards)})
        if command == "devs":
            per_record = self.rate.boards(factor, MH, self._devs_order)
            for key in _BOARD_MHS_KEYS:
                text = rewrite_sequence(text, key, per_record)
        if command == "power":
            power = self.state.power_w()
            text = rewrite_numbers(text, ("Watts",), lambda _v: power)
        if command in ("config", "devs"):
            text = rewrite_string(text, "Profile", self.profile)
        if command == "config" and self.state.sleeping:
            text = rewrite_string(text, "CurtailMode", "Sleep")
        return text
