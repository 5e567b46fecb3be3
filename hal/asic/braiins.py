"""Braiins OS (bosminer/BOSer): telemetry through its cgminer-compatible RPC on port 4028.

Reads `summary`, `devs`, `pools`, `fans`, `temps`, `tunerstatus` in one multi-command. Control
on Braiins OS goes through its gRPC API (braiins.bos.v1), which this backend does not speak
yet: sleep/wake/power target raise NotSupported rather than pretending.
`parse_grpc_json` maps the gRPC replies (as JSON, like the captures) for when it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from hal.asic.antminer import cgminer_pools, summary_hashrate
from hal.asic.base import Miner, build_telemetry, reply_errors, usable
from hal.asic.transport import Reply, to_float, to_int
from hal.device import AsicBoard, AsicTelemetry, Capability, Telemetry


class BraiinsMiner(Miner):
    family = "braiins"
    vendor = "Braiins OS"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "uptime": ("summary",),
        "boards": ("devs", "temps"),
        "fans": ("fans",),
        "power": ("tunerstatus",),
        "power_limit": ("tunerstatus",),
        "pools": ("pools",),
    }
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING})

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        grpc = {k: r.data for k, r in replies.items()
                if k in ("miner_stats", "miner_hw_hashboards", "cooling_state")}
        if grpc:
            return parse_grpc_json(device_id, grpc, reply_errors(replies))
        hashrate, uptime = summary_hashrate(usable(replies, "summary"))
        temps_by_board: dict[int, tuple[float | None, float | None]] = {}
        temps_reply = usable(replies, "temps")
        all_temps: list[float] = []
        if temps_reply is not None:
            for record in temps_reply.section("TEMPS"):
                board = to_float(record.get("Board"))
                chip = to_float(record.get("Chip"))
                index = to_int(record.get("ID"))
                if index is not None:
                    temps_by_board[index] = (board, chip)
                all_temps += [t for t in (board, chip) if t]
        boards = []
        devs = usable(replies, "devs")
        for record in devs.section("DEVS") if devs is not None else []:
            index = to_int(record.get("ID", record.get("ASC"))) or 0
            rate = to_float(record.get("MHS 5s", record.get("MHS 1m")))
            board_t, chip_t = temps_by_board.get(index, (None, None))
            boards.append(AsicBoard(index=index,
                                    hashrate_hs=None if rate is None else rate * 1e6,
                                    temp_board_c=board_t, temp_chip_c=chip_t))
        fans_reply = usable(replies, "fans")
        fans = tuple(rpm for r in (fans_reply.section("FANS") if fans_reply else [])
                     if (rpm := to_int(r.get("RPM"))) is not None)
        power = limit = None
        tuner = usable(replies, "tunerstatus")
        for record in tuner.section("TUNERSTATUS") if tuner is not None else []:
            power = to_float(record.get("ApproximateMinerPowerConsumption"))
            limit = to_float(record.get("PowerLimit"))
        asic = AsicTelemetry(
            boards=tuple(boards), fans_rpm=fans, pools=cgminer_pools(usable(replies, "pools")),
            uptime_s=uptime, errors=reply_errors(replies),
            is_mining=None if hashrate is None else hashrate > 0,
        )
        return build_telemetry(device_id, family=cls.family, hashrate_hs=hashrate,
                               power_w=power, power_limit_w=limit, asic=asic, temps=all_temps)


def _ghs(node: Any) -> float | None:
    if isinstance(node, dict):
        for key, scale in (("gigahash_per_second", 1e9), ("megahash_per_second", 1e6),
                           ("terahash_per_second", 1e12)):
            if key in node and (v := to_float(node[key])) is not None:
                return v * scale
    return None


def parse_grpc_json(device_id: str, data: Mapping[str, Any],
                    errors: tuple[str, ...] = ()) -> Telemetry:
    """Braiins OS gRPC replies (MinerStats, Hashboards, CoolingState) rendered as JSON."""
    stats = data.get("miner_stats") or {}
    miner_stats = stats.get("miner_stats", {}) if isinstance(stats, dict) else {}
    real = miner_stats.get("real_hashrate", {}) if isinstance(miner_stats, dict) else {}
    hashrate = _ghs(real.get("last_5s")) or _ghs(real.get("last_15s")) if real else None
    expected = _ghs(miner_stats.get("nominal_hashrate")) if isinstance(miner_stats, dict) else None
    power = None
    power_stats = stats.get("power_stats", {}) if isinstance(stats, dict) else {}
    if isinstance(power_stats, dict):
        consumption = power_stats.get("approximated_consumption", {})
        if isinstance(consumption, dict):
            power = to_float(consumption.get("watt"))
    boards: list[AsicBoard] = []
    hw = data.get("miner_hw_hashboards") or {}
    for item in hw.get("hashboards", []) if isinstance(hw, dict) else []:
        if not isinstance(item, dict):
            continue
        board_stats = item.get("stats", {}) if isinstance(item.get("stats"), dict) else {}
        rate = board_stats.get("real_hashrate", {}) if board_stats else {}
        board_temp = item.get("board_temp") or item.get("highest_chip_temp") or {}
        chip_temp = item.get("highest_chip_temp") or {}
        boards.append(AsicBoard(
            index=to_int(item.get("id")) or len(boards),
            hashrate_hs=_ghs(rate.get("last_5s")) if isinstance(rate, dict) else None,
            temp_board_c=to_float(board_temp.get("temperature", {}).get("degree_c"))
            if isinstance(board_temp, dict) and isinstance(board_temp.get("temperature"), dict)
            else to_float(board_temp.get("degree_c")) if isinstance(board_temp, dict) else None,
            temp_chip_c=to_float(chip_temp.get("temperature", {}).get("degree_c"))
            if isinstance(chip_temp, dict) and isinstance(chip_temp.get("temperature"), dict)
            else None,
            chips=to_int(item.get("chips_count")),
        ))
    cooling = data.get("cooling_state") or {}
    fans = tuple(rpm for f in (cooling.get("fans", []) if isinstance(cooling, dict) else [])
                 if isinstance(f, dict) and (rpm := to_int(f.get("rpm"))) is not None)
    temps = [t for b in boards for t in (b.temp_board_c, b.temp_chip_c) if t]
    asic = AsicTelemetry(expected_hashrate_hs=expected, boards=tuple(boards), fans_rpm=fans,
                         errors=errors, is_mining=None if hashrate is None else hashrate > 0)
    return build_telemetry(device_id, family="braiins", hashrate_hs=hashrate, power_w=power,
                           asic=asic, temps=temps)


class CgminerMiner(BraiinsMiner):
    """Any other cgminer-API firmware: the common summary/devs/pools reads, nothing more."""

    family = "cgminer"
    vendor = ""
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "uptime": ("summary",),
        "boards": ("devs",),
        "pools": ("pools",),
    }
