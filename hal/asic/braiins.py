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
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from hal.asic import bos_v1_pb2 as pb
from hal.asic.antminer import cgminer_pools, summary_hashrate
from hal.asic.base import Miner, MinerConfig, build_telemetry, reply_errors, usable
from hal.asic.transport import Reply, to_float, to_int
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


def _as_dict(message: Message) -> dict[str, Any]:
    """A reply as the captures render it: field names as in the .proto, zeros included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


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
            try:
                reply: Message = await self._invoke(path, request, reply_type,
                                                    (("authorization", token),))
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 0:
                    refused = token  # the miner forgot the session: log in again, once
                    continue
                raise self.miner.error(exc, path.rsplit("/", 1)[-1]) from exc
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
        try:
            call = method(request, timeout=miner.config.timeout_s)
            reply: pb.LoginResponse = await call
            header = dict(await call.initial_metadata() or ()).get("authorization")
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED,
                              grpc.StatusCode.PERMISSION_DENIED):
                raise PermissionDenied(
                    f"{miner.id}: Braiins OS refused the login of {request.username!r} "
                    f"(wrong password?): {exc.details()}") from exc
            raise miner.error(exc, "Login") from exc
        # The token is in the body; older firmware sent it only as a header.
        token = reply.token or (header if isinstance(header, str) else "")
        if not token:
            raise ProtocolError(f"{miner.id}: Braiins OS login gave no token",
                                reply.SerializeToString())
        miner.token = token
        miner.token_timeout_s = float(reply.timeout_s or 3600)
        miner.token_used_at = time.monotonic()


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
        self._grpc_channel: Any = None  # grpc.aio.Channel, bound to _channel_loop
        self._channel_loop: asyncio.AbstractEventLoop | None = None

    def token_fresh(self) -> bool:
        idle_s = time.monotonic() - self.token_used_at
        return idle_s < self.token_timeout_s * _TOKEN_MARGIN

    def error(self, exc: grpc.aio.AioRpcError, what: str) -> HalError:
        return grpc_error(exc, self.grpc_address, what, self.config.timeout_s)

    # --- gRPC -------------------------------------------------------------------------------
    def _channel(self) -> Any:
        """The miner's channel on the running loop: one HTTP/2 connection carries every call
        of a poll, and is kept between polls while the loop lives (a channel belongs to the
        loop it was made on)."""
        loop = asyncio.get_running_loop()
        if self._channel_loop is not loop:
            self._grpc_channel = grpc.aio.insecure_channel(self.grpc_address,
                                                           options=_CHANNEL_OPTIONS)
            self._channel_loop = loop
        return self._grpc_channel

    async def _drop_channel(self) -> None:
        """Forget the channel after a failure: a fresh one connects at once, where the old
        one would wait out gRPC's reconnect backoff (up to minutes) after the miner is back
        (the channel's connections are its own: no shared subchannel keeps the backoff)."""
        channel, self._grpc_channel, self._channel_loop = self._grpc_channel, None, None
        if channel is not None:
            await channel.close(None)

    async def _with_session(self, calls: Sequence[tuple[str, Message, type[Message]]]
                            ) -> list[Message | HalError]:
        """Run `calls` concurrently on the miner's channel; an error that stops the whole
        miner (unreachable, no answer, refused login) raises, others come back in place."""
        session = _Session(self, self._channel())
        results = await asyncio.gather(*(session.call(*call) for call in calls),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, (DeviceLost, Timeout)):
                await self._drop_channel()
                raise result
            if isinstance(result, PermissionDenied):
                raise result
            if isinstance(result, BaseException) and not isinstance(result, HalError):
                raise result
        return [r for r in results if isinstance(r, (Message, HalError))]

    async def grpc_call(self, path: str, request: Message, reply_type: type[Message]) -> Any:
        """One call (control, info, constraints)."""
        (result,) = await self._with_session([(path, request, reply_type)])
        if isinstance(result, HalError):
            raise result
        return result

    async def fetch(self, commands: Sequence[str]) -> dict[str, Reply]:
        """The gRPC reads as Replies holding the capture-shaped dict; RPC when gRPC is closed."""
        refused_at = self._grpc_refused_at
        if refused_at is not None and time.monotonic() - refused_at < RPC_RETRY_GRPC_S:
            return await self.rpc.multi(list(_RPC_READS))
        reads = [(c, _READS[c]) for c in commands if c in _READS]
        try:
            results = await self._with_session([(p, req(), rep) for _, (p, req, rep) in reads])
        except DeviceLost as exc:
            if "refused" not in str(exc):
                raise
            # gRPC refused: firmware without it if the RPC answers; if not, the miner is off
            # (and this raises), which says nothing about its gRPC once it is back.
            fallback = await self.rpc.multi(list(_RPC_READS))
            self._grpc_refused_at = time.monotonic()
            return fallback
        self._grpc_refused_at = None
        replies: dict[str, Reply] = {}
        for (name, _), result in zip(reads, results, strict=True):
            if isinstance(result, HalError):
                failed = {"STATUS": [{"STATUS": "E", "Msg": str(result)}]}
                replies[name] = Reply(name, failed, b"", self.grpc_address)
            else:
                replies[name] = Reply(name, _as_dict(result), result.SerializeToString(),
                                      self.grpc_address)
        return replies

    @classmethod
    def parse_telemetry(cls, device_id: str, replies: Mapping[str, Reply]) -> Telemetry:
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
        """The tuner's power-target constraints (min, max), as the firmware states them."""
        reply = await self.grpc_call("/braiins.bos.v1.ConfigurationService/GetConstraints",
                                     pb.GetConstraintsRequest(), pb.GetConstraintsResponse)
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


def _ghs(node: Any) -> float | None:
    """H/s from a GigaHashrate/MegaHashrate/TeraHashrate dict; None when absent."""
    if isinstance(node, dict):
        for key, scale in (("gigahash_per_second", 1e9), ("megahash_per_second", 1e6),
                           ("terahash_per_second", 1e12)):
            if key in node and (v := to_float(node[key])) is not None:
                return v * scale
    return None


def _degrees(node: Any) -> float | None:
    """°C from a Temperature dict or a TemperatureSensor dict (its `temperature`)."""
    if not isinstance(node, dict):
        return None
    if isinstance(node.get("temperature"), dict):
        node = node["temperature"]
    return to_float(node.get("degree_c"))


def _path(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _pools(data: Any) -> tuple[PoolStatus, ...]:
    groups = data.get("pool_groups", []) if isinstance(data, dict) else data
    pools = []
    for group in groups if isinstance(groups, list) else []:
        for pool in group.get("pools", []) if isinstance(group, dict) else []:
            if isinstance(pool, dict):
                pools.append(PoolStatus(
                    url=str(pool.get("url", "")), user=str(pool.get("user", "")),
                    status="Alive" if pool.get("alive") else "Dead",
                    active=bool(pool.get("active")),
                    accepted=to_int(_path(pool, "stats", "accepted_shares")),
                    rejected=to_int(_path(pool, "stats", "rejected_shares"))))
    return tuple(pools)


def parse_grpc_json(device_id: str, data: Mapping[str, Any],
                    errors: tuple[str, ...] = ()) -> Telemetry:
    """Braiins OS gRPC replies, rendered as JSON with the .proto's field names (as the captures
    and `fetch` give them): miner_stats, miner_hw_hashboards, cooling_state, miner_details,
    performance_mode, pool_groups (a GetPoolGroupsResponse, or its list of groups)."""
    stats = data.get("miner_stats") or {}
    hashrate = _ghs(_path(stats, "miner_stats", "real_hashrate", "last_5s"))
    expected = _ghs(_path(stats, "miner_stats", "nominal_hashrate"))
    power = to_float(_path(stats, "power_stats", "approximated_consumption", "watt"))
    boards: list[AsicBoard] = []
    for item in _path(data, "miner_hw_hashboards", "hashboards") or []:
        if not isinstance(item, dict):
            continue
        boards.append(AsicBoard(
            index=to_int(item.get("id")) or len(boards),
            hashrate_hs=_ghs(_path(item, "stats", "real_hashrate", "last_5s")),
            expected_hashrate_hs=_ghs(_path(item, "stats", "nominal_hashrate")),
            temp_board_c=_degrees(item.get("board_temp")),
            temp_chip_c=_degrees(item.get("highest_chip_temp")),
            chips=to_int(item.get("chips_count")),
        ))
    fans = tuple(rpm for f in _path(data, "cooling_state", "fans") or []
                 if isinstance(f, dict) and (rpm := to_int(f.get("rpm"))) is not None)
    limit = to_float(_path(data, "performance_mode", "tuner_mode", "power_target",
                           "power_target", "watt"))
    details = data.get("miner_details") or {}
    status = details.get("status") if isinstance(details, dict) else None
    paused = status in ("MINER_STATUS_PAUSED", 3)
    is_mining: bool | None = None
    if paused:
        is_mining = False
    elif hashrate is not None:
        is_mining = hashrate > 0
    temps = [t for b in boards for t in (b.temp_board_c, b.temp_chip_c) if t]
    asic = AsicTelemetry(expected_hashrate_hs=expected, boards=tuple(boards), fans_rpm=fans,
                         pools=_pools(data.get("pool_groups") or []),
                         uptime_s=to_int(details.get("bosminer_uptime_s"))
                         if isinstance(details, dict) else None,
                         errors=errors, is_mining=is_mining)
    return build_telemetry(device_id, family="braiins", hashrate_hs=hashrate, power_w=power,
                           power_limit_w=limit, asic=asic, temps=temps)


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
