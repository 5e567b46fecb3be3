"""Whatsminer (btminer API v2.0.5): plaintext reads from the capture, token + AES writes.

`get_token` hands out {time, salt, newsalt}; a write is `{"enc": 1, "data": b64(AES-256-ECB(
sha256(md5crypt(password, salt)), json + token))}` and is answered encrypted with the same key.
A wrong password or a stale token gets Code 135 "check token err" in plaintext, like the
firmware. Tokens live `token_ttl_s`. The get_token and write replies are synthesised in the
firmware's shape; reads are the capture with hashrate/power/mineroff fields rewritten.

btminer is cgminer 4.9.2 inside: it answers `summary+devs+pools` multi-commands for the cgminer
commands (pyasic relies on it) but not for `get_*` and `status`. Its `summary` and every
`devs` record carry the MHS 5s/1m/5m/15m windows (the real v1 and M21S captures show them);
the v2 capture was trimmed upstream, so the windows are added, and every hashrate figure is
served from one RunningRate.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import hashlib
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hal.sim.asic.server import (
    FirmwareServer,
    MinerState,
    RunningRate,
    load_capture,
    rewrite_sequence,
    rewrite_string,
    set_numbers,
)

CAPTURES = "whatsminer_api_v2_asicrs"
_READS = {"summary", "devs", "pools", "get_version", "get_psu", "status", "get_miner_info",
          "get_error_code"}
MH = 1e6
# The control commands Fault.IGNORE answers as done without doing them.
_CONTROLS = frozenset({"power_off", "power_on", "adjust_power_limit", "set_low_power",
                       "set_normal_power", "set_high_power"})
_WINDOWS = ("MHS av", "MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m")  # summary and each devs record


@functools.lru_cache(maxsize=1)
def _libc_crypt() -> Any:
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt


def firmware_token(password: str, salt: str, newsalt: str, stamp: str) -> tuple[bytes, str]:
    """(AES key, sign) as the firmware derives them, through the C library's crypt(3).

    Deliberately not hal.asic's md5-crypt: a bug shared by client and simulator could never
    fail a test. Pinned by reference vectors in tests/asic."""
    crypt = _libc_crypt()
    key = crypt(password.encode(), f"$1${salt}$".encode()).decode().split("$")[3]
    sign = crypt((key + stamp).encode(), f"$1${newsalt}$".encode()).decode().split("$")[3]
    return hashlib.sha256(key.encode()).digest(), sign


def _aes(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    worker = cipher.encryptor() if encrypt else cipher.decryptor()
    return worker.update(data) + worker.finalize()


def _plain(status: str, code: int, msg: Any) -> bytes:
    return json.dumps({"STATUS": status, "When": int(time.time()), "Code": code, "Msg": msg,
                       "Description": ""}).encode()


def _with_windows(name: str, section: str) -> str:
    """The capture with the windows real btminer sends added to each record (value: its MHS av,
    rewritten at serve time)."""
    data = json.loads(load_capture(f"{CAPTURES}/{name}.json"))
    for record in data[section]:
        record.update({key: record["MHS av"] for key in _WINDOWS if key not in record})
    return json.dumps(data, separators=(",", ":"))


class WhatsminerSim(FirmwareServer):
    family = "whatsminer"
    multi_allowed = True
    multi_parts = frozenset({"summary", "devs", "edevs", "pools", "devdetails"})
    trailing_nul = False

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0,
                 password: str = "admin", token_ttl_s: float = 1800.0,
                 model: str = "M50S++_VK30", response_s: float = 0.0) -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        summary = json.loads(load_capture(f"{CAPTURES}/summary.json"))["SUMMARY"][0]
        self.base_power_limit_w = float(summary["Power Limit"])
        # An M50S-class PSU: the boards run from about half to just over nominal power.
        self.state = MinerState(nominal_power_w=float(summary["Power"]), idle_power_w=20.0,
                                warmup_s=warmup_s, response_s=response_s,
                                min_power_w=1600.0, max_power_w=3600.0)
        self.password = password
        self.model = model
        self.power_limit_w: float | None = None  # as set through the API
        self.token_ttl_s = token_ttl_s
        self.salt = "BQ5hoXV9"
        self._tokens: dict[str, tuple[bytes, float]] = {}  # sign -> (aes key, expiry)
        self.active_pool = 0
        # set_low/normal/high_power; summary "Power Mode" and status "power_mode" say it.
        self.power_mode = "normal"
        self._texts = {"summary": _with_windows("summary", "SUMMARY"),
                       "devs": _with_windows("devs", "DEVS")}
        boards = json.loads(self._texts["devs"])["DEVS"]
        self.rate = RunningRate.of_boards(float(summary["HS RT"]) * MH,
                                          [float(b["MHS av"]) for b in boards])

    def invalid_command(self) -> bytes:
        # btminer's answer to a command it does not know (e.g. `version`): no family name in it.
        return json.dumps({"STATUS": "E", "When": int(time.time()), "Code": 14,
                           "Msg": "invalid cmd", "Description": ""}).encode()

    def devdetails(self) -> bytes:
        """btminer's devdetails shape (Name "SM", Driver "bitmicro", the model per board).

        Not in the v2 capture set; the shape is that of the M21S replies in
        whatsminer_m21s_simulator_messages, with this miner's model and board count."""
        boards = json.loads(load_capture(f"{CAPTURES}/devs.json"))["DEVS"]
        return json.dumps({
            "STATUS": [{"STATUS": "S", "When": int(time.time()), "Code": 69,
                        "Msg": "Device Details", "Description": "cgminer 4.9.2"}],
            "DEVDETAILS": [{"DEVDETAILS": i, "Name": "SM", "ID": i, "Driver": "bitmicro",
                            "Kernel": "", "Model": self.model} for i in range(len(boards))],
            "id": 1,
        }, separators=(",", ":")).encode()

    def handle_message(self, message: dict[str, Any]) -> bytes | None:
        if message.get("enc") == 1 and "data" in message:
            return self._encrypted(str(message["data"]))
        if message.get("cmd") == "get_token":
            newsalt = os.urandom(4).hex()
            stamp = str(int(time.time()))[-4:]
            key, sign = firmware_token(self.password, self.salt, newsalt, stamp)
            now = time.monotonic()
            self._tokens = {s: v for s, v in self._tokens.items() if v[1] > now}
            self._tokens[sign] = (key, now + self.token_ttl_s)
            return _plain("S", 134, {"time": stamp, "salt": self.salt, "newsalt": newsalt})
        return None

    def _encrypted(self, data: str) -> bytes:
        now = time.monotonic()
        try:
            cipher = base64.b64decode(data)
        except ValueError:
            return _plain("E", 135, "check token err")
        for sign, (key, expiry) in self._tokens.items():
            if expiry < now or len(cipher) % 16:
                continue
            try:
                command = json.loads(_aes(key, cipher, encrypt=False).rstrip(b"\x00"))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(command, dict) and command.get("token") == sign:
                answer = self._write(command)
                padded = answer + b"\x00" * (-len(answer) % 16)
                enc = base64.b64encode(_aes(key, padded, encrypt=True)).decode()
                return json.dumps({"enc": enc}).encode()
        return _plain("E", 135, "check token err")

    def _write(self, command: dict[str, Any]) -> bytes:
        name = command.get("cmd")
        if self.ignores_commands and name in _CONTROLS:
            return _plain("S", 131, "API command OK")  # Fault.IGNORE: nothing happens
        if name == "power_off":
            self.state.sleep()
        elif name == "power_on":
            self.state.wake()
        elif name == "adjust_power_limit":
            try:
                watts = float(command.get("power_limit", ""))
            except ValueError:
                return _plain("E", 132, "power_limit must be a number")
            if not 0 < watts <= 99999:
                return _plain("E", 132, "power_limit out of range")
            self.power_limit_w = watts
            # A limit, not a setpoint: above what the miner draws anyway it changes nothing.
            self.state.set_target(None if watts >= self.state.nominal_power_w else watts)
        elif name in ("set_low_power", "set_normal_power", "set_high_power"):
            share = {"set_low_power": 0.8, "set_normal_power": 1.0, "set_high_power": 1.1}[name]
            self.state.set_target(self.state.nominal_power_w * share)
            self.power_mode = name.split("_")[1]
        elif name == "switch_pool":
            self.active_pool = int(command.get("pool_id", 0))
        elif name in ("restart_btminer", "reboot"):
            self.state.sleeping = True
            self.state.wake()
        else:
            return _plain("E", 14, "invalid cmd")
        return _plain("S", 131, "API command OK")

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if command == "devdetails":
            return self.rendered((command, int(time.time())), self.devdetails)  # When: s
        if command not in _READS:
            return None
        key = (command, self.state.hash_factor, self.state.power_w(), self.state.sleeping,
               self.power_limit_w, self.power_mode)
        return self.rendered(key, lambda: self._render(command))

    def _render(self, command: str) -> str:
        text = self._texts.get(command) or load_capture(f"{CAPTURES}/{command}.json").decode()
        factor = self.state.hash_factor
        if command == "summary":
            power = self.state.power_w()
            limit = self.power_limit_w or self.base_power_limit_w
            text = set_numbers(text, {"Power": power, "Power Limit": limit,
                                      **dict.fromkeys(("HS RT", *_WINDOWS),
                                                      self.rate.total(factor, MH))})
            text = rewrite_string(text, "Power Mode", self.power_mode.capitalize())
        if command == "devs":
            for key in _WINDOWS:
                text = rewrite_sequence(text, key, self.rate.boards(factor, MH))
        if command == "status":
            text = rewrite_string(text, "mineroff", "true" if self.state.sleeping else "false")
            text = rewrite_string(text, "power_mode", self.power_mode)
            if self.power_limit_w is not None:
                text = rewrite_string(text, "power_limit_set", str(int(self.power_limit_w)))
        return text


class WhatsminerV3Sim(FirmwareServer):
    """Whatsminer API v3 reads (M60S, firmware 20251209): 4-byte LE length + JSON both ways.

    Serves the captured `get.miner.status` (summary/edevs/pools) and `get.device.info`
    replies byte for byte inside the framing; anything else gets a v3-shaped error.
    """

    family = "whatsminer_v3"
    multi_allowed = False
    trailing_nul = False

    def dispatch(self, request: bytes) -> bytes:
        length = int.from_bytes(request[:4], "little") if len(request) >= 4 else -1
        try:
            message = json.loads(request[4:4 + length]) if length > 0 else None
        except ValueError:
            message = None
        if not isinstance(message, dict):
            body = json.dumps({"code": -1, "msg": "invalid request"}).encode()
            return len(body).to_bytes(4, "little") + body
        command = str(message.get("cmd", ""))
        self.requests.append(command)
        param = str(message.get("param", ""))
        name = {
            ("get.miner.status", "summary"): "get_miner_status_summary.json",
            ("get.miner.status", "edevs"): "get_miner_status_edevs.json",
            ("get.miner.status", "pools"): "get_miner_status_pools.json",
            ("get.device.info", ""): "get_device_info.json",
        }.get((command, param if command == "get.miner.status" else ""))
        if name is None:
            body = json.dumps({"code": -1, "msg": f"invalid cmd {command}"}).encode()
        else:
            body = load_capture(f"whatsminer_api_v3_asicrs/{name}")
        return len(body).to_bytes(4, "little") + body

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        return None
