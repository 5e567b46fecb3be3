"""What every firmware family shares: the Miner device, the data-field table, the sync bridge.

The pyasic idea: each family declares which commands supply which data field
(`DATA_SOURCES`); one poll sends each needed command once (merged into one multi-command where
the firmware allows it) and a pure function maps the replies to Telemetry. Parsing is separate
from I/O so captured replies can be fed straight into it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from hal.asic.transport import (
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    Reply,
    RpcClient,
    gather_bounded,
)
from hal.device import (
    AsicTelemetry,
    Capability,
    Device,
    DeviceInfo,
    DeviceKind,
    Health,
    HealthState,
    PowerSource,
    Telemetry,
)
from hal.errors import HalError, InvalidArgument, NotSupported, ProtocolError, Timeout

T = TypeVar("T")

DataSources = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class MinerConfig:
    """One miner as the configuration names it; credentials come from options only."""

    host: str
    port: int = DEFAULT_PORT
    family: str = ""
    username: str = ""
    password: str = ""
    web_port: int = 80
    grpc_port: int = 50051  # Braiins OS public API
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    simulated: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def commands_for(sources: DataSources, fields: Iterable[str] | None = None) -> list[str]:
    """The distinct commands that supply `fields` (all fields when None), in table order."""
    wanted = sources.keys() if fields is None else fields
    out: dict[str, None] = {}
    for name in wanted:
        if name not in sources:
            raise InvalidArgument(f"unknown data field {name!r}")
        for command in sources[name]:
            out[command] = None
    return list(out)


def usable(replies: Mapping[str, Reply], command: str) -> Reply | None:
    reply = replies.get(command)
    if reply is None or not reply.ok:
        return None
    return reply


def reply_errors(replies: Mapping[str, Reply]) -> tuple[str, ...]:
    """Commands the firmware refused, kept as telemetry errors instead of hiding the rest."""
    return tuple(
        f"{command}: {reply.message or 'error'}"
        for command, reply in replies.items()
        if not reply.ok
    )


# ---------------------------------------------------------------------------------------------
# Sync bridge: one background event loop serves every blocking call, from any thread.

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_sync_semaphore: asyncio.Semaphore | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _sync_semaphore
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="hal-asic-io", daemon=True)
            thread.start()
            _loop = loop
            _sync_semaphore = None
        return _loop


def run_sync(factory: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Run a coroutine on the shared I/O loop and wait at most `timeout_s` (plus slack)."""
    loop = _background_loop()

    async def bounded() -> T:
        global _sync_semaphore
        if _sync_semaphore is None:
            _sync_semaphore = asyncio.Semaphore(DEFAULT_CONCURRENCY)
        async with _sync_semaphore:
            return await factory()

    future = asyncio.run_coroutine_threadsafe(bounded(), loop)
    try:
        return future.result(timeout=timeout_s + 1.0)
    except concurrent.futures.TimeoutError as exc:
        future.cancel()
        raise Timeout(f"operation did not finish within {timeout_s:g} s") from exc


# ---------------------------------------------------------------------------------------------


class Miner(Device):
    """An ASIC miner reached over its firmware API. Families override the class attributes."""

    kind = DeviceKind.ASIC
    family: ClassVar[str] = "cgminer"
    vendor: ClassVar[str] = ""
    data_sources: ClassVar[DataSources] = {}
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING})

    def __init__(self, config: MinerConfig, version: Reply | None = None) -> None:
        self.config = config
        self.id = f"asic/{config.address}"
        self.rpc = RpcClient(
            config.host,
            config.port,
            timeout_s=config.timeout_s,
            connect_timeout_s=config.connect_timeout_s,
            max_reply_bytes=config.max_reply_bytes,
        )
        self._version = version
        self._last: Telemetry | None = None

    # --- parsing: families implement this pure function -----------------------------------
    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        raise NotImplementedError

    @classmethod
    def parse_replies(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        """parse_telemetry, with any surprise in the data turned into ProtocolError(raw)."""
        try:
            return cls.parse_telemetry(device_id, replies)
        except HalError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raw = b"".join(dict.fromkeys(r.raw for r in replies.values()))
            raise ProtocolError(
                f"{device_id}: unexpected reply shape ({type(exc).__name__}: {exc})", raw
            ) from exc

    @classmethod
    def parse_info(cls, device_id: str, version: Reply | None) -> DeviceInfo:
        model = ""
        firmware = ""
        if version is not None:
            for record in version.section("VERSION"):
                model = str(record.get("Type") or record.get("PROD") or record.get("MODEL") or "")
                firmware = str(
                    record.get("Miner") or record.get("CGMiner") or record.get("BMMiner") or ""
                )
        return DeviceInfo(id=device_id, kind=DeviceKind.ASIC, name=model or cls.family,
                          vendor=cls.vendor, model=model, firmware_version=firmware)

    # --- async API ------------------------------------------------------------------------
    async def fetch(self, commands: Sequence[str]) -> dict[str, Reply]:
        return await self.rpc.multi(list(commands))

    async def poll(self, fields: Iterable[str] | None = None) -> Telemetry:
        """One reading: each needed command sent once."""
        replies = await self.fetch(commands_for(self.data_sources, fields))
        telemetry = self.parse_replies(self.id, replies)
        self._last = telemetry
        return telemetry

    async def async_info(self) -> DeviceInfo:
        if self._version is None:
            self._version = await self.rpc.request("version", check=False)
        info = self.parse_info(self.id, self._version)
        if self.config.simulated:
            info = DeviceInfo(**{**_info_dict(info), "simulated": True})
        return info

    async def async_sleep(self) -> None:
        raise NotSupported(f"{self.id}: sleep is not supported by {self.family}")

    async def async_wake(self) -> None:
        raise NotSupported(f"{self.id}: wake is not supported by {self.family}")

    async def async_set_power_limit(self, watts: float) -> None:
        raise NotSupported(f"{self.id}: {self.family} has no power target")

    async def async_power_limit_range_w(self) -> tuple[float, float] | None:
        """(lowest, highest) power target in watts this miner accepts; None: no watt target."""
        return None

    async def async_power_modes(self) -> tuple[str, ...]:
        """The firmware's named low-power modes (profiles, work modes); () when it has none."""
        return ()

    async def async_set_power_mode(self, mode: str) -> None:
        raise NotSupported(f"{self.id}: {self.family} has no named power modes")

    async def async_power_mode(self) -> str | None:
        """The power mode in force, one of async_power_modes(); None where it cannot be read."""
        return None

    async def async_switch_pool(self, index: int) -> None:
        raise NotSupported(f"{self.id}: pool switch is not supported by {self.family}")

    async def async_restart(self) -> None:
        raise NotSupported(f"{self.id}: restart is not supported by {self.family}")

    # --- sync Device API ------------------------------------------------------------------
    def _sync(self, factory: Callable[[], Awaitable[T]], budget_s: float | None = None) -> T:
        return run_sync(factory, budget_s if budget_s is not None else self._budget_s())

    def _budget_s(self) -> float:
        # A poll may fall back to one connection per command.
        return self.config.timeout_s * max(1, len(commands_for(self.data_sources)))

    def info(self) -> DeviceInfo:
        return self._sync(self.async_info, self.config.timeout_s)

    def telemetry(self) -> Telemetry:
        return self._sync(self.poll)

    def health(self) -> Health:
        last = self._last
        if last is None:
            return Health(HealthState.UNKNOWN, "not polled yet")
        return last.health

    def sleep(self) -> None:
        self._sync(self.async_sleep, self._control_budget_s())

    def wake(self) -> None:
        self._sync(self.async_wake, self._control_budget_s())

    def set_power_limit(self, watts: float) -> None:
        """Refused (InvalidArgument naming the range) unless within power_limit_range_w();
        telemetry's power_limit_w then shows what the firmware applied."""
        if isinstance(watts, bool) or not isinstance(watts, (int, float)) \
                or not math.isfinite(watts) or watts <= 0:
            raise InvalidArgument(f"{self.id}: power limit must be a positive number of watts, "
                                  f"got {watts!r}")
        if Capability.SET_POWER_LIMIT not in self.capabilities:
            raise NotSupported(f"{self.id}: {self.family} has no power target")

        async def apply() -> None:
            check_range(self.id, watts, await self.async_power_limit_range_w())
            await self.async_set_power_limit(watts)

        self._sync(apply, self._control_budget_s())

    def power_limit_range_w(self) -> tuple[float, float] | None:
        return self._sync(self.async_power_limit_range_w, self._control_budget_s())

    def power_modes(self) -> tuple[str, ...]:
        return self._sync(self.async_power_modes, self._control_budget_s())

    def set_power_mode(self, mode: str) -> None:
        self._sync(lambda: self.async_set_power_mode(mode), self._control_budget_s())

    def power_mode(self) -> str | None:
        return self._sync(self.async_power_mode, self._control_budget_s())

    def switch_pool(self, index: int) -> None:
        if index < 0:
            raise InvalidArgument(f"{self.id}: pool index must be >= 0")
        self._sync(lambda: self.async_switch_pool(index), self._control_budget_s())

    def restart(self) -> None:
        self._sync(self.async_restart, self._control_budget_s())

    def _control_budget_s(self) -> float:
        return self.config.timeout_s * 4


def check_range(device_id: str, watts: float, bounds: tuple[float, float] | None) -> None:
    if bounds is not None and not bounds[0] <= watts <= bounds[1]:
        raise InvalidArgument(f"{device_id}: power limit {watts:g} W is outside the range this "
                              f"miner accepts, {bounds[0]:g}-{bounds[1]:g} W")


def _info_dict(info: DeviceInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__dataclass_fields__}


def build_telemetry(
    device_id: str,
    *,
    family: str,
    hashrate_hs: float | None,
    power_w: float | None = None,
    power_limit_w: float | None = None,
    power_source: PowerSource | None = None,
    asic: AsicTelemetry,
    temps: Sequence[float] = (),
    algorithm: str = "sha256d",
) -> Telemetry:
    """Common assembly: health from mining state and errors, max temperature as temp_c."""
    if asic.is_mining is False:
        health = Health(HealthState.DEGRADED, "not mining")
    elif asic.errors:
        health = Health(HealthState.DEGRADED, asic.errors[0])
    else:
        health = Health(HealthState.HEALTHY)
    valid_temps = [t for t in temps if t is not None and t > 0]
    return Telemetry(
        device_id=device_id,
        kind=DeviceKind.ASIC,
        health=health,
        power_w=power_w,
        power_source=power_source if power_w is not None else None,
        power_limit_w=power_limit_w,
        temp_c=max(valid_temps) if valid_temps else None,
        hashrate_hs=hashrate_hs,
        asic=AsicTelemetry(**{**{f: getattr(asic, f) for f in asic.__dataclass_fields__},
                              "firmware_family": family,
                              "algorithm": asic.algorithm or algorithm}),
    )


async def poll_all(
    miners: Sequence[Miner], concurrency: int = DEFAULT_CONCURRENCY
) -> list[Telemetry | HalError]:
    """Poll a fleet concurrently; one miner's failure is its entry, never the whole call's."""
    results = await gather_bounded([m.poll() for m in miners], concurrency)
    return [r if isinstance(r, (Telemetry, HalError)) else HalError(str(r)) for r in results]


def poll_all_sync(miners: Sequence[Miner], concurrency: int = DEFAULT_CONCURRENCY,
                  timeout_s: float = 30.0) -> list[Telemetry | HalError]:
    return run_sync(lambda: poll_all(miners, concurrency), timeout_s)
