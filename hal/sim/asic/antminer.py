"""Antminer S19 Pro on stock firmware (bmminer 49.0.1.3): RPC reads plus the digest-auth web CGI.

RPC: version/summary/stats/devs/pools from the capture; `a+b` multi-commands are rejected (as
some stock S19 firmware does). Web: `get_system_info.cgi` from the capture, `get_miner_conf.cgi`
synthesised from the captured pools (no capture of it exists), `set_miner_conf.cgi` which, like
the firmware, replaces the whole config and so refuses a body without `pools`; miner-mode 1
sleeps, 0 wakes (after the warm-up), 3 is low power (hashrate x0.7). HTTP digest auth (MD5,
qop=auth, realm "antMiner Configuration") on every CGI. Every hashrate figure (the summary and
stats windows, each chain's rate, the web stats built from them) is served from one RunningRate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from typing import Any

from hal.sim.asic.server import (
    FirmwareServer,
    MinerState,
    RunningRate,
    load_capture,
    set_numbers,
)

CAPTURES = "antminer_s19pro_stock_bmminer_49.0.1.3"
REALM = "antMiner Configuration"
LOW_POWER_FACTOR = 0.7
GH = 1e9
# Whole-miner windows in `summary` and `stats` (GH/s); devs' MHS fields are 0 on this firmware.
_TOTAL_KEYS = ("GHS 5s", "GHS av", "GHS 30m", "rate_30m", "total rate")


class AntminerSim(FirmwareServer):
    family = "antminer"
    multi_allowed = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0,
                 web_port: int = 0, username: str = "root", password: str = "root") -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        self.state = MinerState(nominal_power_w=3250.0, idle_power_w=12.0, warmup_s=warmup_s)
        self.low_power = False
        self.posted: list[dict[str, Any]] = []  # every set_miner_conf body, for tests
        self.username = username
        self.password = password
        self.requested_web_port = web_port
        self._web: asyncio.base_events.Server | None = None
        self._nonce = os.urandom(16).hex()
        summary = json.loads(load_capture(f"{CAPTURES}/rpc_summary.json"))["SUMMARY"][0]
        detail = next(r for r in json.loads(load_capture(f"{CAPTURES}/rpc_stats.json"))["STATS"]
                      if "chain_rate1" in r)
        self.rate = RunningRate.of_boards(
            float(summary["GHS 5s"]) * GH,
            [float(detail[f"chain_rate{i}"]) for i in range(1, 4)])
        pools = json.loads(load_capture(f"{CAPTURES}/rpc_pools.json"))["POOLS"]
        self.miner_conf: dict[str, Any] = {
            "pools": [{"url": p["URL"], "user": p["User"], "pass": "x"} for p in pools],
            "api-listen": True,
            "api-network": True,
            "api-groups": "A:stats:pools:devs:summary:version",
            "api-allow": "A:0/0,W:*",
            "bitmain-fan-ctrl": False,
            "bitmain-fan-pwm": "100",
            "bitmain-use-vil": True,
            "bitmain-freq": "525",
            "bitmain-voltage": "1360",
            "bitmain-ccdelay": "0",
            "bitmain-pwth": "0",
            "bitmain-work-mode": "0",
            "bitmain-freq-level": "100",
            "miner-mode": 0,
            "freq-level": "100",
        }

    async def start(self) -> None:
        await super().start()
        self._web = await asyncio.start_server(self._on_http, self.host, self.requested_web_port)

    async def stop(self) -> None:
        if self._web is not None:
            self.requested_web_port = self.web_port
            self._web.close()
        await super().stop()  # ends the connections' tasks, the web port's too
        if self._web is not None:
            await self._web.wait_closed()
            self._web = None

    @property
    def web_port(self) -> int:
        if self._web is None:
            if self.requested_web_port:
                return self.requested_web_port  # stopped (refusing): the port it binds again
            raise RuntimeError("server not started")
        return int(self._web.sockets[0].getsockname()[1])

    def discover_entry(self) -> dict[str, Any]:
        return {**super().discover_entry(), "web_port": self.web_port,
                "username": self.username, "password": self.password}

    # --- RPC -------------------------------------------------------------------------------
    def reply(self, command: str, parameter: str | None) -> bytes | None:
        names = {"version": "rpc_version.json", "summary": "rpc_summary.json",
                 "stats": "rpc_stats.json", "devs": "rpc_devs.json", "pools": "rpc_pools.json"}
        if command not in names:
            return None
        factor = self.state.hash_factor * (LOW_POWER_FACTOR if self.low_power else 1.0)
        return self.rendered((command, factor), lambda: self._render(names[command], factor))

    def _render(self, name: str, factor: float) -> str:
        text = load_capture(f"{CAPTURES}/{name}").decode()
        text = set_numbers(text, dict.fromkeys(_TOTAL_KEYS, self.rate.total(factor, GH)))
        return set_numbers(text, {f"chain_rate{index}": board_gh for index, board_gh
                                  in enumerate(self.rate.boards(factor, GH), start=1)})

    # --- web CGI ---------------------------------------------------------------------------
    async def _on_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # stop() ends it (a hung one waits on its client)
        try:
            with self.track():
                await self._serve_http(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _serve_http(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5.0)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = ([*lines[0].split(" "), "", "", ""])[:3]
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        length = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(min(length, 1 << 20)) if length else b""
        await self.hang(reader)
        status, payload, extra = self.handle_http(method, path, headers, body)
        await self.delay()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        out = [f"HTTP/1.1 {status} {reason.get(status, 'OK')}",
               "Content-Type: application/json", f"Content-Length: {len(payload)}",
               "Connection: close", *extra]
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    def _authorised(self, method: str, headers: dict[str, str]) -> bool:
        header = headers.get("authorization", "")
        if not header.lower().startswith("digest "):
            return False
        fields = {k.lower(): v for k, v in re.findall(r'(\w+)="?([^",]*)"?', header[7:])}
        if fields.get("username") != self.username or fields.get("nonce") != self._nonce:
            return False
        ha1 = hashlib.md5(f"{self.username}:{REALM}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{method}:{fields.get('uri', '')}".encode()).hexdigest()
        expected = hashlib.md5(
            f"{ha1}:{self._nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
            .encode()).hexdigest()
        return fields.get("response") == expected

    def handle_http(self, method: str, path: str, headers: dict[str, str],
                    body: bytes) -> tuple[int, bytes, list[str]]:
        challenge = [f'WWW-Authenticate: Digest realm="{REALM}", nonce="{self._nonce}", '
                     f'qop="auth"']
        if not self._authorised(method, headers):
            return 401, b"", challenge
        path = path.split("?")[0]
        if path == "/cgi-bin/get_system_info.cgi":
            return 200, load_capture(f"{CAPTURES}/web_get_system_info.json"), []
        if path == "/cgi-bin/get_miner_conf.cgi":
            return 200, json.dumps(self.miner_conf).encode(), []
        if path == "/cgi-bin/set_miner_conf.cgi" and method == "POST":
            try:
                conf = json.loads(body)
            except ValueError:
                return 400, b'{"stats":"error","code":"M001","msg":"bad json"}', []
            if not isinstance(conf, dict) or not conf.get("pools"):
                # The firmware writes what it gets: a partial body would wipe the pools.
                return 200, b'{"stats":"error","code":"M002","msg":"pools missing"}', []
            self.posted.append(conf)
            if self.ignores_commands:  # Fault.IGNORE: "success", and nothing changes
                return 200, b'{"stats":"success","code":"M000","msg":"OK!"}', []
            mode = int(conf.get("miner-mode", 0))
            # The firmware keeps its own fields and reports the mode it now runs in.
            self.miner_conf = {**self.miner_conf, **conf, "bitmain-work-mode": str(mode)}
            self._apply_mode(mode)
            return 200, b'{"stats":"success","code":"M000","msg":"OK!"}', []
        if path == "/cgi-bin/stats.cgi":
            return 200, self.web_stats(), []
        if path == "/cgi-bin/summary.cgi":
            return 200, self.web_summary(), []
        if path == "/cgi-bin/get_blink_status.cgi":
            return 200, json.dumps({"blink": False}).encode(), []
        if path == "/cgi-bin/get_network_info.cgi":
            info = json.loads(load_capture(f"{CAPTURES}/web_get_system_info.json"))
            return 200, json.dumps({"nettype": "DHCP", "netdevice": "eth0",
                                    "macaddr": info.get("macaddr", ""),
                                    "hostname": info.get("hostname", ""),
                                    "conf_nettype": "DHCP"}).encode(), []
        if path == "/cgi-bin/reboot.cgi":
            self.state.sleeping = True
            self.state.wake()
            return 200, b'{"stats":"success","code":"M000","msg":"OK!"}', []
        return 404, b"", []

    # --- web reads pyasic uses (no capture of them exists: built from the RPC capture) -------
    def _rpc_detail(self) -> dict[str, Any]:
        stats = json.loads(self.reply("stats", None) or b"{}")
        return next(r for r in stats["STATS"] if "chain_rate1" in r)

    def web_stats(self) -> bytes:
        """`stats.cgi` in the modern firmware's shape: one STATS record with a `chain` list.

        Every figure is the RPC `stats` reply's (the same sensors, rates and chip counts), so
        a client reading the web API sees what one reading RPC sees."""
        detail = self._rpc_detail()
        chains = []
        for index in range(1, 5):
            if not detail.get(f"chain_acn{index}"):
                continue
            chains.append({
                "index": index - 1, "freq_avg": 525, "rate_ideal": 36666.67,
                "rate_real": float(detail[f"chain_rate{index}"] or 0),
                "asic_num": int(detail[f"chain_acn{index}"]),
                "temp_pic": [int(v) for v in str(detail[f"temp_pic{index}"]).split("-")],
                "temp_pcb": [int(v) for v in str(detail[f"temp_pcb{index}"]).split("-")],
                "temp_chip": [int(v) for v in str(detail[f"temp_chip{index}"]).split("-")],
                "hw": 0, "eeprom_loaded": True, "sn": f"SIMBOARD{index:04d}", "hwp": 0.0,
            })
        summary = json.loads(self.reply("summary", None) or b"{}")["SUMMARY"][0]
        return json.dumps({
            "STATUS": {"STATUS": "S", "when": int(time.time()), "Msg": "stats",
                       "api_version": "1.0.0"},
            "INFO": {"miner_version": "49.0.1.3", "CompileTime": "", "type": "Antminer S19 Pro"},
            "STATS": [{"elapsed": int(summary["Elapsed"]), "rate_5s": float(summary["GHS 5s"]),
                       "rate_30m": float(summary["GHS av"]), "rate_avg": float(summary["GHS av"]),
                       "rate_ideal": float(detail.get("total_rateideal", 0)), "rate_unit": "GH/s",
                       "chain_num": len(chains), "fan_num": int(detail.get("fan_num", 4)),
                       "fan": [int(detail.get(f"fan{i}", 0)) for i in range(1, 5)],
                       "hwp_total": 0.0, "miner-mode": int(self.miner_conf.get("miner-mode", 0)),
                       "freq-level": 100, "chain": chains}],
        }).encode()

    def web_summary(self) -> bytes:
        summary = json.loads(self.reply("summary", None) or b"{}")["SUMMARY"][0]
        return json.dumps({
            "STATUS": {"STATUS": "S", "when": int(time.time()), "Msg": "summary",
                       "api_version": "1.0.0"},
            "INFO": {"miner_version": "49.0.1.3", "type": "Antminer S19 Pro"},
            "SUMMARY": [{"elapsed": int(summary["Elapsed"]), "rate_5s": float(summary["GHS 5s"]),
                         "rate_unit": "GH/s",
                         "status": [{"type": "rate", "status": "s", "code": 0, "msg": ""},
                                    {"type": "network", "status": "s", "code": 0, "msg": ""},
                                    {"type": "fans", "status": "s", "code": 0, "msg": ""},
                                    {"type": "temp", "status": "s", "code": 0, "msg": ""}]}],
        }).encode()

    def _apply_mode(self, mode: int) -> None:
        if mode == 1:
            self.state.sleep()
            return
        self.low_power = mode == 3
        self.state.wake()
