"""ASIC miners over their firmware APIs: identification, discovery and the family factory.

`discover(options)` only contacts what the configuration lists (`miners`, `subnets`); with no
options it returns [] and sends nothing. Families: antminer (stock), luxos, whatsminer,
whatsminer_v3 (API v3 reads, TCP 4433),
avalon, braiins, cgminer (generic reads).

Options:
    miners:      ["host:port", {"address": "host:port", "family": "luxos",
                  "username": ..., "password": ..., "web_port": 80, "grpc_port": 50051,
                  "simulated": false}, ...]
    subnets:     ["10.0.0.0/24"]  (at most /22 each), scanned on `port` (default 4028)
    timeout_s:   identification's deadline (discover returns by then) and each miner's
                 request timeout
    concurrency: at most this many identifications at once (default: as many as file
                 descriptors allow)
    simulated,
    credentials: {"<family>": {"username": ..., "password": ...}}  defaults per family

Every miner is read natively on the caller's event loop (`telemetry_async`, `async_io`), or
through the blocking API on the HAL's own I/O loop; see hal.asic.base.Miner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from hal.asic.antminer import AntminerMiner
from hal.asic.avalon import AvalonMiner
from hal.asic.base import (
    CONNECTIONS_PER_READ,
    Miner,
    MinerConfig,
    SingleFlight,
    poll_all,
    poll_all_sync,
    run_sync,
)
from hal.asic.braiins import BraiinsMiner, CgminerMiner
from hal.asic.luxos import LuxosMiner
from hal.asic.transport import DEFAULT_PORT, Reply, RpcClient, fd_headroom
from hal.asic.webclient import HttpResponse, http_request
from hal.asic.whatsminer import WhatsminerMiner, WhatsminerV3Miner
from hal.device import Capability, Device, DeviceInfo, DeviceKind, Health, HealthState, Telemetry
from hal.errors import DeviceLost, HalError, InvalidArgument, NotSupported, Timeout

FAMILIES: dict[str, type[Miner]] = {
    cls.family: cls
    for cls in (AntminerMiner, LuxosMiner, WhatsminerMiner, WhatsminerV3Miner, AvalonMiner,
                BraiinsMiner, CgminerMiner)
}
MAX_SUBNET_ADDRESSES = 1024  # a /22
DEFAULT_DISCOVER_TIMEOUT_S = 3.0
# Connections one identification may hold at once (the second round: devdetails,
# get_version and the web page where a web port is given; the first holds two).
PROBES_PER_IDENTIFY = 3

_OPTIONS = frozenset({"miners", "subnets", "port", "timeout_s", "concurrency", "simulated",
                      "credentials", "username", "password", "web_port", "grpc_port"})
_MINER_KEYS = frozenset({"address", "family", "username", "password", "web_port", "grpc_port",
                         "simulated", "timeout_s"})

__all__ = [
    "FAMILIES",
    "AntminerMiner",
    "AvalonMiner",
    "BraiinsMiner",
    "CgminerMiner",
    "LuxosMiner",
    "Miner",
    "MinerConfig",
    "UnidentifiedMiner",
    "WhatsminerMiner",
    "WhatsminerV3Miner",
    "check_options",
    "descriptors_needed",
    "discover",
    "family_from_version",
    "identify",
    "make_miner",
    "poll_all",
    "poll_all_sync",
]


def family_from_version(data: Mapping[str, Any]) -> str:
    """The firmware family from a `version`, `devdetails` or `get_version` reply; "" if unknown.

    Only text real firmware sends counts: LUXminer, BOSer/bosminer, btminer/bitmicro (and the
    "whatsminer v1.x" API version, `api_ver`, `btmineroff`), Avalon/Canaan, bmminer/Antminer."""
    text = json.dumps(data).lower()
    if "luxminer" in text:
        return "luxos"
    if "boser" in text or "bosminer" in text or "braiins" in text:
        return "braiins"
    if ("btminer" in text or "bitmicro" in text or "whatsminer" in text
            or '"api_ver"' in text):
        return "whatsminer"
    if "avalon" in text or ('"prod"' in text and "canaan" in text):
        return "avalon"
    if "bmminer" in text or '"type": "antminer' in text:
        return "antminer"
    return ""


async def identify(host: str, port: int = DEFAULT_PORT, *, timeout_s: float = 3.0,
                   web_port: int | None = None) -> tuple[str, Reply | None]:
    """(family, version reply) for the miner at host:port, within one `timeout_s`.

    Two rounds of probes, each sent at once, the first reply that names a family winning: the
    cgminer `version` and the API v3 framed `get.device.info` (which name every family but
    Whatsminer v2), then, only if neither did, `devdetails`, Whatsminer's `get_version` and
    the Antminer web page. A fleet mostly answers the first round: a third of the
    connections, which decides how many miners one core identifies within the timeout. A
    miner that answers nothing raises Timeout, a closed port DeviceLost, one that answers in
    a way no family matches NotSupported."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    rpc = RpcClient(host, port, timeout_s=timeout_s, connect_timeout_s=timeout_s)
    answers: dict[str, Any] = {}
    first: dict[str, Callable[[], Awaitable[Any]]] = {
        "version": lambda: rpc.request("version", check=False),
        "framed": lambda: rpc.exchange_framed({"cmd": "get.device.info"}),
    }
    found = await _probe(first, answers)
    if found is not None:
        return found
    if not all(isinstance(a, Timeout) for a in answers.values()):  # it answers: ask more
        then: dict[str, Callable[[], Awaitable[Any]]] = {
            "devdetails": lambda: rpc.request("devdetails", check=False),
            "get_version": lambda: rpc.send_json({"cmd": "get_version"}),
        }
        if web_port:
            then["web"] = lambda: http_request(host, web_port, "GET", "/",
                                               timeout_s=max(0.05, deadline - loop.time()))
        rpc.timeout_s = max(0.05, deadline - loop.time())
        found = await _probe(then, answers)
        if found is not None:
            return found
    version = answers.get("version")
    if isinstance(version, Reply) and version.ok:
        return "cgminer", version
    raise _identify_error(f"{host}:{port}", answers, timeout_s)


async def _probe(probes: Mapping[str, Callable[[], Awaitable[Any]]],
                 answers: dict[str, Any]) -> tuple[str, Reply | None] | None:
    """Send `probes` at once; the first conclusive answer (the others cancelled), else None
    with every answer (or error) in `answers`."""
    tasks = {asyncio.ensure_future(probe()): name for name, probe in probes.items()}
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                answers[tasks[task]] = _task_result(task)
            found = _conclusive(answers)
            if found is not None:
                return found
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return None


def _task_result(task: asyncio.Future[Any]) -> Any:
    exc = task.exception()
    return exc if exc is not None else task.result()


def _conclusive(answers: Mapping[str, Any]) -> tuple[str, Reply | None] | None:
    version = answers.get("version")
    version = version if isinstance(version, Reply) else None
    for name in ("version", "devdetails", "get_version"):
        reply = answers.get(name)
        if isinstance(reply, Reply):
            family = family_from_version(reply.data)
            if family == "whatsminer":
                return family, answers.get("get_version") if isinstance(
                    answers.get("get_version"), Reply) else None
            if family:
                return family, version
            if name == "devdetails" and any(str(d.get("Name")) == "SM"
                                            for d in reply.section("DEVDETAILS")):
                return "whatsminer", None
    framed = answers.get("framed")
    if isinstance(framed, Reply) and isinstance(framed.data.get("msg"), dict) \
            and "miner" in framed.data["msg"]:
        return "whatsminer_v3", framed
    web = answers.get("web")
    if isinstance(web, HttpResponse) and \
            "antminer" in web.headers.get("www-authenticate", "").lower():
        return "antminer", version
    return None


def _identify_error(address: str, answers: Mapping[str, Any], timeout_s: float) -> HalError:
    errors = [a for a in answers.values() if isinstance(a, BaseException)]
    if errors and len(errors) == len(answers):
        if all(isinstance(e, Timeout) for e in errors):
            return Timeout(f"no answer on {address} within {timeout_s:g} s")
        lost = [e for e in errors if isinstance(e, DeviceLost)]
        if lost:
            return lost[0]
        first = errors[0]
        return first if isinstance(first, HalError) else DeviceLost(f"{address}: {first}")
    return NotSupported(f"{address} answers, but not as any firmware rigd knows "
                        f"(LuxOS, Braiins OS, Whatsminer, Avalon, Antminer, cgminer)")


def make_miner(family: str, config: MinerConfig, version: Reply | None = None) -> Miner:
    cls = FAMILIES.get(family)
    if cls is None:
        raise InvalidArgument(f"unknown miner family {family!r}; known: {sorted(FAMILIES)}")
    return cls(config, version)


def check_options(options: Mapping[str, Any]) -> None:
    """Validate every `[hal.asic]` option and each `miners` entry, sending nothing.

    Raises InvalidArgument naming the key (`timeout_s`, `miners[2].web_port`) and what it
    needs; `discover()` runs it first, `--check-config` can run it alone."""
    if not isinstance(options, Mapping):
        raise InvalidArgument("asic options must be a table of settings")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidArgument(
            f"unknown asic option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
    _check_common(options, "")
    for key in ("miners", "subnets"):
        if key in options and not isinstance(options[key], (list, tuple)):
            raise InvalidArgument(f"asic option {key} must be a list, got "
                                  f"{type(options[key]).__name__} {options[key]!r:.60}")
    if "concurrency" in options:
        _int_in(options["concurrency"], "concurrency", 1, 100_000)
    if "port" in options:
        _int_in(options["port"], "port", 1, 65535)
    creds = options.get("credentials", {})
    if not isinstance(creds, Mapping):
        raise InvalidArgument("asic option credentials must be a table of family -> "
                              "{username, password}")
    for family, entry in creds.items():
        if family not in FAMILIES:
            raise InvalidArgument(f"asic option credentials.{family}: unknown family; "
                                  f"known: {sorted(FAMILIES)}")
        if not isinstance(entry, Mapping) or set(entry) - {"username", "password"}:
            raise InvalidArgument(f"asic option credentials.{family} takes only "
                                  f"username and password")
        _check_common(entry, f"credentials.{family}.")
    for index, entry in enumerate(options.get("miners") or []):
        _entry_config(entry, options, f"miners[{index}]")
    _subnet_hosts(options.get("subnets") or [])


def _check_common(table: Mapping[str, Any], prefix: str) -> None:
    for key in ("username", "password"):
        if key in table and not isinstance(table[key], str):
            raise InvalidArgument(f"asic option {prefix}{key} must be text")
    for key in ("web_port", "grpc_port"):
        if key in table:
            _int_in(table[key], f"{prefix}{key}", 1, 65535)
    if "simulated" in table and not isinstance(table["simulated"], bool):
        raise InvalidArgument(f"asic option {prefix}simulated must be true or false, got "
                              f"{table['simulated']!r:.40}")
    if "timeout_s" in table:
        value = table["timeout_s"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or not 0 < value <= 600:
            raise InvalidArgument(f"asic option {prefix}timeout_s must be a number of seconds "
                                  f"in (0, 600], got {value!r:.40}")


def _int_in(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"asic option {key} must be an integer {low}-{high}, "
                              f"got {value!r:.40}")
    return value


def _split_address(address: str, default_port: int) -> tuple[str, int]:
    text = address.strip()
    if text.startswith("["):  # [::1]:4028
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else default_port
        ipaddress.ip_address(host) if host.replace(".", "").isdigit() or ":" in host else None
    except ValueError as exc:
        raise InvalidArgument(f"bad miner address {address!r}") from exc
    if not host or not 0 < port < 65536:
        raise InvalidArgument(f"bad miner address {address!r}")
    return host, port


def _entry_config(entry: Any, options: Mapping[str, Any],
                  where: str = "miners entry") -> tuple[MinerConfig, str]:
    if isinstance(entry, str):
        entry = {"address": entry}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("address"), str):
        raise InvalidArgument(f"asic option {where} needs an address \"host:port\", "
                              f"got {entry!r:.80}")
    unknown = set(entry) - _MINER_KEYS
    if unknown:
        raise InvalidArgument(f"asic option {where}: unknown key(s) {sorted(unknown)}; "
                              f"known: {sorted(_MINER_KEYS)}")
    _check_common(entry, f"{where}.")
    try:
        host, port = _split_address(entry["address"], int(options.get("port", DEFAULT_PORT)))
    except InvalidArgument as exc:
        raise InvalidArgument(f"asic option {where}.address: {exc}") from None
    family = entry.get("family", "")
    if not isinstance(family, str) or (family and family not in FAMILIES):
        raise InvalidArgument(f"asic option {where}.family: unknown miner family "
                              f"{family!r}; known: {sorted(FAMILIES)}")
    return _config(host, port, family, entry, options), family


def _config(host: str, port: int, family: str, entry: Mapping[str, Any],
            options: Mapping[str, Any]) -> MinerConfig:
    creds = options.get("credentials", {}) or {}
    if not isinstance(creds, Mapping):
        raise InvalidArgument("credentials must be a mapping of family -> {username, password}")
    family_creds = creds.get(family, {}) if family else {}
    return MinerConfig(
        host=host,
        port=port,
        family=family,
        username=str(entry.get("username") or family_creds.get("username")
                     or options.get("username") or ""),
        password=str(entry.get("password") or family_creds.get("password")
                     or options.get("password") or ""),
        web_port=int(entry.get("web_port", options.get("web_port", 80))),
        grpc_port=int(entry.get("grpc_port", options.get("grpc_port", 50051))),
        timeout_s=float(entry.get("timeout_s", options.get("timeout_s", 5.0))),
        simulated=bool(entry.get("simulated", options.get("simulated", False))),
    )


def descriptors_needed(options: Mapping[str, Any]) -> int:
    """File descriptors the configured fleet may hold at once: every miner listed, and every
    address of the subnets scanned, reading at the same time (as when all of them hang),
    CONNECTIONS_PER_READ each."""
    if not options:
        return 0
    entries = options.get("miners") or []
    listed = {str(e.get("address", "") if isinstance(e, Mapping) else e) for e in entries}
    port = int(options.get("port", DEFAULT_PORT))
    scanned = [h for h in _subnet_hosts(options.get("subnets") or [])
               if f"{h}:{port}" not in listed]
    return (len(entries) + len(scanned)) * CONNECTIONS_PER_READ


def _subnet_hosts(subnets: Sequence[Any]) -> list[str]:
    hosts: list[str] = []
    for subnet in subnets:
        try:
            network = ipaddress.ip_network(str(subnet), strict=False)
        except ValueError as exc:
            raise InvalidArgument(f"bad subnet {subnet!r}: {exc}") from exc
        if network.num_addresses > MAX_SUBNET_ADDRESSES:
            raise InvalidArgument(
                f"subnet {subnet} has {network.num_addresses} addresses; "
                f"the limit is {MAX_SUBNET_ADDRESSES} (/22): list smaller subnets"
            )
        found = list(network.hosts()) if network.num_addresses > 2 else list(network)
        hosts += [str(h) for h in found]
    return hosts


async def discover_async(options: Mapping[str, Any]) -> list[Device]:
    """Identify every listed miner (and subnet host) at once; returns by one identify timeout
    (`timeout_s`) after it starts, whatever the miners do: one that has not answered by then
    is not identified (a listed one stays visible as an UnidentifiedMiner, which tries again
    when read). As many identifications run at once as file descriptors allow (at most
    `concurrency` when given); a hung miner holds its connections until the deadline, so a
    fleet with more hung miners than that leaves the rest untried, and says so."""
    check_options(options)
    timeout_s = float(options.get("timeout_s", DEFAULT_DISCOVER_TIMEOUT_S))
    entries = [_entry_config(e, options) for e in options.get("miners") or []]
    port = int(options.get("port", DEFAULT_PORT))
    listed = {c.address for c, _ in entries}
    for host in _subnet_hosts(options.get("subnets") or []):
        if f"{host}:{port}" not in listed:
            entries.append((_config(host, port, "", {}, options), ""))
    unidentified = sum(1 for _c, family in entries if not family)
    at_once = max(1, min(unidentified or 1, int(options.get("concurrency", 1 << 30)),
                         fd_headroom() // PROBES_PER_IDENTIFY))
    slots = asyncio.Semaphore(at_once)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def resolve(config: MinerConfig, family: str) -> Miner:
        if family:
            return make_miner(family, config)
        started = False
        try:
            async with asyncio.timeout_at(deadline), slots:
                started = True
                found, version = await identify(
                    config.host, config.port, timeout_s=timeout_s,
                    web_port=config.web_port if config.web_port != 80 else None)
        except TimeoutError as exc:
            if started:
                raise Timeout(f"no answer on {config.address} within {timeout_s:g} s") from exc
            raise Timeout(f"{config.address} was not tried within discovery's {timeout_s:g} s: "
                          f"{at_once} identifications at once (what this process's file "
                          f"descriptors allow) all waited on miners that did not answer") \
                from exc
        config = _config(config.host, config.port, found,
                         {"username": config.username, "password": config.password,
                          "web_port": config.web_port, "grpc_port": config.grpc_port,
                          "simulated": config.simulated,
                          "timeout_s": config.timeout_s}, options)
        return make_miner(found, config, version)

    async def settled(config: MinerConfig, family: str) -> Miner | HalError:
        try:
            return await resolve(config, family)
        except HalError as exc:
            return exc

    tasks: list[asyncio.Task[Miner | HalError]] = []
    for config, family in entries:
        tasks.append(asyncio.ensure_future(settled(config, family)))
        if len(tasks) % 256 == 0:
            await asyncio.sleep(0)  # let the first ones' connections start meanwhile
    if tasks:
        # Every identification ends at the deadline by itself, but on a busy core thousands
        # of them take a while to unwind: return at the deadline, and let them close their
        # sockets after.
        await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()) + 0.05)
    results: list[Miner | HalError] = []
    for task, (config, _family) in zip(tasks, entries, strict=True):
        if task.done():
            results.append(task.result())
        else:
            task.cancel()
            results.append(Timeout(f"no answer on {config.address} within {timeout_s:g} s"))
    found: list[Device] = []
    for (config, _family), result in zip(entries, results, strict=True):
        if isinstance(result, Miner):
            found.append(result)
        elif config.address in listed:  # listed by the operator: keep it visible
            found.append(UnidentifiedMiner(config, f"not identified: {result}", timeout_s))
    return found


def discovery_budget_s(options: Mapping[str, Any]) -> float:
    """How long a blocking discover() may wait: one identify timeout, and a safety margin."""
    return float(options.get("timeout_s", DEFAULT_DISCOVER_TIMEOUT_S)) + 5.0


class UnidentifiedMiner(Device):
    """A configured miner that did not answer identification yet.

    It stays in inventory (unhealthy, with the reason) instead of vanishing, and tries to
    identify its firmware again when read (one identification in flight at a time, on the
    caller's event loop with telemetry_async); once that works it becomes the family's
    device.
    """

    kind = DeviceKind.ASIC
    async_io = True

    def __init__(self, config: MinerConfig, reason: str, timeout_s: float) -> None:
        self.config = config
        self.id = f"asic/{config.address}"
        self.reason = reason
        self._timeout_s = timeout_s
        self._miner: Miner | None = None
        self._identifying: SingleFlight[Miner] = SingleFlight(f"{self.id}: identification")
        self.capabilities = frozenset({Capability.TELEMETRY})

    async def _identify(self) -> Miner:
        try:
            family, version = await identify(self.config.host, self.config.port,
                                             timeout_s=self._timeout_s)
        except HalError as exc:
            self.reason = f"not identified: {exc}"
            raise DeviceLost(f"{self.id}: {self.reason}") from exc
        miner = make_miner(family, dataclasses.replace(self.config, family=family), version)
        self._miner = miner
        self.capabilities = miner.capabilities
        return miner

    def _resolve(self) -> Miner:
        if self._miner is not None:
            return self._miner
        return self._identifying.run_blocking(self._identify, self._timeout_s + 1.0)

    async def telemetry_async(self) -> Telemetry:
        miner = self._miner
        if miner is None:
            miner = await self._identifying.run_async(self._identify, self._timeout_s + 1.0)
        return await miner.telemetry_async()

    async def info_async(self) -> DeviceInfo:
        if self._miner is not None:
            return await self._miner.info_async()
        return self.info()

    def info(self) -> DeviceInfo:
        if self._miner is not None:
            return self._miner.info()
        return DeviceInfo(self.id, self.kind, name="unidentified miner",
                          simulated=self.config.simulated, attributes={"reason": self.reason})

    def health(self) -> Health:
        if self._miner is not None:
            return self._miner.health()
        return Health(HealthState.UNHEALTHY, self.reason)

    def telemetry(self) -> Telemetry:
        return self._resolve().telemetry()

    def sleep(self) -> None:
        self._resolve().sleep()

    def wake(self) -> None:
        self._resolve().wake()

    def set_power_limit(self, watts: float) -> None:
        self._resolve().set_power_limit(watts)

    def power_limit_range_w(self) -> tuple[float, float] | None:
        return self._resolve().power_limit_range_w()

    def power_modes(self) -> tuple[str, ...]:
        return self._resolve().power_modes()

    def power_mode(self) -> str | None:
        return self._resolve().power_mode()

    def mode_before_sleep(self) -> str | None:
        return self._resolve().mode_before_sleep()

    def set_power_mode(self, mode: str) -> None:
        self._resolve().set_power_mode(mode)

    def restart(self) -> None:
        self._resolve().restart()

    def switch_pool(self, index: int) -> None:
        self._resolve().switch_pool(index)


def discover(options: Mapping[str, Any]) -> list[Device]:
    """Miners the configuration lists; nothing is scanned unless `subnets` says so."""
    check_options(options or {})
    if not options or (not options.get("miners") and not options.get("subnets")):
        return []
    miners = run_sync(lambda: discover_async(options), discovery_budget_s(options))
    return list(miners)
