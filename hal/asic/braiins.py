"""Braiins OS (BOSer): reads and control through its public gRPC API (braiins.bos.v1, TCP 50051).

Reads, sent in parallel over the miner's one HTTP/2 connection: MinerService GetMinerDetails
(status, uptime), GetMinerStats (hashrate, power), GetHashboards (boards), CoolingService
GetCoolingState (fans), PerformanceService GetActivePerformanceMode (the power target in force)
and PoolService GetPoolGroups. Control: ActionsService PauseMining / ResumeMining (sleep / wake:
the hash boards stop, the control board and the API stay up), Restart, and PerformanceService
SetPowerTarget (whole watts, within ConfigurationService GetConstraints' range).

Every call but Login carries the session token in the `authorization` metadata. A token lapses
after the login's `timeout_s` without requests, so one is reused while fresh and renewed once
when the miner answers UNAUTHENTICATED. The messages are hal/asic/bos_v1.proto, the subset of
the public API's .proto that rigd uses, compiled to bos_v1_pb2.

Firmware without the gRPC API (before 23.03), or with its port closed: reads fall back to the
cgminer-compatible RPC (summary, devs, temps, fans, tunerstatus, pools) for a minute before
gRPC is tried again; control needs gRPC and raises DeviceLost naming its port.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from hal.asic import bos_v1_pb2 as pb
from hal.asic.antminer import cgminer_pools, summary_hashrate
from hal.asic.base import (
    LINE_ALLOWANCE_S,
    Miner,
    MinerConfig,
    build_telemetry,
    commands_for,
    reply_errors,
    usable,
)
from hal.asic.transport import Reply, request_slot, to_float, to_int
from hal.device import (
    AsicBoard,
    AsicTelemetry,
    Capability,
    DeviceInfo,
    DeviceKind,
    PoolStatus,
    Telemetry,
)
from hal.errors import (
    DeviceLost,
    HalError,
    InvalidArgument,
    NotSupported,
    PermissionDenied,
    ProtocolError,
    Timeout,
)

GRPC_PORT = 50051
DEFAULT_USERNAME = "root"
DEFAULT_PASSWORD = "root"
RPC_RETRY_GRPC_S = 60.0  # after a refused gRPC connection, read over RPC this long
_TOKEN_MARGIN = 0.8  # renew a token after this share of its idle timeout

# Read name (as the captures name the replies) -> (method path, request, reply type).
_READS: dict[str, tuple[str, type[Message], type[Message]]] = {
    "miner_details": ("/braiins.bos.v1.MinerService/GetMinerDetails",
                      pb.GetMinerDetailsRequest, pb.GetMinerDetailsResponse),
    "miner_stats": ("/braiins.bos.v1.MinerService/GetMinerStats",
                    pb.GetMinerStatsRequest, pb.GetMinerStatsResponse),
    "miner_hw_hashboards": ("/braiins.bos.v1.MinerService/GetHashboards",
                            pb.GetHashboardsRequest, pb.GetHashboardsResponse),
    "cooling_state": ("/braiins.bos.v1.CoolingService/GetCoolingState",
                      pb.GetCoolingStateRequest, pb.GetCoolingStateResponse),
    "performance_mode": ("/braiins.bos.v1.PerformanceService/GetActivePerformanceMode",
                         pb.GetPerformanceModeRequest, pb.PerformanceMode),
    "pool_groups": ("/braiins.bos.v1.PoolService/GetPoolGroups",
              pb.GetPoolGroupsRequest, pb.GetPoolGroupsResponse),
}
_LOGIN = "/braiins.bos.v1.AuthenticationService/Login"
_RPC_READS = ("summary", "devs", "temps", "fans", "tunerstatus", "pools")
_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0))


def grpc_error(exc: grpc.aio.AioRpcError, address: str, what: str, timeout_s: float) -> HalError:
    """The HAL error for a failed gRPC call, naming the miner's gRPC address."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if "refused" in details.lower():
            return DeviceLost(f"connection refused by {address}")
        return DeviceLost(f"{address} unavailable ({what}): {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Timeout(f"no answer on {address} within {timeout_s:g} s ({what})")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return PermissionDenied(f"{address} refused {what}: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE,
                grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidArgument(f"{address} refused {what}: {details}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotSupported(f"{address} does not implement {what}")
    return ProtocolError(f"{address}: {what} failed: {code.name} {details}", details.encode())


class _Session:
    """One operation's channel to the miner: calls authorised with the miner's token."""

    def __init__(self, miner: BraiinsMiner, channel: Any) -> None:
        self.miner = miner
        self.channel = channel
        self._login_lock = asyncio.Lock()

    async def call(self, path: str, request: Message, reply_type: type[Message]) -> Message:
        refused: str | None = None
        for attempt in range(2):
            token = await self._token(refused)
            error: HalError | None = None
            try:
                reply: Message = await self._invoke(path, request, reply_type,
                                                    (("authorization", token),))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 0:
                    refused = token  # the miner forgot the session: log in again, once
                    continue
                error = self.miner.error(exc, path.rsplit("/", 1)[-1])
            if error is not None:
                # Raised outside the except: a gRPC error holds its call, and the call the
                # channel's connection, which would outlive the channel's close() for as
                # long as the caller keeps this error (its __context__).
                raise error
            self.miner.token_used_at = time.monotonic()
            return reply
        raise PermissionDenied(f"{self.miner.id}: Braiins OS session could not be renewed")

    async def _invoke(self, path: str, request: Message, reply_type: type[Message],
                      metadata: tuple[tuple[str, str], ...] = ()) -> Message:
        method = self.channel.unary_unary(path, request_serializer=_serialize,
                                          response_deserializer=reply_type.FromString)
        result: Message = await method(request, metadata=metadata,
                                       timeout=self.miner.config.timeout_s)
        return result

    async def _token(self, refused: str | None) -> str:
        """The miner's token, after one login if there is none, it went stale, or the miner
        refused it (unless a concurrent call has already replaced it)."""
        async with self._login_lock:
            miner = self.miner
            if miner.token is None or miner.token == refused or not miner.token_fresh():
                await self._login()
            assert miner.token is not None
            return miner.token

    async def _login(self) -> None:
        miner = self.miner
        request = pb.LoginRequest(username=miner.config.username or DEFAULT_USERNAME,
                                  password=miner.config.password or DEFAULT_PASSWORD)
        method = self.channel.unary_unary(_LOGIN, request_serializer=_serialize,
                                          response_deserializer=pb.LoginResponse.FromString)
        error: HalError | None = None
        try:
            call = method(request, timeout=miner.config.timeout_s)
            reply: pb.LoginResponse = await call
            header = dict(await call.initial_metadata() or ()).get("authorization")
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                              grpc.StatusCode.PERMISSION_DENIED):
                error = PermissionDenied(
                    f"{miner.id}: Braiins OS refused the login of {request.username!r} "
                    f"(wrong password?): {exc.details()}")
            else:
                error = miner.error(exc, "Login")
        if error is not None:
            raise error  # outside the except, as in call()
        # The token is in the body; older firmware sent it only as a header.
        token = reply.token or (header if isinstance(header, str) else "")
        if not token:
            raise ProtocolError(f"{miner.id}: Braiins OS login gave no token",
                                reply.SerializeToString())
        miner.token = token
        miner.token_timeout_s = float(reply.timeout_s or 3600)
        miner.token_used_at = time.monotonic()


def _running(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class BraiinsMiner(Miner):
    family = "braiins"
    vendor = "Braiins OS"
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("miner_stats",),
        "expected_hashrate": ("miner_stats",),
        "power": ("miner_stats",),
        "uptime": ("miner_details",),
        "is_mining": ("miner_details",),
        "boards": ("miner_hw_hashboards",),
        "fans": ("cooling_state",),
        "power_limit": ("performance_mode",),
        "pools": ("pool_groups",),
    }
    capabilities = frozenset({Capability.TELEMETRY, Capability.HASHING, Capability.SLEEP_WAKE,
                              Capability.SET_POWER_LIMIT, Capability.RESTART})

    def __init__(self, config: MinerConfig, version: Reply | None = None) -> None:
        super().__init__(config, version)
        self.grpc_address = f"{config.host}:{config.grpc_port}"
        self.token: str | None = None
        self.token_timeout_s = 0.0
        self.token_used_at = 0.0
        self._grpc_refused_at: float | None = None
        # A grpc.aio channel belongs to the event loop it was made on: one per loop this miner
        # is used on (the agent's for readings, the HAL's I/O loop for blocking controls).
        self._channels: dict[asyncio.AbstractEventLoop, Any] = {}
        self._channels_lock = threading.Lock()

    def read_budget_s(self) -> float:
        """The reads go out at once over one connection: a login and the calls, or the RPC
        (and the line: see Miner.read_budget_s)."""
        return self.config.timeout_s * 3 + LINE_ALLOWANCE_S

    def token_fresh(self) -> bool:
        idle_s = time.monotonic() - self.token_used_at
        return idle_s < self.token_timeout_s * _TOKEN_MARGIN

    def error(self, exc: grpc.aio.AioRpcError, what: str) -> HalError:
        return grpc_error(exc, self.grpc_address, what, self.config.timeout_s)

    # --- gRPC -------------------------------------------------------------------------------
    def _channel(self) -> Any:
        """The miner's channel on the running loop: one HTTP/2 connection carries every call
        of a poll, and is kept between polls while the loop lives."""
        loop = asyncio.get_running_loop()
        with self._channels_lock:
            for old in [other for other in self._channels if other.is_closed()]:
                del self._channels[old]  # its loop is gone, and its connection with it
            channel = self._channels.get(loop)
            if channel is None:
                channel = grpc.aio.insecure_channel(self.grpc_address, options=_CHANNEL_OPTIONS)
                self._channels[loop] = channel
            return channel

    async def _drop_channel(self) -> None:
        """Forget this loop's channel after a failure: a fresh one connects at once, where the
        old one would wait out gRPC's reconnect backoff (up to minutes) after the miner is
        back (the channel's connections are its own: no shared subchannel keeps the
        backoff)."""
        with self._channels_lock:
            channel = self._channels.pop(asyncio.get_running_loop(), None)
        if channel is not None:
            await channel.close(None)

    def close(self) -> None:
        """Close every loop's channel, on its own loop."""
        with self._channels_lock:
            channels, self._channels = self._channels, {}
        for loop, channel in channels.items():
            if loop.is_closed():
                continue
            if _running(loop):
                loop.create_task(channel.close(None))
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(channel.close(None), loop)

    async def _with_session(self, calls: Sequence[tuple[str, Message, type[Message]]]
                            ) -> list[Message | HalError]:
        """Run `calls` concurrently on the miner's channel; an error that stops the whole
        miner (unreachable, no answer, refused login) raises, others come back in place."""
        session = _Session(self, self._channel())
        try:
            async with request_slot():
                results = await asyncio.gather(*(session.call(*call) for call in calls),
                                               return_exceptions=True)
        except asyncio.CancelledError:
            # Cut off at a deadline: the calls are cancelled, and the connection, which may be
            # to a hung miner, goes with them.
            await asyncio.shield(self._drop_channel())
            raise
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, HalError):
                raise result
        stop = next((r for r in results if isinstance(r, (DeviceLost, Timeout,
                                                         PermissionDenied))), None)
        if stop is None:
            return [r for r in results if isinstance(r, (Message, HalError))]
        if isinstance(stop, (DeviceLost, Timeout)):
            await self._drop_channel()
        # A fresh error, without the failed calls' tracebacks: their frames hold the gRPC calls,
        # and a call holds its connection open after the channel's close() for as long as
        # whoever catches this error keeps it.
        error = type(stop)(str(stop))
        del results, stop, session
        raise error

    async def grpc_call(self, path: str, request: Message, reply_type: type[Message]) -> Any:
        """One call (control, info, constraints)."""
        (result,) = await self._with_session([(path, request, reply_type)])
        if isinstance(result, HalError):
            raise result
        return result

    async def fetch(self, commands: Sequence[str]) -> dict[str, Reply]:
        """The cgminer-compatible RPC reads, in one multi-command (when gRPC is closed)."""
        return await self.rpc.multi(list(_RPC_READS))

    async def poll(self, fields: Iterable[str] | None = None) -> Telemetry:
        """One reading over gRPC, parsed from the messages themselves; over the RPC while
        gRPC is refused (a minute, then gRPC is tried again)."""
        refused_at = self._grpc_refused_at
        if refused_at is not None and time.monotonic() - refused_at < RPC_RETRY_GRPC_S:
            telemetry = self.parse_replies(self.id, await self.fetch(()))
        else:
            try:
                telemetry = await self._grpc_poll(commands_for(self.data_sources, fields))
                self._grpc_refused_at = None
            except DeviceLost as exc:
                if "refused" not in str(exc):
                    raise
                # Refused: firmware without gRPC if the RPC answers; if not, the miner is off
                # (and this raises), which says nothing of its gRPC once it is back.
                telemetry = self.parse_replies(self.id, await self.fetch(()))
                self._grpc_refused_at = time.monotonic()
        self._last = telemetry
        return telemetry

    async def _grpc_poll(self, commands: Sequence[str]) -> Telemetry:
        names = [c for c in commands if c in _READS]
        results = await self._with_session([(_READS[n][0], _READS[n][1](), _READS[n][2])
                                            for n in names])
        messages = {n: r for n, r in zip(names, results, strict=True) if isinstance(r, Message)}
        errors = tuple(f"{n}: {r}" for n, r in zip(names, results, strict=True)
                       if isinstance(r, HalError))
        return parse_grpc(self.id, messages, errors)

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        """Replies as the captures hold them: gRPC ones rendered as JSON, or the RPC's."""
        grpc_data = {name: r.data for name, r in replies.items() if name in _READS and r.ok}
        if grpc_data:
            return parse_grpc_json(device_id, grpc_data, reply_errors(replies))
        return cgminer_telemetry(device_id, cls.family, replies)

    async def async_info(self) -> DeviceInfo:
        path, request_type, reply_type = _READS["miner_details"]
        try:
            details = await self.grpc_call(path, request_type(), reply_type)
        except (DeviceLost, NotSupported, PermissionDenied):
            return await super().async_info()  # the RPC's version needs no login
        model = details.miner_identity.miner_model or details.miner_identity.name
        return DeviceInfo(id=self.id, kind=DeviceKind.ASIC, name=model or "Braiins OS",
                          vendor=self.vendor, model=model,
                          firmware_version=details.bos_version.current,
                          serial=details.serial_number, simulated=self.config.simulated)

    # --- control ----------------------------------------------------------------------------
    async def async_sleep(self) -> None:
        await self.grpc_call("/braiins.bos.v1.ActionsService/PauseMining",
                             pb.PauseMiningRequest(), pb.PauseMiningResponse)

    async def async_wake(self) -> None:
        await self.grpc_call("/braiins.bos.v1.ActionsService/ResumeMining",
                             pb.ResumeMiningRequest(), pb.ResumeMiningResponse)

    async def async_restart(self) -> None:
        await self.grpc_call("/braiins.bos.v1.ActionsService/Restart", pb.RestartRequest(),
                             pb.RestartResponse)

    async def async_power_limit_range_w(self) -> tuple[float, float] | None:
        """The tuner's power-target constraints (min, max), as the firmware states them;
        None where it states none (the firmware then refuses what it cannot take)."""
        try:
            reply = await self.grpc_call("/braiins.bos.v1.ConfigurationService/GetConstraints",
                                         pb.GetConstraintsRequest(), pb.GetConstraintsResponse)
        except NotSupported:
            return None
        bounds = reply.tuner_constraints.power_target
        if not bounds.HasField("max") or not bounds.max.watt:
            return None
        return float(bounds.min.watt), float(bounds.max.watt)

    async def async_set_power_limit(self, watts: float) -> None:
        """SetPowerTarget, saved and applied; the firmware takes whole watts, so a fraction
        is refused rather than truncated."""
        if watts != int(watts):
            raise InvalidArgument(f"{self.id}: Braiins OS takes whole watts; got {watts:g} W")
        request = pb.SetPowerTargetRequest(save_action=pb.SAVE_ACTION_SAVE_AND_APPLY,
                                           power_target=pb.Power(watt=int(watts)))
        await self.grpc_call("/braiins.bos.v1.PerformanceService/SetPowerTarget", request,
                             pb.SetPowerTargetResponse)


def _at(message: Message | None, *path: str) -> Any:
    """The sub-message at `path`, or None where one is not set (absent is not zero)."""
    for name in path:
        if message is None or not message.HasField(name):
            return None
        message = getattr(message, name)
    return message


def _ghs(rate: Any) -> float | None:
    """H/s from a GigaHashrate; None when not set."""
    return None if rate is None else rate.gigahash_per_second * 1e9


def _board(position: int, board: pb.Hashboard) -> AsicBoard:
    stats = _at(board, "stats")
    chip = _at(board, "highest_chip_temp", "temperature")
    return AsicBoard(
        index=int(board.id) if board.id.isdigit() else position,
        hashrate_hs=_ghs(_at(stats, "real_hashrate", "last_5s")),
        expected_hashrate_hs=_ghs(_at(stats, "nominal_hashrate")),
        temp_board_c=board.board_temp.degree_c if board.HasField("board_temp") else None,
        temp_chip_c=None if chip is None else chip.degree_c,
        chips=board.chips_count.value if board.HasField("chips_count") else None,
    )


def _pools(reply: pb.GetPoolGroupsResponse | None) -> tuple[PoolStatus, ...]:
    groups = reply.pool_groups if reply is not None else ()
    return tuple(PoolStatus(url=pool.url, user=pool.user,
                            status="Alive" if pool.alive else "Dead", active=pool.active,
                            accepted=pool.stats.accepted_shares,
                            rejected=pool.stats.rejected_shares)
                 for group in groups for pool in group.pools)


def parse_grpc(device_id: str, messages: Mapping[str, Message],
               errors: tuple[str, ...] = ()) -> Telemetry:
    """Telemetry from the gRPC replies, keyed as _READS names them."""
    stats = messages.get("miner_stats")
    hashrate = _ghs(_at(stats, "miner_stats", "real_hashrate", "last_5s"))
    power_node = _at(stats, "power_stats", "approximated_consumption")
    boards_reply = messages.get("miner_hw_hashboards")
    boards = [_board(n, b) for n, b in enumerate(
        boards_reply.hashboards if isinstance(boards_reply, pb.GetHashboardsResponse) else ())]
    cooling = messages.get("cooling_state")
    fans = tuple(f.rpm for f in cooling.fans) \
        if isinstance(cooling, pb.GetCoolingStateResponse) else ()
    limit = _at(messages.get("performance_mode"), "tuner_mode", "power_target", "power_target")
    details = messages.get("miner_details")
    is_mining: bool | None = None
    if isinstance(details, pb.GetMinerDetailsResponse) \
            and details.status == pb.MINER_STATUS_PAUSED:
        is_mining = False
    elif hashrate is not None:
        is_mining = hashrate > 0
    pools = messages.get("pool_groups")
    asic = AsicTelemetry(
        expected_hashrate_hs=_ghs(_at(stats, "miner_stats", "nominal_hashrate")),
        boards=tuple(boards), fans_rpm=fans,
        pools=_pools(pools if isinstance(pools, pb.GetPoolGroupsResponse) else None),
        uptime_s=details.bosminer_uptime_s
        if isinstance(details, pb.GetMinerDetailsResponse) else None,
        errors=errors, is_mining=is_mining)
    temps = [t for b in boards for t in (b.temp_board_c, b.temp_chip_c) if t]
    return build_telemetry(device_id, family="braiins", hashrate_hs=hashrate,
                           power_w=None if power_node is None else float(power_node.watt),
                           power_limit_w=None if limit is None else float(limit.watt),
                           asic=asic, temps=temps)


def parse_grpc_json(device_id: str, data: Mapping[str, Any],
                    errors: tuple[str, ...] = ()) -> Telemetry:
    """The gRPC replies rendered as JSON with the .proto's field names, as the captures hold
    them (GetPoolGroups' reply may be its bare list of groups)."""
    messages: dict[str, Message] = {}
    for name, value in data.items():
        if name not in _READS:
            continue
        if name == "pool_groups" and isinstance(value, list):
            value = {"pool_groups": value}
        try:
            messages[name] = json_format.ParseDict(value, _READS[name][2](),
                                                   ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise ProtocolError(f"{device_id}: {name} is not a {_READS[name][2].__name__}: "
                                f"{exc}", str(value).encode()) from exc
    return parse_grpc(device_id, messages, errors)


def cgminer_telemetry(device_id: str, family: str, replies: Mapping[str, Reply]) -> Telemetry:
    """Telemetry from the cgminer-compatible RPC: summary, devs, and where the firmware has
    them (BOSminer/BOSer) temps, fans and tunerstatus."""
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
    return build_telemetry(device_id, family=family, hashrate_hs=hashrate,
                           power_w=power, power_limit_w=limit, asic=asic, temps=all_temps)


class CgminerMiner(Miner):
    """Any other cgminer-API firmware: the common summary/devs/pools reads, nothing more."""

    family = "cgminer"
    vendor = ""
    data_sources: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "hashrate": ("summary",),
        "uptime": ("summary",),
        "boards": ("devs",),
        "pools": ("pools",),
    }

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
        return cgminer_telemetry(device_id, cls.family, replies)
