"""Antminer on stock Bitmain firmware: bmminer RPC for reads, the web CGI for control.

Reads: `stats` (realtime rate, uptime, model, boards, chips, temps, fans, expected rate) and
`pools`; a `summary` reply, where given, supplies the rate and uptime first. Stock firmware has
no power reading and no watt target: power_w is the model's nameplate estimate
(PowerSource.ESTIMATED, hal.asic.power) and set_power_limit raises NotSupported. Control goes
through `/cgi-bin/set_miner_conf.cgi` with HTTP digest auth; the firmware replaces its whole
config with what we send, so we read `get_miner_conf.cgi` first and send what its own web page
sends, with the new `miner-mode` (0 normal, 1 sleep, 3 low power); a wake puts back the mode
the miner ran in before its sleep.

Units follow the model (`Type`): bmminer's "GHS" keys count GH/s of SHA-256d, but MH/s on
scrypt, X11 and Ethash models and kSol/s on Equihash ones (hal.asic.power.RATE_UNIT_HS).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hal.asic import webclient
from hal.asic.base import Miner, MinerConfig, build_telemetry, reply_errors, usable
from hal.asic.power import RATE_UNIT_HS, algorithm_of, estimate_power_w
from hal.asic.transport import Reply, dash_list, to_float, to_int
from hal.device import AsicBoard, AsicTelemetry, Capability, PoolStatus, PowerSource, Telemetry
from hal.errors import InvalidArgument, ProtocolError

MINER_MODES = {"normal": 0, "sleep": 1, "low": 3}


def rate_to_hs(value: Any, unit: str) -> float | None:
    number = to_float(value)
    if number is None:
        return None
    scale = {"H": 1.0, "KH": 1e3, "MH": 1e6, "GH": 1e9, "TH": 1e12, "PH": 1e15}
    return number * scale.get(unit.upper().rstrip("/S"), 1e9)


def model_of(*replies: Reply | None) -> str:
    """The model (`Type`) from a `stats` or `version` reply; "" when neither says."""
    for reply in replies:
        if reply is None:
            continue
        for section in ("STATS", "VERSION"):
            for record in reply.section(section):
                if record.get("Type"):
                    return str(record["Type"])
    return ""


def ghs_scale(algorithm: str) -> float:
    """What bmminer's "GHS" keys really count, in the algorithm's own hashes per second: GH/s
    on SHA-256d miners, MH/s on scrypt (L3+: "GHS 5s":"504.56"), X11 and Ethash (E3) miners,
    kSol/s on Equihash ones (Z11)."""
    return RATE_UNIT_HS.get(algorithm, RATE_UNIT_HS["sha256d"])


MAX_FAN_SLOTS = 8  # bmminer reports fan1..fan8; an S9 or E3 spins its two fans in slots 5 and 6


def antminer_boards(stats: Reply | None, algorithm: str = "sha256d"
                    ) -> tuple[list[AsicBoard], list[int], float | None, list[float]]:
    """Boards, fans, expected hashrate and all temps from a bmminer-style `stats` reply.

    Per chain N: the PCB sensors (`temp_pcbN`, else `tempN`) and the chip sensors
    (`temp_chipN` and `temp2_N`: an S9 or a Z11 reports its chips only as `temp2_N`, 10-30 °C
    above the PCB)."""
    detail = stats_detail(stats)
    if detail is None:
        return [], [], None, []
    unit = detail.get("rate_unit")
    scale = ghs_scale(algorithm)

    def rate(value: Any) -> float | None:
        return rate_to_hs(value, str(unit)) if unit else _scaled(value, scale)

    boards: list[AsicBoard] = []
    temps: list[float] = []
    for index in range(1, 17):
        if f"chain_acn{index}" not in detail and f"chain_rate{index}" not in detail:
            continue
        chips = to_int(detail.get(f"chain_acn{index}"))
        board_rate = rate(detail.get(f"chain_rate{index}"))
        if not chips and not board_rate:
            continue  # empty slot ("chain_acn4": 0, "chain_rate4": "")
        chip_temps = [t for t in dash_list(detail.get(f"temp_chip{index}")) if t > 0]
        chip_temps += [t for t in (to_float(detail.get(f"temp2_{index}")),) if t and t > 0]
        pcb_temps = [t for t in dash_list(detail.get(f"temp_pcb{index}")) if t > 0]
        if not pcb_temps and to_float(detail.get(f"temp{index}")):
            pcb_temps = [float(detail[f"temp{index}"])]
        temps += chip_temps + pcb_temps
        boards.append(AsicBoard(
            index=index - 1,
            hashrate_hs=board_rate,
            temp_board_c=max(pcb_temps) if pcb_temps else None,
            temp_chip_c=max(chip_temps) if chip_temps else None,
            chips=chips,
        ))
    expected = rate(detail.get("total_rateideal"))
    return boards, bmminer_fans(detail), expected, temps


def _scaled(value: Any, scale: float) -> float | None:
    number = to_float(value)
    return None if number is None else number * scale


def bmminer_fans(detail: Mapping[str, Any]) -> list[int]:
    """The fans bmminer reports: every slot (fan1..fan8) that spins, in slot order, then a 0
    for each fan `fan_num` counts that does not (a stopped fan is news, not noise). An S9
    says fan_num 2 with fan1..fan4 at 0 and its fans in slots 5 and 6."""
    spinning = [rpm for index in range(1, MAX_FAN_SLOTS + 1)
                if (rpm := to_int(detail.get(f"fan{index}"))) is not None and rpm > 0]
    counted = to_int(detail.get("fan_num")) or 0
    return spinning + [0] * max(0, counted - len(spinning))


def cgminer_pools(reply: Reply | None) -> tuple[PoolStatus, ...]:
    if reply is None:
        return ()
    pools = []
    for record in reply.section("POOLS"):
        pools.append(PoolStatus(
            url=str(record.get("URL", "")),
            user=str(record.get("User", "")),
            status=str(record.get("Status", "")),
            active=_truthy(record.get("Stratum Active")),
            accepted=to_int(record.get("Accepted")),
            rejected=to_int(record.get("Rejected")),
        ))
    return tuple(pools)


def _truthy(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "y", "yes", "1")


def record_hashrate(record: Mapping[str, Any], algorithm: str = "sha256d"
                    ) -> tuple[float | None, int | None]:
    """Realtime hashrate and uptime from a record with cgminer's keys (GHS or MHS)."""
    ghs = ghs_scale(algorithm)
    uptime = to_int(record.get("Elapsed"))
    for key, scale in (("GHS 5s", ghs), ("MHS 5s", 1e6), ("GHS av", ghs), ("MHS av", 1e6)):
        value = to_float(record.get(key))
        if value is not None:
            return value * scale, uptime
    return None, uptime


def summary_hashrate(reply: Reply | None, algorithm: str = "sha256d"
                     ) -> tuple[float | None, int | None]:
    """Realtime hashrate and uptime from `summary`."""
    records = reply.section("SUMMARY") if reply is not None else []
    return record_hashrate(records[0], algorithm) if records else (None, None)


def stats_detail(stats: Reply | None) -> dict[str, Any] | None:
    """bmminer's detail record in `stats` (the one with chain and fan fields)."""
    records = stats.section("STATS") if stats is not None else []
    return next((r for r in records if "chain_rate1" in r or "fan_num" in r), None)


def bmminer_detail(
    replies: Mapping[str, Reply], boards: Sequence[AsicBoard], fans: Sequence[int],
    expected_hashrate_hs: float | None, uptime_s: int | None, is_mining: bool | None,
) -> AsicTelemetry:
    """The ASIC detail of bmminer-derived firmware (stock Antminer, LuxOS)."""
    return AsicTelemetry(
        expected_hashrate_hs=expected_hashrate_hs,
        boards=tuple(boards),
        fans_rpm=tuple(fans),
        pools=cgminer_pools(usable(replies, "pools")),
        uptime_s=uptime_s,
        errors=reply_errors(replies),
        is_mining=is_mining,
    )


class AntminerMiner(Miner):
    family = "antminer"
    vendor = "Bitmain"
    # bmminer's `stats` carries the realtime rate and uptime too ("GHS 5s", "Elapsed"), so a
    # poll is two connections (stock firmware refuses `a+b`), not three.
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("stats",),
        "uptime": ("stats",),
        "expected_hashrate": ("stats",),
        "boards": ("stats",),
        "fans": ("stats",),
        "pools": ("pools",),
    }
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING, Capability.SLEEP_WAKE,
                              Capability.RESTART})

    def __init__(self, config: MinerConfig, version: Reply | None = None) -> None:
        super().__init__(config, version)
        self._mode_before_sleep: str | None = None  # what async_wake puts back

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        stats = usable(replies, "stats")
        model = model_of(stats)
        algorithm = algorithm_of(model)
        hashrate, uptime = summary_hashrate(usable(replies, "summary"), algorithm)
        if hashrate is None and (detail := stats_detail(stats)) is not None:
            hashrate, uptime = record_hashrate(detail, algorithm)
        boards, fans, expected, temps = antminer_boards(stats, algorithm)
        board_sum = sum(b.hashrate_hs or 0.0 for b in boards)
        if hashrate is None and boards:
            hashrate = board_sum
        elif hashrate and board_sum and 500 <= hashrate / board_sum <= 2000:
            # Some Z11 firmware ("Chipless") sends its total in Sol/s under "GHS 5s" and its
            # chain rates in kSol/s: the boards say which unit the total is in.
            hashrate /= 1000
        is_mining = None if hashrate is None else hashrate > 0
        asic = bmminer_detail(replies, boards, fans, expected, uptime, is_mining)
        # Stock firmware measures no power: estimate it from the model's nameplate.
        power = estimate_power_w(model, hashrate)
        return build_telemetry(device_id, family=cls.family, hashrate_hs=hashrate,
                               power_w=power, power_source=PowerSource.ESTIMATED,
                               asic=asic, temps=temps, algorithm=algorithm)

    # --- web control -----------------------------------------------------------------------
    def _web(self) -> webclient.DigestClient:
        return webclient.DigestClient(
            self.config.host, self.config.web_port,
            self.config.username or "root", self.config.password or "root",
            timeout_s=self.config.timeout_s,
        )

    async def get_miner_conf(self) -> dict[str, Any]:
        _status, body = await self._web().request("GET", "/cgi-bin/get_miner_conf.cgi")
        return _json_object(body, "get_miner_conf")

    async def set_mode(self, mode: str) -> None:
        """Switch `miner-mode`, sending what the firmware's own web page sends: the pools, the
        fan and frequency settings and the mode, never a stale `bitmain-work-mode` beside it
        (the firmware replaces its whole configuration with the body)."""
        if mode not in MINER_MODES:
            raise InvalidArgument(f"{self.id}: unknown Antminer mode {mode!r}; "
                                  f"use {sorted(MINER_MODES)}")
        conf = await self.get_miner_conf()
        if mode == "sleep":
            # Sleep replaces the mode; wake puts back the one the miner had (low stays low).
            current = conf_mode(conf)
            if current is not None and current != "sleep":
                self._mode_before_sleep = current
        else:
            self._mode_before_sleep = None
        body = web_page_conf(conf, MINER_MODES[mode])
        _status, reply = await self._web().request(
            "POST", "/cgi-bin/set_miner_conf.cgi", json.dumps(body).encode(),
            content_type="application/json",
        )
        answer = _json_object(reply, "set_miner_conf")
        if str(answer.get("stats", "")).lower() != "success":
            raise ProtocolError(f"{self.id}: set_miner_conf refused: {answer}", reply)

    async def async_sleep(self) -> None:
        await self.set_mode("sleep")

    async def async_wake(self) -> None:
        """Wake into the mode the miner ran in before this object put it to sleep ("low"
        stays "low"); "normal" when that is not known (it slept before we met it)."""
        await self.set_mode(self._mode_before_sleep or "normal")

    def mode_before_sleep(self) -> str | None:
        return self._mode_before_sleep

    async def async_power_modes(self) -> tuple[str, ...]:
        return tuple(MINER_MODES)

    async def async_power_mode(self) -> str | None:
        return conf_mode(await self.get_miner_conf())

    async def async_set_power_mode(self, mode: str) -> None:
        await self.set_mode(mode)

    async def async_restart(self) -> None:
        await self._web().request("GET", "/cgi-bin/reboot.cgi")


def conf_mode(conf: Mapping[str, Any]) -> str | None:
    """The mode get_miner_conf.cgi says the miner runs in (`bitmain-work-mode`, else
    `miner-mode`), as a MINER_MODES name; None for a number we do not know."""
    number = str(conf.get("bitmain-work-mode", conf.get("miner-mode", "")))
    return next((name for name, value in MINER_MODES.items() if str(value) == number), None)


def web_page_conf(conf: Mapping[str, Any], miner_mode: int) -> dict[str, Any]:
    """The body the stock web page posts to set_miner_conf.cgi, from get_miner_conf's answer."""
    pools = [{"url": str(p.get("url", "")), "user": str(p.get("user", "")),
              "pass": str(p.get("pass", ""))}
             for p in conf.get("pools", []) if isinstance(p, Mapping)]
    return {
        "bitmain-fan-ctrl": bool(conf.get("bitmain-fan-ctrl", False)),
        "bitmain-fan-pwm": str(conf.get("bitmain-fan-pwm", "100")),
        "freq-level": str(conf.get("freq-level", conf.get("bitmain-freq-level", "100"))),
        "miner-mode": miner_mode,
        "pools": pools,
    }


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise ProtocolError(f"{what}: reply is not JSON", body) from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: reply is not a JSON object", body)
    return value
