"""Canaan Avalon (cgminer 4.11 with the Avalon driver): most data lives in one text blob.

`stats` carries `MM ID0` (or `MM ID0:Summary`), a string of `Key[value]` pairs: GHSspd
(realtime GH/s), GHSmm (expected), WALLPOWER or the last PS field (watts at the wall), Fan1..,
TMax, per-board MGHS/MTmax, SYSTEMSTATU ("Work: In Work" vs "In Idle"), WORKLEVEL.
Control is `ascset`: `0,softoff` / `0,softon` for sleep, `0,worklevel,set,N` for the level.
Avalon has no watt target, so set_power_limit raises NotSupported; use set_work_level.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from hal.asic.antminer import cgminer_pools
from hal.asic.base import Miner, build_telemetry, reply_errors, usable
from hal.asic.transport import Reply, to_float, to_int
from hal.device import AsicBoard, AsicTelemetry, Capability, Telemetry
from hal.errors import InvalidArgument

_PAIR = re.compile(r"([A-Za-z][A-Za-z0-9_]*(?: [A-Za-z]+)?)\[([^\]]*)\]")


def parse_mm_blob(text: str) -> dict[str, str]:
    """`Ver[15-194] GHSspd[199241.07] MTmax[77 78 77]` -> {"Ver": "15-194", ...}."""
    return {key.strip(): value.strip() for key, value in _PAIR.findall(text)}


def _numbers(value: str | None) -> list[float]:
    if not value:
        return []
    return [n for part in value.split() if (n := to_float(part)) is not None]


def mm_fields(stats: Reply | None) -> dict[str, str]:
    if stats is None:
        return {}
    for record in stats.section("STATS"):
        for key, value in record.items():
            if key.startswith("MM ID") and isinstance(value, str):
                return parse_mm_blob(value)
    return {}


class AvalonMiner(Miner):
    family = "avalon"
    vendor = "Canaan"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("stats",),
        "expected_hashrate": ("stats",),
        "power": ("stats",),
        "fans": ("stats",),
        "boards": ("stats",),
        "is_mining": ("stats",),
        "uptime": ("stats",),
        "pools": ("pools",),
    }
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING, Capability.SLEEP_WAKE,
                              Capability.POOL_SWITCH, Capability.RESTART})

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        mm = mm_fields(usable(replies, "stats") or usable(replies, "estats"))
        hashrate_gh = to_float(mm.get("GHSspd"))
        uptime = to_int(mm.get("Elapsed"))
        summary = usable(replies, "summary")
        if summary is not None:
            for record in summary.section("SUMMARY"):
                uptime = to_int(record.get("Elapsed")) or uptime
                if hashrate_gh is None and (mhs := to_float(record.get("MHS 5s"))) is not None:
                    hashrate_gh = mhs / 1e3
        power = to_float(mm.get("WALLPOWER"))
        if power is None and (ps := _numbers(mm.get("PS"))):
            power = ps[-1]
        fans = tuple(int(rpm) for i in range(1, 9)
                     if (rpm := to_float(mm.get(f"Fan{i}"))) is not None)
        board_rates = _numbers(mm.get("MGHS"))
        board_tmax = _numbers(mm.get("MTmax"))
        board_tavg = _numbers(mm.get("MTavg"))
        boards = tuple(
            AsicBoard(
                index=i,
                hashrate_hs=rate * 1e9,
                temp_board_c=board_tavg[i] if i < len(board_tavg) else None,
                temp_chip_c=board_tmax[i] if i < len(board_tmax) else None,
            )
            for i, rate in enumerate(board_rates)
        )
        state = mm.get("SYSTEMSTATU", "")
        is_mining: bool | None = None
        if "In Work" in state:
            is_mining = True
        elif "In Idle" in state:
            is_mining = False
        if hashrate_gh is not None and hashrate_gh <= 0:
            is_mining = False
        expected_gh = to_float(mm.get("GHSmm"))
        temps = [t for t in (to_float(mm.get("TMax")), *board_tmax) if t]
        asic = AsicTelemetry(
            expected_hashrate_hs=None if expected_gh is None else expected_gh * 1e9,
            boards=boards,
            fans_rpm=fans,
            pools=cgminer_pools(usable(replies, "pools")),
            uptime_s=uptime,
            errors=reply_errors(replies),
            is_mining=is_mining,
        )
        return build_telemetry(device_id, family=cls.family,
                               hashrate_hs=None if hashrate_gh is None else hashrate_gh * 1e9,
                               power_w=power, asic=asic, temps=temps)

    async def _ascset(self, parameter: str) -> Reply:
        return await self.rpc.request("ascset", parameter)

    async def async_sleep(self) -> None:
        await self._ascset(f"0,softoff,1:{int(time.time())}")

    async def async_wake(self) -> None:
        await self._ascset(f"0,softon,1:{int(time.time())}")

    async def set_work_level(self, level: int) -> None:
        if not -5 <= level <= 5:
            raise InvalidArgument(f"{self.id}: work level {level} out of range")
        await self._ascset(f"0,worklevel,set,{level}")

    async def async_switch_pool(self, index: int) -> None:
        await self.rpc.request("switchpool", str(index))

    async def async_restart(self) -> None:
        await self._ascset("0,reboot,0")


def work_level(replies: Mapping[str, Any]) -> int | None:
    stats = replies.get("stats")
    return to_int(mm_fields(stats).get("WORKLEVEL")) if isinstance(stats, Reply) else None
