"""What every firmware family shares: the Miner device, the data-field table, the sync bridge.

The pyasic idea: each family declares which commands supply which data field
(`DATA_SOURCES`); one poll sends each needed command once (merged into one multi-command where
the firmware allows it) and a pure function maps the replies to Telemetry. Parsing is separate
from I/O so captured replies can be fed straight into it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from hal.asic.transport import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    Reply,
    RpcClient,
    as_control,
    fd_headroom,
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


# How long a reading may wait in its event loop's request line, on top of its own budget.
LINE_ALLOWANCE_S = 10.0

# ---------------------------------------------------------------------------------------------
# Sync bridge: one background event loop runs the blocking API's calls, from any thread.
# Nothing on it is rationed: a hung miner's call waits on its own socket and holds no place
# another miner's call needs; every call ends at its own deadline, its sockets closed.

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="hal-asic-io", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def _refuse_own_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is loop:
        raise RuntimeError("a blocking hal.asic call from the HAL's own I/O loop would wait "
                           "for itself; use the async API (telemetry_async, async_*) there")


async def _within(factory: Callable[[], Awaitable[T]], timeout_s: float, what: str) -> T:
    """`factory()` cut off at `timeout_s`: cancelled, so its connections close, and Timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            return await factory()
    except TimeoutError as exc:
        raise Timeout(f"{what} did not finish within {timeout_s:g} s") from exc


def run_sync(factory: Callable[[], Awaitable[T]], timeout_s: float,
             what: str = "operation") -> T:
    """Run a coroutine on the shared I/O loop; at `timeout_s` it is cancelled (its sockets
    closed) and this raises Timeout."""
    loop = _background_loop()
    _refuse_own_loop(loop)
    future = asyncio.run_coroutine_threadsafe(_within(factory, timeout_s, what), loop)
    try:
        return future.result(timeout=timeout_s + 1.0)
    except concurrent.futures.TimeoutError as exc:  # the loop itself is stalled
        future.cancel()
        raise Timeout(f"{what} did not finish within {timeout_s:g} s") from exc


@dataclass(slots=True)
class _Flight(Generic[T]):
    future: concurrent.futures.Future[T]
    loop: asyncio.AbstractEventLoop
    generation: int
    ends_at: float  # monotonic: its deadline, plus a second for the loop to settle it
    handle: object  # keeps its task referenced while it runs
    waiters: int = 1  # callers waiting for it now

    def alive(self) -> bool:
        return (not self.future.done() and not self.loop.is_closed()
                and time.monotonic() < self.ends_at)


class SingleFlight(Generic[T]):
    """At most one run of an operation in flight, which any thread or event loop may join.

    A run starts on the event loop of the caller that finds none in flight (the HAL's I/O
    loop for blocking callers) and ends at its own deadline, cancelled there so its sockets
    close; a caller that gives up earlier does not cancel it for the others, but once the
    last async caller is cancelled (its own deadline, shorter than the run's) the run is
    abandoned at once, its sockets closed, as nobody waits for it any more. `advance()` marks
    the runs in flight as begun before a change (a control sent to the device): a caller after
    it waits such a run out and starts a fresh one, so it never gets a reading from before."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lock = threading.Lock()
        self._flight: _Flight[T] | None = None
        self._generation = 0

    def advance(self) -> None:
        with self._lock:
            self._generation += 1

    @property
    def in_flight(self) -> bool:
        with self._lock:
            return self._flight is not None and self._flight.alive()

    def _join_or_start(self, run: Callable[[], Awaitable[T]], budget_s: float,
                       loop: asyncio.AbstractEventLoop) -> tuple[_Flight[T], bool]:
        """(the run to wait for, whether it is fresh: begun after the last change); the
        caller counts among its waiters until it calls _leave."""
        with self._lock:
            flight = self._flight
            if flight is not None and flight.alive():
                flight.waiters += 1
                return flight, flight.generation == self._generation
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            future.set_running_or_notify_cancel()  # no joiner can cancel it for the others
            settle = self._settle(run, budget_s, future)
            handle: object
            if _running_loop() is loop:
                handle = loop.create_task(settle)
            else:
                handle = asyncio.run_coroutine_threadsafe(settle, loop)
            flight = self._flight = _Flight(future, loop, self._generation,
                                            time.monotonic() + budget_s + 1.0, handle)
            return flight, True

    def _leave(self, flight: _Flight[T], cancelled: bool) -> None:
        """A caller stops waiting; the last one, cancelled, abandons the run."""
        with self._lock:
            flight.waiters -= 1
            if not (cancelled and flight.waiters == 0 and not flight.future.done()):
                return
            if self._flight is flight:
                self._flight = None  # the next caller starts afresh
        handle = flight.handle
        if isinstance(handle, concurrent.futures.Future):
            handle.cancel()
        elif isinstance(handle, asyncio.Task) and not flight.loop.is_closed():
            if _running_loop() is flight.loop:
                handle.cancel()
            else:
                flight.loop.call_soon_threadsafe(handle.cancel)

    async def _settle(self, run: Callable[[], Awaitable[T]], budget_s: float,
                      future: concurrent.futures.Future[T]) -> None:
        try:
            result = await _within(run, budget_s, self.what)
        except asyncio.CancelledError:
            future.set_exception(Timeout(f"{self.what} abandoned: nobody waits for it any "
                                         f"more, or its event loop stopped"))
            raise
        except Exception as exc:  # every error is the joiners' to see
            future.set_exception(exc)
        else:
            future.set_result(result)

    async def run_async(self, run: Callable[[], Awaitable[T]], budget_s: float) -> T:
        loop = asyncio.get_running_loop()
        while True:
            flight, fresh = self._join_or_start(run, budget_s, loop)
            cancelled = False
            try:
                if fresh:
                    return await asyncio.wrap_future(flight.future)
                with contextlib.suppress(Exception):  # begun before a change: wait it out
                    await asyncio.wrap_future(flight.future)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                self._leave(flight, cancelled)

    def run_blocking(self, run: Callable[[], Awaitable[T]], budget_s: float) -> T:
        loop = _background_loop()
        _refuse_own_loop(loop)
        give_up = time.monotonic() + 2 * (budget_s + 1.0)  # a stale run, then a fresh one
        while True:
            flight, fresh = self._join_or_start(run, budget_s, loop)
            try:
                result = flight.future.result(timeout=max(0.0, give_up - time.monotonic()))
            except concurrent.futures.TimeoutError as exc:
                raise Timeout(f"{self.what} did not finish within {budget_s:g} s") from exc
            except Exception:
                if fresh:
                    raise
                continue
            finally:
                self._leave(flight, cancelled=False)
            if fresh:
                return result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# ---------------------------------------------------------------------------------------------


class Miner(Device):
    """An ASIC miner reached over its firmware API. Families override the class attributes.

    I/O: a reading is one `poll()` on an event loop: the caller's with `telemetry_async()`
    (async_io), the HAL's own I/O loop with the blocking `telemetry()`. A miner has at most one
    reading in flight: a caller finding one joins it, unless a control was sent since it began;
    it ends at its deadline (`read_budget_s()`), cancelled so its connections close. Controls
    (sleep, wake, limits, modes) never wait for a reading, nor for any other miner: the
    blocking ones skip the event loop's request line (hal.asic.transport.request_slot); a
    caller of the async_* controls on its own loop does so within `as_control()`."""

    kind = DeviceKind.ASIC
    async_io = True
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
        self._reading: SingleFlight[Telemetry] = SingleFlight(f"{self.id}: reading")

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

    # --- readings ---------------------------------------------------------------------------
    def read_budget_s(self) -> float:
        """A reading's deadline, a safety net: each request already ends `timeout_s` after it
        gets its place in the loop's line (request_slot); a poll may fall back to one
        request per command, and with thousands of miners read at once the line itself may
        take seconds, which is no fault of the miner's."""
        return self.config.timeout_s * max(1, len(commands_for(self.data_sources))) \
            + LINE_ALLOWANCE_S

    async def telemetry_async(self) -> Telemetry:
        """One reading on the calling event loop, or the one in flight (see the class)."""
        return await self._reading.run_async(self.poll, self.read_budget_s())

    def telemetry(self) -> Telemetry:
        return self._reading.run_blocking(self.poll, self.read_budget_s())

    @property
    def reading_in_flight(self) -> bool:
        return self._reading.in_flight

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a control: readings begun before or during it are not joined after it."""
        self._reading.advance()
        try:
            yield
        finally:
            self._reading.advance()

    # --- sync Device API ------------------------------------------------------------------
    def _sync(self, factory: Callable[[], Awaitable[T]], budget_s: float,
              what: str = "operation") -> T:
        """A control, or a read that decides one: its requests skip the readings' line."""
        async def first() -> T:
            with as_control():
                return await factory()

        return run_sync(first, budget_s, f"{self.id}: {what}")

    def _control(self, factory: Callable[[], Awaitable[T]], what: str) -> T:
        with self._changing():
            return self._sync(factory, self._control_budget_s(), what)

    def info(self) -> DeviceInfo:
        return self._sync(self.async_info, self.config.timeout_s, "info")

    async def info_async(self) -> DeviceInfo:
        """info() on the calling event loop (its first call asks the miner; then none do)."""
        return await _within(self.async_info, self.config.timeout_s, f"{self.id}: info")

    def health(self) -> Health:
        last = self._last
        if last is None:
            return Health(HealthState.UNKNOWN, "not polled yet")
        return last.health

    def sleep(self) -> None:
        self._control(self.async_sleep, "sleep")

    def wake(self) -> None:
        self._control(self.async_wake, "wake")

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

        self._control(apply, "power limit")

    def power_limit_range_w(self) -> tuple[float, float] | None:
        return self._sync(self.async_power_limit_range_w, self._control_budget_s(),
                          "power limit range")

    def power_modes(self) -> tuple[str, ...]:
        return self._sync(self.async_power_modes, self._control_budget_s(), "power modes")

    def set_power_mode(self, mode: str) -> None:
        self._control(lambda: self.async_set_power_mode(mode), "power mode")

    def mode_before_sleep(self) -> str | None:
        return None

    def power_mode(self) -> str | None:
        return self._sync(self.async_power_mode, self._control_budget_s(), "power mode")

    def switch_pool(self, index: int) -> None:
        if index < 0:
            raise InvalidArgument(f"{self.id}: pool index must be >= 0")
        self._control(lambda: self.async_switch_pool(index), "pool switch")

    def restart(self) -> None:
        self._control(self.async_restart, "restart")

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


# A reading holds at most this many connections at once (Whatsminer: its cgminer multi-command
# and its own two commands, status and get_error_code, side by side); poll_all reads as many
# miners at once as the process's file descriptors allow.
CONNECTIONS_PER_READ = 3


async def poll_all(
    miners: Sequence[Miner], concurrency: int | None = None
) -> list[Telemetry | HalError]:
    """Read a fleet on the calling loop (each miner's telemetry_async); one miner's failure is
    its entry, never the whole call's. `concurrency`: at most that many readings at once;
    None: every miner at once, as far as file descriptors allow (fd_headroom), so that a hung
    miner, which holds its connection until its deadline, delays no other."""
    limit = concurrency or max(1, fd_headroom() // CONNECTIONS_PER_READ)
    results = await gather_bounded([m.telemetry_async() for m in miners], limit)
    return [r if isinstance(r, (Telemetry, HalError)) else HalError(str(r)) for r in results]


def poll_all_sync(miners: Sequence[Miner], concurrency: int | None = None,
                  timeout_s: float = 30.0) -> list[Telemetry | HalError]:
    return run_sync(lambda: poll_all(miners, concurrency), timeout_s, "poll_all")
