"""Whatsminer (MicroBT btminer) API v2: plaintext JSON reads, token + AES-256-ECB for writes.

Reads: btminer is cgminer 4.9.2 inside, so `summary`, `devs` and `pools` go as one
`summary+devs+pools` multi-command (as pyasic sends them; a firmware that refuses it gets them
one by one, remembered); `status` and the `get_*` commands are btminer's own, one per
connection (`{"cmd": ...}`), STATUS a top-level object. Writes follow the vendor's scheme:

1. `get_token` answers `{"time", "salt", "newsalt"}`;
2. key = md5crypt(password, salt) hash part; sign = md5crypt(key + time, newsalt) hash part;
3. the command JSON gets `"token": sign`, is NUL-padded to 16 bytes, AES-256-ECB encrypted with
   sha256(key) and sent base64'd as `{"enc": 1, "data": ...}`; the reply is `{"enc": "<b64>"}`.

A token lasts 30 minutes on the miner; we fetch a fresh one per write (cheap, never stale).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from hal.asic._crypto import aes256_ecb_decrypt, aes256_ecb_encrypt, md5_crypt
from hal.asic.antminer import cgminer_pools
from hal.asic.base import Miner, build_telemetry, reply_errors, usable
from hal.asic.transport import Reply, parse_reply, to_float, to_int
from hal.device import (
    AsicBoard,
    AsicTelemetry,
    Capability,
    DeviceInfo,
    DeviceKind,
    PoolStatus,
    Telemetry,
)
from hal.errors import InvalidArgument, PermissionDenied, ProtocolError

DEFAULT_PASSWORD = "admin"
CODE_TOKEN_ERROR = 135
# `adjust_power_limit` takes whole watts, 0-99999 (btminer API v2.0.5); 0 is no target at all.
POWER_LIMIT_RANGE_W = (1.0, 99999.0)
POWER_MODES = {"low": "set_low_power", "normal": "set_normal_power", "high": "set_high_power"}
# cgminer's own reads, which btminer merges into one `a+b` request (not `status`, `get_*`).
CGMINER_READS = frozenset({"summary", "devs", "edevs", "pools"})


def derive_token(password: str, salt: str, newsalt: str, time_str: str) -> tuple[bytes, str]:
    """(AES key, host_sign) from a get_token answer."""
    key_text = md5_crypt(password, salt).split("$")[3]
    sign = md5_crypt(key_text + time_str, newsalt).split("$")[3]
    return hashlib.sha256(key_text.encode()).digest(), sign


def encrypt_command(aes_key: bytes, command: dict[str, Any]) -> bytes:
    text = json.dumps(command).encode()
    text += b"\x00" * (-len(text) % 16)
    data = base64.b64encode(aes256_ecb_encrypt(aes_key, text)).decode()
    return json.dumps({"enc": 1, "data": data}).encode()


def decrypt_payload(aes_key: bytes, b64: str) -> bytes:
    try:
        cipher = base64.b64decode(b64)
    except ValueError as exc:
        raise ProtocolError("encrypted reply is not base64", b64.encode()) from exc
    if len(cipher) % 16:
        raise ProtocolError("encrypted reply is not a whole number of AES blocks", cipher)
    return aes256_ecb_decrypt(aes_key, cipher).rstrip(b"\x00")


class WhatsminerMiner(Miner):
    family = "whatsminer"
    vendor = "MicroBT"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "expected_hashrate": ("summary",),
        "power": ("summary",),
        "power_limit": ("summary",),
        "fans": ("summary",),
        "uptime": ("summary",),
        "boards": ("devs",),
        "pools": ("pools",),
        "is_mining": ("status",),
        "errors": ("get_error_code",),
    }
    capabilities = frozenset({
        Capability.TELEMETRY, Capability.HASHING, Capability.SLEEP_WAKE,
        Capability.SET_POWER_LIMIT, Capability.POOL_SWITCH, Capability.RESTART,
    })

    async def fetch(self, commands: list[str] | Any) -> dict[str, Reply]:
        merged = [c for c in commands if c in CGMINER_READS]
        own = [c for c in commands if c not in CGMINER_READS]
        async def singles() -> list[Reply]:
            return await asyncio.gather(*(self.rpc.send_json({"cmd": c}) for c in own))

        replies, answers = await asyncio.gather(self.rpc.multi(merged), singles())
        return {**replies, **dict(zip(own, answers, strict=True))}

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        if any(_is_v3(r.data) for r in replies.values()):
            return parse_v3(device_id, replies)
        summary = usable(replies, "summary")
        record: dict[str, Any] = {}
        if summary is not None:
            records = summary.section("SUMMARY")
            record = records[0] if records else {}
        hashrate = None
        for key, scale in (("HS RT", 1e6), ("MHS 5s", 1e6), ("MHS av", 1e6)):
            value = to_float(record.get(key))
            if value is not None:
                hashrate = value * scale
                break
        factory = to_float(record.get("Factory GHS"))
        expected = factory * 1e9 if factory else None
        fans = tuple(rpm for key in ("Fan Speed In", "Fan Speed Out")
                     if (rpm := to_int(record.get(key))) is not None)
        boards = _boards(usable(replies, "devs") or usable(replies, "edevs"))
        errors = list(reply_errors(replies))
        error_reply = usable(replies, "get_error_code")
        if error_reply is not None:
            msg = error_reply.data.get("Msg")
            codes = msg.get("error_code", []) if isinstance(msg, dict) else []
            for entry in codes:
                if isinstance(entry, dict):
                    errors += [f"error {code} at {when}" for code, when in entry.items()]
        for index in range(to_int(record.get("Error Code Count")) or 0):
            if (code := record.get(f"Error Code {index}")) is not None:
                errors.append(f"error {code}")
        is_mining: bool | None = None
        status = usable(replies, "status")
        if status is not None and isinstance(status.data.get("Msg"), dict):
            msg = status.data["Msg"]
            off = msg.get("mineroff", msg.get("btmineroff"))
            if off is not None:
                is_mining = str(off).lower() != "true"
        if hashrate is not None:
            is_mining = (is_mining is not False) and hashrate > 0
        temps = [t for b in boards for t in (b.temp_board_c, b.temp_chip_c) if t is not None]
        temps += [t for key in ("Temperature", "Chip Temp Max")
                  if (t := to_float(record.get(key))) is not None]
        asic = AsicTelemetry(
            expected_hashrate_hs=expected,
            boards=tuple(boards),
            fans_rpm=fans,
            pools=cgminer_pools(usable(replies, "pools")),
            uptime_s=to_int(record.get("Elapsed")),
            errors=tuple(errors),
            is_mining=is_mining,
        )
        return build_telemetry(
            device_id, family=cls.family, hashrate_hs=hashrate,
            power_w=to_float(record.get("Power")),
            power_limit_w=to_float(record.get("Power Limit")),
            asic=asic, temps=temps,
        )

    @classmethod
    def parse_info(cls, device_id: str, version: Reply | None) -> DeviceInfo:
        firmware = ""
        if version is not None and isinstance(version.data.get("Msg"), dict):
            firmware = str(version.data["Msg"].get("fw_ver", ""))
        return DeviceInfo(id=device_id, kind=DeviceKind.ASIC, name="Whatsminer",
                          vendor=cls.vendor, model="Whatsminer", firmware_version=firmware)

    async def async_info(self) -> DeviceInfo:
        if self._version is None:
            self._version = await self.rpc.send_json({"cmd": "get_version"})
        return await super().async_info()

    # --- privileged writes -----------------------------------------------------------------
    async def privileged(self, command: dict[str, Any]) -> dict[str, Any]:
        token_reply = await self.rpc.send_json({"cmd": "get_token"})
        msg = token_reply.data.get("Msg")
        if not isinstance(msg, dict) or not {"salt", "newsalt", "time"} <= msg.keys():
            token_reply.raise_for_status()
            raise ProtocolError(f"{self.id}: get_token answer lacks salt/time", token_reply.raw)
        key, sign = derive_token(self.config.password or DEFAULT_PASSWORD, str(msg["salt"]),
                                 str(msg["newsalt"]), str(msg["time"]))
        raw = await self.rpc.exchange(encrypt_command(key, {**command, "token": sign}))
        outer = parse_reply(raw, str(command.get("cmd")))
        if "enc" not in outer:
            reply = Reply(str(command.get("cmd")), outer, raw, self.rpc.address)
            if _as_code(outer) == CODE_TOKEN_ERROR or "token" in reply.message.lower():
                raise PermissionDenied(f"{self.id}: Whatsminer rejected the token "
                                       f"(wrong admin password?): {reply.message}")
            reply.raise_for_status()
            return outer
        inner_raw = decrypt_payload(key, str(outer["enc"]))
        inner = parse_reply(inner_raw, str(command.get("cmd")))
        Reply(str(command.get("cmd")), inner, inner_raw, self.rpc.address).raise_for_status()
        return inner

    async def async_sleep(self) -> None:
        await self.privileged({"cmd": "power_off", "respbefore": "true"})

    async def async_wake(self) -> None:
        await self.privileged({"cmd": "power_on"})

    async def async_power_limit_range_w(self) -> tuple[float, float] | None:
        return POWER_LIMIT_RANGE_W

    async def async_set_power_limit(self, watts: float) -> None:
        if watts != int(watts):  # never truncate: 0.5 W sent as "0" would mean no limit
            raise InvalidArgument(f"{self.id}: Whatsminer takes whole watts; got {watts:g} W")
        try:
            await self.privileged({"cmd": "adjust_power_limit",
                                   "power_limit": str(int(watts))})
        except ProtocolError as exc:
            if "range" in str(exc).lower():
                low, high = POWER_LIMIT_RANGE_W
                raise InvalidArgument(f"{self.id}: the miner refused {watts:g} W as out of its "
                                      f"range ({low:g}-{high:g} W by its API)") from exc
            raise

    async def async_power_modes(self) -> tuple[str, ...]:
        return tuple(POWER_MODES)

    async def async_set_power_mode(self, mode: str) -> None:
        if mode not in POWER_MODES:
            raise InvalidArgument(f"{self.id}: Whatsminer power modes are {sorted(POWER_MODES)}")
        await self.privileged({"cmd": POWER_MODES[mode]})

    async def async_power_mode(self) -> str | None:
        return self.parse_power_mode(await self.fetch(["summary", "status"]))

    @classmethod
    def parse_power_mode(cls, replies: Mapping[str, Reply]) -> str | None:
        """The mode in force: summary's "Power Mode" ("Low", "Normal", "High"), else status's
        "power_mode" ("low"); None where neither names one of POWER_MODES."""
        summary = usable(replies, "summary")
        status = usable(replies, "status")
        named: list[object] = [r.get("Power Mode") for r in
                               (summary.section("SUMMARY") if summary is not None else [])]
        if status is not None and isinstance(status.data.get("Msg"), dict):
            named.append(status.data["Msg"].get("power_mode"))
        for name in named:
            mode = str(name or "").strip().lower()
            if mode in POWER_MODES:
                return mode
        return None

    async def async_switch_pool(self, index: int) -> None:
        await self.privileged({"cmd": "switch_pool", "pool_id": index})

    async def async_restart(self) -> None:
        await self.privileged({"cmd": "restart_btminer"})


class WhatsminerV3Miner(Miner):
    """Whatsminer API v3 (TCP 4433, length-prefixed JSON): reads only for now.

    v3 writes need a different signing scheme (per-command salt and ts); until it is
    implemented they raise NotSupported instead of being sent the v2 way.
    """

    family = "whatsminer_v3"
    vendor = "MicroBT"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "power": ("summary",),
        "fans": ("summary",),
        "boards": ("edevs",),
        "pools": ("pools",),
        "errors": ("device_info",),
    }
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING})

    async def fetch(self, commands: list[str] | Any) -> dict[str, Reply]:
        replies = {}
        for command in commands:
            if command == "device_info":
                message = {"cmd": "get.device.info"}
            else:
                message = {"cmd": "get.miner.status", "param": command}
            replies[command] = await self.rpc.exchange_framed(message)
        return replies

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        return parse_v3(device_id, replies)

    async def async_info(self) -> DeviceInfo:
        if self._version is None:
            self._version = await self.rpc.exchange_framed({"cmd": "get.device.info"})
        miner = self._version.data.get("msg", {}).get("miner", {})
        system = self._version.data.get("msg", {}).get("system", {})
        model = str(miner.get("type", "")) if isinstance(miner, dict) else ""
        firmware = str(system.get("fwversion", "")) if isinstance(system, dict) else ""
        return DeviceInfo(id=self.id, kind=DeviceKind.ASIC, name=model or "Whatsminer",
                          vendor=self.vendor, model=model, firmware_version=firmware,
                          simulated=self.config.simulated)


def _as_code(data: dict[str, Any]) -> int | None:
    return to_int(data.get("Code"))


def _boards(reply: Reply | None) -> list[AsicBoard]:
    if reply is None:
        return []
    boards = []
    for record in reply.section("DEVS"):
        index = to_int(record.get("Slot", record.get("ASC"))) or 0
        rate = to_float(record.get("MHS 5s", record.get("MHS av")))
        factory = to_float(record.get("Factory GHS"))
        chip_max = to_float(record.get("Chip Temp Max"))
        boards.append(AsicBoard(
            index=index,
            hashrate_hs=None if rate is None else rate * 1e6,
            expected_hashrate_hs=None if factory is None else factory * 1e9,
            temp_board_c=to_float(record.get("Temperature")),
            temp_chip_c=chip_max if chip_max else None,
            chips=to_int(record.get("Effective Chips")),
        ))
    return boards


# --- API v3 (TCP 4433, length-prefixed JSON, lower-case keys) ---------------------------------


def _is_v3(data: Mapping[str, Any]) -> bool:
    return "code" in data and "msg" in data and "STATUS" not in data


def _v3_error(entry: Any) -> str:
    if isinstance(entry, dict):
        codes = [k for k in entry if k != "reason"]
        reason = entry.get("reason") or (entry[codes[0]] if codes else "")
        return f"error {codes[0] if codes else '?'}: {reason}"
    return f"error {entry}"


def parse_v3(device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
    """`get.miner.status` (summary/edevs/pools) and `get.device.info` replies; TH/s units."""
    summary: dict[str, Any] = {}
    edevs: list[dict[str, Any]] = []
    pools_raw: list[dict[str, Any]] = []
    errors: list[str] = []
    for command, reply in replies.items():
        code = to_int(reply.data.get("code"))
        msg = reply.data.get("msg")
        if code not in (0, None) or not isinstance(msg, dict):
            errors.append(f"{command}: {msg if isinstance(msg, str) else 'error'} (code {code})")
            continue
        if isinstance(msg.get("summary"), dict):
            summary = msg["summary"]
        if isinstance(msg.get("edevs"), list):
            edevs = [e for e in msg["edevs"] if isinstance(e, dict)]
        if isinstance(msg.get("pools"), list):
            pools_raw = [p for p in msg["pools"] if isinstance(p, dict)]
        miner = msg.get("miner")
        if isinstance(miner, dict) and isinstance(miner.get("error-code"), list):
            errors += [_v3_error(e) for e in miner["error-code"]]
        if isinstance(msg.get("error-code"), list):
            errors += [_v3_error(e) for e in msg["error-code"]]

    def ths(value: Any) -> float | None:
        number = to_float(value)
        return None if number is None else number * 1e12

    boards = tuple(
        AsicBoard(index=to_int(e.get("id")) or i, hashrate_hs=ths(e.get("hash-realtime")),
                  expected_hashrate_hs=ths(e.get("factory-hash")),
                  temp_chip_c=to_float(e.get("chip-temp-max")),
                  chips=to_int(e.get("effective-chips")))
        for i, e in enumerate(edevs)
    )
    board_temps = summary.get("board-temperature")
    if isinstance(board_temps, list):
        boards = tuple(
            AsicBoard(b.index, b.hashrate_hs, b.expected_hashrate_hs,
                      to_float(board_temps[i]) if i < len(board_temps) else None,
                      b.temp_chip_c, b.chips)
            for i, b in enumerate(boards)
        ) or boards
    pools = tuple(
        PoolStatus(url=str(p.get("url", "")), user=str(p.get("account", p.get("user", ""))),
                   status=str(p.get("status", "")),
                   active=str(p.get("stratum-active", "")).lower() == "true" or None,
                   accepted=to_int(p.get("accepted")), rejected=to_int(p.get("rejected")))
        for p in pools_raw
    )
    hashrate = ths(summary.get("hash-realtime"))
    fans = tuple(rpm for key in ("fan-speed-in", "fan-speed-out")
                 if (rpm := to_int(summary.get(key))) is not None)
    temps = [t for t in (to_float(summary.get("chip-temp-max")),) if t]
    temps += [b.temp_chip_c for b in boards if b.temp_chip_c]
    asic = AsicTelemetry(
        expected_hashrate_hs=ths(summary.get("factory-hash")), boards=boards, fans_rpm=fans,
        pools=pools, uptime_s=to_int(summary.get("elapsed")), errors=tuple(errors),
        is_mining=None if hashrate is None else hashrate > 0,
    )
    return build_telemetry(device_id, family="whatsminer", hashrate_hs=hashrate,
                           power_w=to_float(summary.get("power-realtime")),
                           power_limit_w=to_float(summary.get("power-limit")), asic=asic,
                           temps=temps)
