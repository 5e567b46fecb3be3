"""Braiins OS+ 25.11 on an Antminer S19 XP: the public gRPC API and the cgminer-compatible RPC.

gRPC (braiins.bos.v1, its own port, 50051 on a real miner), from the v25_11 captures of
GetMinerDetails, GetMinerStats, GetHashboards, GetCoolingState, GetTunerState, GetPoolGroups,
GetLocateDeviceStatus and the configuration, each written field by field (protowire.py):
- AuthenticationService/Login checks root's password and hands out a token, in the reply body
  and, like the firmware, in the `authorization` header; every other call but GetApiVersion
  needs it in the `authorization` metadata and answers UNAUTHENTICATED without it. A token
  lapses after `token_ttl_s` without requests.
- ActionsService PauseMining / ResumeMining (asleep: hash boards off, status PAUSED; awake
  after the warm-up), Restart, Reboot; PerformanceService SetPowerTarget (refused with
  INVALID_ARGUMENT outside GetConstraints' range, saved in the configuration and in force
  at once; the drawn power moves to it within the model's range, hashrate in proportion).
- No capture of GetConstraints or GetActivePerformanceMode exists: constraints are this
  simulator's (min 1000 W, max 4000 W, default the configured 3031 W), the active mode is the
  configured power target.

RPC (BOSer's cgminer-compatible API on 4028): `version` is the BOSer capture's; devdetails,
summary, devs, temps, fans, tunerstatus, pools and tempctrl are written in the shapes Braiins
documents for its API, with the same figures the gRPC replies carry. `a+b` multi-commands work.
With `grpc=False` the simulator is firmware older than the gRPC API (23.03): RPC only.

Every hashrate figure (each window, each board, gRPC or RPC) is served from one RunningRate.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import grpc

from hal.sim.asic import protowire as w
from hal.sim.asic.server import FirmwareServer, MinerState, RunningRate, load_capture

CAPTURES = "braiins_os_v25_11_asicrs"
DESCRIPTION = "BOSer boser-openwrt 0.1.0-11012d53"  # the BOSer version capture's
GH, MH = 1e9, 1e6
WINDOWS = ("last_5s", "last_15s", "last_30s", "last_1m", "last_5m", "last_15m", "last_30m",
           "last_1h", "last_24h", "since_restart")  # RealHashrate fields 1..10
STATUS_NORMAL, STATUS_PAUSED = 2, 3
CONSTRAINT_MIN_W, CONSTRAINT_MAX_W = 1000, 4000
Handler = Callable[[w.Fields], bytes]


def _capture(name: str) -> Any:
    return json.loads(load_capture(f"{CAPTURES}/{name}.json"))


def _text(value: int | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else ""


def _raw(value: int | bytes) -> bytes:
    return value if isinstance(value, bytes) else b""


# --- messages, field numbers as in braiins/bos-plus-api proto/bos/v1 ---------------------------

def _giga(gh: float) -> bytes:
    return w.double(1, gh)


def _power(watt: float) -> bytes:
    return w.uint(1, round(watt))


def _temperature(node: dict[str, Any]) -> bytes:
    return w.double(1, node["degree_c"])


def _sensor(node: dict[str, Any]) -> bytes:
    present = node.get("id") is not None
    return (w.uint(1, node.get("id") or 0, presence=present) + w.uint(2, node["location"])
            + w.message(3, _temperature(node["temperature"])))


def _work_stats(total_gh: float, nominal_gh: float, extra: dict[str, Any]) -> bytes:
    """WorkSolverStats: every window of RealHashrate is the running figure."""
    real = b"".join(w.message(number, _giga(total_gh))
                    for number, _window in enumerate(WINDOWS, start=1))
    return (w.message(1, real) + w.message(2, _giga(nominal_gh))
            + w.message(3, w.double(1, 0.0)) + w.uint(4, extra.get("found_blocks", 0))
            + w.uint(5, extra.get("best_share", 0)))


def _pool_stats(stats: dict[str, Any]) -> bytes:
    shared = stats.get("last_share_time") or {}
    return (w.uint(1, stats.get("accepted_shares", 0)) + w.uint(2, stats.get("rejected_shares", 0))
            + w.uint(3, stats.get("stale_shares", 0)) + w.uint(4, stats.get("last_difficulty", 0))
            + w.uint(5, stats.get("best_share", 0)) + w.uint(6, stats.get("generated_work", 0))
            + (w.message(7, w.uint(1, shared.get("seconds", 0)), w.uint(2, shared.get("nanos", 0)))
               if shared else b""))


class BraiinsSim(FirmwareServer):
    family = "braiins"
    multi_allowed = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, warmup_s: float = 1.0,
                 grpc_port: int = 0, grpc: bool = True, username: str = "root",
                 password: str = "root", token_ttl_s: float = 3600.0,
                 response_s: float = 0.0) -> None:
        super().__init__(host, port, warmup_s=warmup_s)
        stats = _capture("miner_stats")
        self.nominal_power_w = float(stats["power_stats"]["approximated_consumption"]["watt"])
        self.state = MinerState(nominal_power_w=self.nominal_power_w, idle_power_w=30.0,
                                warmup_s=warmup_s, response_s=response_s,
                                min_power_w=CONSTRAINT_MIN_W)
        boards = _capture("miner_hw_hashboards")["hashboards"]
        self.rate = RunningRate.of_boards(
            stats["miner_stats"]["real_hashrate"]["last_5s"]["gigahash_per_second"] * GH,
            [b["stats"]["real_hashrate"]["last_5s"]["gigahash_per_second"] for b in boards])
        # The target saved in the configuration, and the one in force (SAVE alone only saves).
        self.saved_target_w = int(_capture("configuration_miner")["tuner"]["power_target"]["watt"])
        self.power_target_w = self.saved_target_w
        self.locate = bool(json.loads(load_capture(f"{CAPTURES}/actions_locate.json")))
        self.requested_grpc_port = grpc_port
        self.grpc_enabled = grpc
        self.username = username
        self.password = password
        self.token_ttl_s = token_ttl_s
        self.grpc_calls: list[str] = []  # every gRPC method called, for tests
        self._tokens: dict[str, float] = {}  # token -> last use (monotonic)
        self._grpc: Any = None  # grpc.aio.Server once started
        self._grpc_port = 0
        self._started_at = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await super().start()
        if not self.grpc_enabled:
            return
        # No SO_REUSEPORT (grpc's default): a second server on the port must fail, not share.
        server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
        server.add_generic_rpc_handlers((_Handlers(self),))
        self._grpc_port = server.add_insecure_port(f"{self.host}:{self.requested_grpc_port}")
        await server.start()
        self._grpc = server

    async def stop(self) -> None:
        if self._grpc is not None:
            self.requested_grpc_port = self._grpc_port
            await self._grpc.stop(None)
            self._grpc = None
        await super().stop()

    @property
    def grpc_port(self) -> int:
        if self._grpc is None:
            if self.requested_grpc_port and self.grpc_enabled:
                return self.requested_grpc_port  # stopped (refusing): the port it binds again
            raise RuntimeError("gRPC not started")
        return self._grpc_port

    def discover_entry(self) -> dict[str, Any]:
        entry = {**super().discover_entry(), "username": self.username,
                 "password": self.password}
        if self._grpc is not None or (self.requested_grpc_port and self.grpc_enabled):
            entry["grpc_port"] = self.grpc_port
        return entry

    def expire_sessions(self) -> None:
        """Tests: forget every token, as the miner does after its idle timeout."""
        self._tokens.clear()

    # --- state ---------------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self.state.sleeping

    def uptime_s(self) -> int:
        """bosminer's uptime: the captured one, counting on from the simulator's start."""
        captured: int = _capture("miner_details")["bosminer_uptime_s"]
        return captured + round(time.monotonic() - self._started_at)

    def total_gh(self) -> float:
        return self.rate.total(self.state.hash_factor, GH)

    def boards_gh(self) -> list[float]:
        return self.rate.boards(self.state.hash_factor, GH)

    def state_key(self, method: str) -> tuple[Any, ...]:
        """Everything a read depends on (uptime: the second), to remember rendered replies."""
        state = self.state
        second = int(time.monotonic()) if method.endswith("GetMinerDetails") else 0
        return (state.hash_factor, state.target_factor, state.power_w(), state.sleeping,
                self.power_target_w, self.saved_target_w, self.locate, second)

    def apply_power_target(self, watts: int, save_action: int) -> None:
        """SaveAction 1 saves only; 2 and 3 save and put the target in force."""
        self.saved_target_w = watts
        if save_action != 1:
            self.power_target_w = watts
            self.state.set_target(watts)

    # --- gRPC ------------------------------------------------------------------------------
    def login(self, request: w.Fields) -> tuple[bytes, str] | None:
        username = _text(w.first(request, 1, b""))
        password = _text(w.first(request, 2, b""))
        if username != self.username or password != self.password:
            return None
        token = os.urandom(8).hex()
        self._tokens[token] = time.monotonic()
        return w.string(1, token) + w.uint(2, round(self.token_ttl_s)), token

    def authorised(self, token: str | None) -> bool:
        now = time.monotonic()
        last = self._tokens.get(token or "")
        if last is None or now - last > self.token_ttl_s:
            self._tokens.pop(token or "", None)
            return False
        self._tokens[token or ""] = now
        return True

    def miner_details(self, _request: w.Fields) -> bytes:
        d = _capture("miner_details")
        identity = d["miner_identity"]
        version = d["bos_version"]
        psu = d["psu_info"]
        return (w.string(1, d["uid"])
                + w.message(2, w.uint(1, identity["brand"]), w.uint(2, identity["model"]),
                            w.string(3, identity["name"]), w.string(4, identity["miner_model"]))
                + w.uint(3, d["platform"]) + w.uint(4, d["bos_mode"])
                + w.message(5, w.string(1, version["current"]), w.string(2, version["major"]),
                            w.uint(3, version["bos_plus"]))
                + w.string(6, d["hostname"]) + w.string(7, d["mac_address"])
                + w.uint(8, d["system_uptime"])
                + w.message(9, _giga(d["sticker_hashrate"]["gigahash_per_second"]))
                + w.uint(10, self.uptime_s()) + w.uint(11, d["system_uptime_s"])
                + w.uint(12, STATUS_PAUSED if self.paused else STATUS_NORMAL)
                + w.string(13, d["kernel_version"])
                + w.message(14, w.message(1, w.uint(1, psu["version"])),
                            w.string(4, psu["model_name"], presence=True),
                            w.message(5, w.double(1, psu["min_voltage"]["volt"])),
                            w.message(6, w.double(1, psu["max_voltage"]["volt"])))
                + w.uint(15, d["control_board_soc_family"])
                + w.string(16, d["serial_number"], presence=True))

    def miner_stats(self, _request: w.Fields) -> bytes:
        d = _capture("miner_stats")
        nominal = d["miner_stats"]["nominal_hashrate"]["gigahash_per_second"]
        power = self.state.power_w()
        return (w.message(1, _pool_stats(d["pool_stats"]))
                + w.message(2, _work_stats(self.total_gh(), nominal * self.state.target_factor,
                                           d["miner_stats"]))
                + w.message(3, w.message(1, _power(power)),
                            w.message(2, w.double(1, power / max(self.total_gh() / 1e3, 1e-9)
                                                  if self.total_gh() else 0.0))))

    def hashboards(self, _request: w.Fields) -> bytes:
        boards = []
        for board, board_gh in zip(_capture("miner_hw_hashboards")["hashboards"],
                                   self.boards_gh(), strict=True):
            nominal = board["stats"]["nominal_hashrate"]["gigahash_per_second"]
            boards.append(
                w.string(1, board["id"]) + w.uint(2, board["enabled"])
                + w.message(3, w.uint(1, board["chips_count"]))
                + w.message(4, w.double(1, board["current_voltage"]["volt"]))
                + w.message(5, w.double(1, board["current_frequency"]["hertz"]))
                + w.message(6, _sensor(board["highest_chip_temp"]))
                + w.message(7, _temperature(board["board_temp"]))
                + w.message(8, _work_stats(board_gh, nominal * self.state.target_factor,
                                           board["stats"]))
                + w.string(9, board["model"], presence=True)
                + w.message(10, _temperature(board["lowest_inlet_temp"]))
                + w.message(11, _temperature(board["highest_outlet_temp"]))
                + w.string(12, board["serial_number"], presence=True)
                + w.string(13, board["board_name"], presence=True)
                + w.string(14, board["chip_type"], presence=True))
        return w.repeated(1, boards)

    def cooling_state(self, _request: w.Fields) -> bytes:
        d = _capture("cooling_state")
        fans = [w.uint(1, f["position"], presence=True) + w.uint(2, f["rpm"])
                + w.double(3, f["target_speed_ratio"], presence=True) for f in d["fans"]]
        return w.repeated(1, fans) + w.message(2, _sensor(d["highest_temperature"]))

    def tuner_state(self, _request: w.Fields) -> bytes:
        profile = _capture("performance_tuner_state")["mode_state"]["powertargetmodestate"]
        created = profile["profile"]["created"]
        body = (w.message(1, w.uint(1, created["seconds"]), w.uint(2, created["nanos"]))
                + w.message(2, _power(self.power_target_w))
                + w.message(3, _giga(self.total_gh()))
                + w.message(4, _power(self.state.power_w())))
        return w.uint(1, 2) + w.message(2, w.message(1, body),
                                        w.message(2, _power(self.power_target_w)))

    def performance_mode(self, _request: w.Fields) -> bytes:
        # PerformanceMode.tuner_mode (2) -> TunerPerformanceMode.power_target (1) ->
        # PowerTargetMode.power_target (1) -> Power
        return w.message(2, w.message(1, w.message(1, _power(self.power_target_w))))

    def constraints(self, _request: w.Fields) -> bytes:
        power = (w.message(1, _power(self.power_target_w)) + w.message(2, _power(CONSTRAINT_MIN_W))
                 + w.message(3, _power(CONSTRAINT_MAX_W)))
        return w.message(1, w.message(1, power) + w.message(3, w.uint(1, True))
                         + w.uint(4, 1))

    def pool_groups(self, _request: w.Fields) -> bytes:
        groups = []
        for group in _capture("pools"):
            pools = [w.string(1, p["uid"]) + w.string(2, p["url"]) + w.string(3, p["user"])
                     + w.uint(4, p["enabled"]) + w.uint(5, p["alive"]) + w.uint(6, p["active"])
                     + w.message(7, _pool_stats(p["stats"])) for p in group["pools"]]
            groups.append(w.string(1, group["name"])
                          + w.message(2, w.uint(1, group["strategy"]["quota"]["value"]))
                          + w.repeated(4, pools) + w.string(5, group["uid"]))
        return w.repeated(1, groups)

    def configuration(self, _request: w.Fields) -> bytes:
        """The tuner as the capture configures it, with today's target; the pool groups as
        GetPoolGroups has them (the capture's configuration lists none)."""
        groups = []
        for group in _capture("pools"):
            pools = [w.string(1, p["uid"], presence=True) + w.string(2, p["url"])
                     + w.string(3, p["user"]) + w.string(4, "x", presence=True)
                     + w.uint(5, p["enabled"], presence=True) for p in group["pools"]]
            groups.append(w.string(1, group["uid"], presence=True) + w.string(2, group["name"])
                          + w.message(3, w.uint(1, group["strategy"]["quota"]["value"]))
                          + w.repeated(5, pools))
        tuner = _capture("configuration_miner")["tuner"]
        return w.repeated(1, groups) + w.message(
            3, w.uint(1, tuner["enabled"], presence=True),
            w.uint(2, tuner["tuner_mode"], presence=True),
            w.message(3, _power(self.saved_target_w)))

    def locate_status(self, _request: w.Fields) -> bytes:
        return w.uint(1, self.locate)

    def api_version(self, _request: w.Fields) -> bytes:
        v = _capture("version")
        return w.uint(1, v["major"]) + w.uint(2, v["minor"]) + w.uint(3, v["patch"])

    # --- RPC (cgminer-compatible) ----------------------------------------------------------------
    def reply(self, command: str, parameter: str | None) -> bytes | None:
        if command == "version":
            return load_capture("braiins_os_v21_09_asicrs/version.json")
        builders: dict[str, Callable[[], tuple[int, str, dict[str, Any]]]] = {
            "devdetails": self._rpc_devdetails, "summary": self._rpc_summary,
            "devs": self._rpc_devs, "temps": self._rpc_temps, "fans": self._rpc_fans,
            "tunerstatus": self._rpc_tunerstatus, "pools": self._rpc_pools,
            "tempctrl": self._rpc_tempctrl,
        }
        if command not in builders:
            return None
        code, msg, body = builders[command]()
        status = [{"STATUS": "S", "When": int(time.time()), "Code": code, "Msg": msg,
                   "Description": DESCRIPTION}]
        return json.dumps({"STATUS": status, **body, "id": 1}).encode()

    def _boards(self) -> list[dict[str, Any]]:
        boards: list[dict[str, Any]] = _capture("miner_hw_hashboards")["hashboards"]
        return boards

    def _rpc_devdetails(self) -> tuple[int, str, dict[str, Any]]:
        model = _capture("miner_details")["miner_identity"]["miner_model"]
        return 69, "Device Details", {"DEVDETAILS": [
            {"DEVDETAILS": n, "Name": f"Hash Chain {b['id']}", "ID": int(b["id"]),
             "Driver": "", "Kernel": "", "Model": f"Bitmain {model}", "Device Path": "",
             "Chips": b["chips_count"],
             "Frequency": b["current_frequency"]["hertz"],
             "Voltage": b["current_voltage"]["volt"]}
            for n, b in enumerate(self._boards())]}

    def _rpc_summary(self) -> tuple[int, str, dict[str, Any]]:
        mhs = self.total_gh() * GH / MH
        pool = _capture("miner_stats")["pool_stats"]
        return 11, "Summary", {"SUMMARY": [{
            "Elapsed": self.uptime_s(), "MHS av": mhs, "MHS 5s": mhs, "MHS 1m": mhs, "MHS 5m": mhs,
            "MHS 15m": mhs, "MHS 24h": mhs, "Accepted": pool["accepted_shares"],
            "Rejected": pool["rejected_shares"], "Stale": pool["stale_shares"],
            "Best Share": pool["best_share"], "Hardware Errors": 0}]}

    def _rpc_devs(self) -> tuple[int, str, dict[str, Any]]:
        devs = []
        for n, (board, board_gh) in enumerate(zip(self._boards(), self.boards_gh(),
                                                  strict=True)):
            mhs = board_gh * GH / MH
            devs.append({"ASC": n, "Name": "", "ID": int(board["id"]), "Enabled": "Y",
                         "Status": "Alive", "Temperature": board["board_temp"]["degree_c"],
                         "MHS av": mhs, "MHS 5s": mhs, "MHS 1m": mhs, "MHS 5m": mhs,
                         "MHS 15m": mhs, "Accepted": 0, "Rejected": 0, "Hardware Errors": 0})
        return 9, f"{len(devs)} ASC(s)", {"DEVS": devs}

    def _rpc_temps(self) -> tuple[int, str, dict[str, Any]]:
        temps = [{"TEMP": n, "ID": int(b["id"]), "Board": b["board_temp"]["degree_c"],
                  "Chip": b["highest_chip_temp"]["temperature"]["degree_c"]}
                 for n, b in enumerate(self._boards())]
        return 201, f"{len(temps)} Temp(s)", {"TEMPS": temps}

    def _rpc_fans(self) -> tuple[int, str, dict[str, Any]]:
        fans = [{"FAN": f["position"], "ID": f["position"], "RPM": f["rpm"],
                 "Speed": round(100 * f["target_speed_ratio"])}
                for f in _capture("cooling_state")["fans"]]
        return 202, f"{len(fans)} Fan(s)", {"FANS": fans}

    def _rpc_tunerstatus(self) -> tuple[int, str, dict[str, Any]]:
        power = round(self.state.power_w())
        chains = [{"HashchainIndex": int(b["id"]), "Status": "Stable",
                   "PowerLimitWatt": self.power_target_w // len(self._boards()),
                   "ApproximatePowerConsumptionWatt": power // len(self._boards())}
                  for b in self._boards()]
        return 203, "Tuner Status", {"TUNERSTATUS": [{
            "PowerLimit": self.power_target_w, "ApproximateMinerPowerConsumption": power,
            "ApproximateChainPowerConsumption": power, "DynamicPowerScaling": "Disabled",
            "TunerChainStatus": chains}]}

    def _rpc_pools(self) -> tuple[int, str, dict[str, Any]]:
        pools = [{"POOL": n, "URL": p["url"], "User": p["user"],
                  "Status": "Alive" if p["alive"] else "Dead", "Stratum Active": p["active"],
                  "Accepted": p["stats"]["accepted_shares"],
                  "Rejected": p["stats"]["rejected_shares"]}
                 for n, p in enumerate(p for g in _capture("pools") for p in g["pools"])]
        return 7, f"{len(pools)} Pool(s)", {"POOLS": pools}

    def _rpc_tempctrl(self) -> tuple[int, str, dict[str, Any]]:
        return 200, "Temperature control", {"TEMPCTRL": [
            {"Dangerous": 110, "Hot": 100, "Mode": "Automatic", "Target": 89}]}


class _Handlers(grpc.GenericRpcHandler):
    """Method path -> behaviour; requests and replies are raw bytes (protowire on both ends)."""

    def __init__(self, sim: BraiinsSim) -> None:
        self.sim = sim
        # Reads answer from the miner's state, so a rendered reply may be remembered under
        # that state; actions change the state and run on every call (an empty PauseMining
        # looks like a read, but answering it from the cache would skip the pause).
        reads: dict[str, Handler] = {
            "MinerService/GetMinerDetails": sim.miner_details,
            "MinerService/GetMinerStats": sim.miner_stats,
            "MinerService/GetHashboards": sim.hashboards,
            "CoolingService/GetCoolingState": sim.cooling_state,
            "PerformanceService/GetTunerState": sim.tuner_state,
            "PerformanceService/GetActivePerformanceMode": sim.performance_mode,
            "ConfigurationService/GetConstraints": sim.constraints,
            "ConfigurationService/GetMinerConfiguration": sim.configuration,
            "PoolService/GetPoolGroups": sim.pool_groups,
            "ActionsService/GetLocateDeviceStatus": sim.locate_status,
        }
        actions: dict[str, Handler] = {
            "ActionsService/SetLocateDeviceStatus": self._locate,
            "ActionsService/PauseMining": self._pause,
            "ActionsService/ResumeMining": self._resume,
            "ActionsService/Restart": self._restart,
            "ActionsService/Reboot": self._reboot,
        }
        self.reads = {f"/braiins.bos.v1.{name}": fn for name, fn in reads.items()}
        self.actions = {f"/braiins.bos.v1.{name}": fn for name, fn in actions.items()}

    def service(self, handler_call_details: grpc.HandlerCallDetails
                ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method == "/braiins.bos.v1.AuthenticationService/Login":
            return grpc.unary_unary_rpc_method_handler(self._login)
        if method == "/braiins.bos.ApiVersionService/GetApiVersion":
            return grpc.unary_unary_rpc_method_handler(self._api_version)
        if method == "/braiins.bos.v1.PerformanceService/SetPowerTarget":
            return grpc.unary_unary_rpc_method_handler(self._set_power_target)
        if method in self.reads:
            return grpc.unary_unary_rpc_method_handler(functools.partial(self._read, method))
        if method in self.actions:
            return grpc.unary_unary_rpc_method_handler(functools.partial(self._act, method))
        self.sim.refused.append(method)
        return None  # grpc answers UNIMPLEMENTED

    async def _check(self, method: str, context: Any) -> None:
        """Count the call; hang it if the miner hangs; abort it UNAUTHENTICATED without a
        live token."""
        self.sim.grpc_calls.append(method.rsplit("/", 1)[-1])
        await self.sim.hang(rpc_context=context)
        token = dict(context.invocation_metadata() or ()).get("authorization")
        if not self.sim.authorised(token if isinstance(token, str) else None):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated")

    async def _read(self, method: str, request: bytes, context: Any) -> bytes:
        await self._check(method, context)
        reply = self.sim.rendered((method, *self.sim.state_key(method)),
                                  lambda: self.reads[method](w.decode(request)))
        await self.sim.delay()
        return reply

    async def _act(self, method: str, request: bytes, context: Any) -> bytes:
        await self._check(method, context)
        reply = self.actions[method](w.decode(request))
        await self.sim.delay()
        return reply

    async def _login(self, request: bytes, context: Any) -> bytes:
        self.sim.grpc_calls.append("Login")
        await self.sim.hang(rpc_context=context)
        result = self.sim.login(w.decode(request))
        await self.sim.delay()
        if result is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid username or password")
            raise AssertionError("unreachable")
        body, token = result
        await context.send_initial_metadata((("authorization", token),))
        return body

    async def _api_version(self, request: bytes, context: Any) -> bytes:
        self.sim.grpc_calls.append("GetApiVersion")
        await self.sim.hang(rpc_context=context)
        await self.sim.delay()
        return self.sim.api_version(w.decode(request))

    async def _set_power_target(self, request: bytes, context: Any) -> bytes:
        await self._check("/braiins.bos.v1.PerformanceService/SetPowerTarget", context)
        fields = w.decode(request)
        power = w.decode(_raw(w.first(fields, 2, b"")))
        watts = int(w.first(power, 1, 0))
        if not CONSTRAINT_MIN_W <= watts <= CONSTRAINT_MAX_W:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"Power target {watts} W is out of range "
                                f"{CONSTRAINT_MIN_W}-{CONSTRAINT_MAX_W} W")
        if not self.sim.ignores_commands:  # Fault.IGNORE: answered as set, nothing changes
            self.sim.apply_power_target(watts, int(w.first(fields, 1, 0)))
        await self.sim.delay()
        return w.message(1, _power(watts))

    def _locate(self, request: w.Fields) -> bytes:
        self.sim.locate = bool(w.first(request, 1, 0))
        return w.uint(1, self.sim.locate)

    def _pause(self, _request: w.Fields) -> bytes:
        already = self.sim.paused
        if not self.sim.ignores_commands:
            self.sim.state.sleep()
        return w.uint(1, already)

    def _resume(self, _request: w.Fields) -> bytes:
        already = not self.sim.paused
        if not self.sim.ignores_commands:
            self.sim.state.wake()
        return w.uint(1, already)

    def _restart(self, _request: w.Fields) -> bytes:
        """bosminer restarts: it mines again after the warm-up (RestartResponse)."""
        self.sim.state.sleeping = True
        self.sim.state.wake()
        return w.uint(1, True)  # already_running

    def _reboot(self, request: w.Fields) -> bytes:
        self._restart(request)
        return b""  # RebootResponse has no fields
