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


def mm_modules(stats: Reply | None) -> list[dict[str, str]]:
    """Every module's `MM IDn` blob, across every STATS record (an Avalon controller with
    chained miners reports several records, each with several modules)."""
    if stats is None:
        return []
    return [parse_mm_blob(value)
            for record in stats.section("STATS")
            for key, value in record.items()
            if key.startswith("MM ID") and isinstance(value, str)]


def mm_fields(stats: Reply | None) -> dict[str, str]:
    modules = mm_modules(stats)
    return modules[0] if modules else {}


def _module_hashrate_gh(mm: dict[str, str]) -> float | None:
    """Realtime GH/s: GHSspd, else the 1047's GHSavg, else the sum of its boards' MGHS."""
    for key in ("GHSspd", "GHSavg"):
        if (value := to_float(mm.get(key))) is not None:
            return value
    boards = _numbers(mm.get("MGHS"))
    return sum(boards) if boards else None


def _module_power_w(mm: dict[str, str]) -> float | None:
    """WALLPOWER, else the power supply's own figure in PS: the 7th field where there are
    seven (the wall power, as WALLPOWER: PS[0 1209 1187 297 3526 1188 3731] on an A1566), the
    5th where there are six (an A1047's PS[0 1212 1315 174 2288 1320] ends in a voltage); a
    controller that does not measure sends PS[0 0 0 0 0 0], which is unknown, not 0 W."""
    if (wall := to_float(mm.get("WALLPOWER"))) is not None and wall > 0:
        return wall
    ps = _numbers(mm.get("PS"))
    if len(ps) >= 7:
        watts = ps[6]
    elif len(ps) == 6:
        watts = ps[4]
    else:
        watts = ps[-1] if ps else 0.0
    return watts if watts > 0 else None


def _total(values: list[float | None]) -> float | None:
    """A fleet sum is known only if every part is."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


def _chips_per_board(mm: dict[str, str], boards: int) -> int | None:
    total = to_int(mm.get("TA"))
    if total and boards:
        return total // boards
    match = re.search(r"--hash-asic (\d+)", mm.get("ATAOPTS0", ""))
    return int(match.group(1)) if match else None


class AvalonMiner(Miner):
    family = "avalon"
    vendor = "Canaan"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("stats", "summary"),
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
        modules = mm_modules(usable(replies, "stats") or usable(replies, "estats"))
        rates = [_module_hashrate_gh(mm) for mm in modules]
        hashrate_gh = _total(rates)
        summary = usable(replies, "summary")
        uptime = to_int(modules[0].get("Elapsed")) if modules else None
        for record in summary.section("SUMMARY") if summary is not None else []:
            uptime = to_int(record.get("Elapsed")) or uptime
            if hashrate_gh is None:
                for key in ("MHS 5s", "MHS av", "MHS 1m"):
                    if (mhs := to_float(record.get(key))) is not None:
                        hashrate_gh = mhs / 1e3
                        break
        power = _total([_module_power_w(mm) for mm in modules])
        fans: list[int] = []
        boards: list[AsicBoard] = []
        temps: list[float] = []
        states: list[str] = []
        for mm in modules:
            fans += [int(rpm) for i in range(1, 9)
                     if (rpm := to_float(mm.get(f"Fan{i}"))) is not None]
            if (fan := to_float(mm.get("Fan"))) is not None:  # A9xx modules: one fan
                fans.append(int(fan))
            rates_gh = _numbers(mm.get("MGHS"))
            tmax = _numbers(mm.get("MTmax"))
            tavg = _numbers(mm.get("MTavg"))
            chips = _chips_per_board(mm, len(rates_gh))
            boards += [AsicBoard(index=len(boards) + i, hashrate_hs=rate * 1e9,
                                 temp_board_c=tavg[i] if i < len(tavg) else None,
                                 temp_chip_c=tmax[i] if i < len(tmax) else None, chips=chips)
                       for i, rate in enumerate(rates_gh)]
            temps += [t for t in (to_float(mm.get("TMax")), *tmax) if t]
            states.append(mm.get("SYSTEMSTATU", ""))
        is_mining: bool | None = None
        if any("In Work" in state for state in states):
            is_mining = True
        elif any("In Idle" in state for state in states):
            is_mining = False
        if hashrate_gh is not None and hashrate_gh <= 0:
            is_mining = False
        expected_gh = _total([to_float(mm.get("GHSmm")) for mm in modules])
        env = [t for mm in modules if (t := to_float(mm.get("Temp"))) is not None]
        limit = _total([to_float(mm.get("MPO")) for mm in modules])
        asic = AsicTelemetry(
            expected_hashrate_hs=None if expected_gh is None else expected_gh * 1e9,
            boards=tuple(boards),
            fans_rpm=tuple(fans),
            pools=cgminer_pools(usable(replies, "pools")),
            uptime_s=uptime,
            errors=reply_errors(replies),
            is_mining=is_mining,
            env_temp_c=max(env) if env else None,
        )
        return build_telemetry(device_id, family=cls.family,
                               hashrate_hs=None if hashrate_gh is None else hashrate_gh * 1e9,
                               power_w=power, power_limit_w=limit, asic=asic, temps=temps)

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
