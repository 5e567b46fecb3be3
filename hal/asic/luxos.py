"""LuxOS (Luxor firmware on Antminers): cgminer RPC with multi-commands and a session for writes.

Reads merge into one `summary+stats+pools+power+fans+temps+config` request. Writes need a
session: `session` tells whether one is open, else `logon` opens one; the id is the first
parameter of `curtail` (sleep/wakeup), `profileset` and `switchpool`. Sessions expire on the
miner, so a write that answers "invalid session" logs on again once.
The power target is a profile: the fastest profile whose rated watts fit under the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from hal.asic.antminer import antminer_boards, bmminer_detail, summary_hashrate
from hal.asic.base import Miner, MinerConfig, build_telemetry, usable
from hal.asic.transport import Reply, to_float, to_int
from hal.device import AsicBoard, Capability, Telemetry
from hal.errors import InvalidArgument, NotSupported, PermissionDenied


class LuxosMiner(Miner):
    family = "luxos"
    limit_sets_mode = True  # a power limit is the fastest profile under it
    vendor = "Bitmain (LuxOS)"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "uptime": ("summary",),
        "boards": ("stats", "temps"),
        "expected_hashrate": ("stats",),
        "fans": ("fans",),
        "power": ("power",),
        "power_limit": ("config", "profiles"),
        "pools": ("pools",),
        "is_mining": ("config",),
    }
    capabilities = frozenset({
        Capability.TELEMETRY, Capability.HASHING, Capability.SLEEP_WAKE,
        Capability.SET_POWER_LIMIT, Capability.POOL_SWITCH, Capability.RESTART,
    })

    def __init__(self, config: MinerConfig, version: Reply | None = None) -> None:
        super().__init__(config, version)
        self._session_id: str | None = None

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        hashrate, uptime = summary_hashrate(usable(replies, "summary"))
        boards, stat_fans, expected, temps = antminer_boards(usable(replies, "stats"))
        board_temps = _temps_by_board(usable(replies, "temps"))
        if board_temps:
            boards = [
                AsicBoard(b.index, b.hashrate_hs, b.expected_hashrate_hs,
                          board_temps.get(b.index, b.temp_board_c), b.temp_chip_c, b.chips,
                          b.expected_chips)
                for b in boards
            ]
            temps = temps + list(board_temps.values())
        fans = _fans(usable(replies, "fans")) or stat_fans
        power = None
        power_reply = usable(replies, "power")
        if power_reply is not None:
            for record in power_reply.section("POWER"):
                power = to_float(record.get("Watts"))
        config = _config(usable(replies, "config"))
        curtailed = str(config.get("CurtailMode", "None")) not in ("None", "")
        is_mining: bool | None = None
        if hashrate is not None:
            is_mining = hashrate > 0 and not curtailed
        power_limit = _profile_watts(usable(replies, "profiles"), str(config.get("Profile", "")))
        asic = bmminer_detail(replies, boards, fans, expected, uptime, is_mining)
        return build_telemetry(device_id, family=cls.family, hashrate_hs=hashrate,
                               power_w=power, power_limit_w=power_limit, asic=asic, temps=temps)

    # --- session and writes ----------------------------------------------------------------
    async def _session(self) -> str:
        if self._session_id:
            return self._session_id
        current = await self.rpc.request("session", check=False)
        for record in current.section("SESSION"):
            if record.get("SessionID"):
                self._session_id = str(record["SessionID"])
                return self._session_id
        reply = await self.rpc.request("logon", check=False)
        if not reply.ok:
            raise PermissionDenied(f"{self.id}: LuxOS logon refused: {reply.message}")
        for record in reply.section("SESSION"):
            if record.get("SessionID"):
                self._session_id = str(record["SessionID"])
                return self._session_id
        raise PermissionDenied(f"{self.id}: LuxOS logon gave no session id")

    async def _write(self, command: str, *args: str) -> Reply:
        """A session command; a stale session (expired on the miner) is renewed once."""
        for attempt in range(2):
            session = await self._session()
            reply = await self.rpc.request(command, ",".join([session, *args]), check=False)
            if reply.ok:
                return reply
            if "session" in reply.message.lower() and attempt == 0:
                self._session_id = None
                continue
            return reply.raise_for_status()
        raise PermissionDenied(f"{self.id}: LuxOS session could not be renewed")

    async def async_sleep(self) -> None:
        await self._write("curtail", "sleep")

    async def async_wake(self) -> None:
        await self._write("curtail", "wakeup")

    async def profiles(self) -> list[tuple[str, float, float]]:
        """(name, watts, hashrate TH/s) for each profile the miner offers."""
        reply = await self.rpc.request("profiles")
        out = []
        for record in reply.section("PROFILES"):
            watts = to_float(record.get("Watts"))
            if watts is not None:
                out.append((str(record.get("Profile Name")), watts,
                            to_float(record.get("Hashrate")) or 0.0))
        return out

    async def async_power_limit_range_w(self) -> tuple[float, float] | None:
        """From the lowest to the highest profile's rated watts: a target above the highest
        would silently run at full power, one below the lowest has no profile."""
        watts = [p[1] for p in await self.profiles()]
        return (min(watts), max(watts)) if watts else None

    async def async_set_power_limit(self, watts: float) -> None:
        """The fastest profile whose rated watts fit under `watts`; telemetry's power_limit_w
        then reads that profile's watts (the applied value)."""
        fitting = [p for p in await self.profiles() if p[1] <= watts]
        if not fitting:
            raise InvalidArgument(f"{self.id}: no LuxOS profile fits under {watts:g} W")
        name = max(fitting, key=lambda p: p[1])[0]
        await self._write("profileset", name)

    async def async_power_modes(self) -> tuple[str, ...]:
        return tuple(p[0] for p in await self.profiles())

    async def async_power_mode(self) -> str | None:
        """The profile in force, as `config` reports it."""
        profile = _config(await self.rpc.request("config")).get("Profile")
        return str(profile) if profile else None

    async def async_set_power_mode(self, mode: str) -> None:
        if mode not in await self.async_power_modes():
            raise InvalidArgument(f"{self.id}: no LuxOS profile {mode!r}")
        await self._write("profileset", mode)

    async def async_switch_pool(self, index: int) -> None:
        await self._write("switchpool", str(index))

    async def async_restart(self) -> None:
        try:
            await self._write("resetminer")
        except NotSupported:
            await self._write("rebootdevice")


def _config(reply: Reply | None) -> dict[str, object]:
    if reply is None:
        return {}
    records = reply.section("CONFIG")
    return records[0] if records else {}


def _fans(reply: Reply | None) -> list[int]:
    if reply is None:
        return []
    return [rpm for r in reply.section("FANS") if (rpm := to_int(r.get("RPM"))) is not None]


def _temps_by_board(reply: Reply | None) -> dict[int, float]:
    if reply is None:
        return {}
    out: dict[int, float] = {}
    for record in reply.section("TEMPS"):
        index = to_int(record.get("ID"))
        values = [v for k in ("TopLeft", "TopRight", "BottomLeft", "BottomRight")
                  if (v := to_float(record.get(k))) is not None]
        if index is not None and values:
            out[index] = max(values)
    return out


def _profile_watts(reply: Reply | None, current: str) -> float | None:
    if reply is None or not current:
        return None
    for record in reply.section("PROFILES"):
        if str(record.get("Profile Name")) == current:
            return to_float(record.get("Watts"))
    return None
