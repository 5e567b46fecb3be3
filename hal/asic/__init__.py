"""ASIC miners over their firmware APIs: identification, discovery and the family factory.

`discover(options)` only contacts what the configuration lists (`miners`, `subnets`); with no
options it returns [] and sends nothing. Families: antminer (stock), luxos, whatsminer,
whatsminer_v3 (API v3 reads, TCP 4433),
avalon, braiins, cgminer (generic reads).

Options:
    miners:      ["host:port", {"address": "host:port", "family": "luxos",
                  "username": ..., "password": ..., "web_port": 80, "simulated": false}, ...]
    subnets:     ["10.0.0.0/24"]  (at most /22 each), scanned on `port` (default 4028)
    timeout_s, concurrency, simulated,
    credentials: {"<family>": {"username": ..., "password": ...}}  defaults per family
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any

from hal.asic.antminer import AntminerMiner
from hal.asic.avalon import AvalonMiner
from hal.asic.base import Miner, MinerConfig, poll_all, poll_all_sync, run_sync
from hal.asic.braiins import BraiinsMiner, CgminerMiner
from hal.asic.luxos import LuxosMiner
from hal.asic.transport import DEFAULT_CONCURRENCY, DEFAULT_PORT, Reply, RpcClient, gather_bounded
from hal.asic.webclient import http_request
from hal.asic.whatsminer import WhatsminerMiner, WhatsminerV3Miner
from hal.device import Capability, Device, DeviceInfo, DeviceKind, Health, HealthState, Telemetry
from hal.errors import DeviceLost, HalError, InvalidArgument, NotSupported

FAMILIES: dict[str, type[Miner]] = {
    cls.family: cls
    for cls in (AntminerMiner, LuxosMiner, WhatsminerMiner, WhatsminerV3Miner, AvalonMiner,
                BraiinsMiner, CgminerMiner)
}
MAX_SUBNET_ADDRESSES = 1024  # a /22
DEFAULT_DISCOVER_TIMEOUT_S = 3.0

_OPTIONS = frozenset({"miners", "subnets", "port", "timeout_s", "concurrency", "simulated",
                      "credentials", "username", "password", "web_port"})
_MINER_KEYS = frozenset({"address", "family", "username", "password", "web_port", "simulated",
                         "timeout_s"})

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
    "discover",
    "family_from_version",
    "identify",
    "make_miner",
    "poll_all",
    "poll_all_sync",
]


def family_from_version(data: Mapping[str, Any]) -> str:
    """The firmware family from a `version` (or `devdetails`/`get_version`) reply; "" if unknown."""
    text = json.dumps(data).lower()
    if "luxminer" in text:
        return "luxos"
    if "boser" in text or "bosminer" in text or "braiins" in text:
        return "braiins"
    if "whatsminer" in text or '"api_ver"' in text or '"btmineroff"' in text:
        return "whatsminer"
    if "avalon" in text or ('"prod"' in text and "canaan" in text):
        return "avalon"
    if "bmminer" in text or '"type": "antminer' in text:
        return "antminer"
    return ""


async def identify(host: str, port: int = DEFAULT_PORT, *, timeout_s: float = 3.0,
                   web_port: int | None = None) -> tuple[str, Reply | None]:
    """(family, version reply) for the miner at host:port. Raises DeviceLost/Timeout if silent."""
    rpc = RpcClient(host, port, timeout_s=timeout_s, connect_timeout_s=min(2.0, timeout_s))
    version: Reply | None = None
    try:
        version = await rpc.request("version", check=False)
        family = family_from_version(version.data)
        if family:
            return family, version
    except NotSupported:
        pass
    except HalError:
        if version is None:
            # Whatsminer answers `{"cmd": ...}` only; fall through to its own probe.
            pass
    try:
        probe = await rpc.send_json({"cmd": "get_version"})
        if family_from_version(probe.data) == "whatsminer":
            return "whatsminer", probe
    except HalError:
        pass
    try:
        details = await rpc.request("devdetails", check=False)
        family = family_from_version(details.data)
        if family:
            return family, version
        if any(str(d.get("Name")) == "SM" for d in details.section("DEVDETAILS")):
            return "whatsminer", version
    except HalError:
        pass
    if web_port:
        try:
            response = await http_request(host, web_port, "GET", "/", timeout_s=timeout_s)
            if "antminer" in response.headers.get("www-authenticate", "").lower():
                return "antminer", version
        except HalError:
            pass
    if version is not None and version.ok:
        return "cgminer", version
    try:
        framed = await rpc.exchange_framed({"cmd": "get.device.info"})
        if isinstance(framed.data.get("msg"), dict) and "miner" in framed.data["msg"]:
            return "whatsminer_v3", framed
    except HalError:
        pass
    raise NotSupported(f"{host}:{port}: firmware not recognised")


def make_miner(family: str, config: MinerConfig, version: Reply | None = None) -> Miner:
    cls = FAMILIES.get(family)
    if cls is None:
        raise InvalidArgument(f"unknown miner family {family!r}; known: {sorted(FAMILIES)}")
    return cls(config, version)


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


def _entry_config(entry: Any, options: Mapping[str, Any]) -> tuple[MinerConfig, str]:
    if isinstance(entry, str):
        entry = {"address": entry}
    if not isinstance(entry, Mapping) or "address" not in entry:
        raise InvalidArgument(f"each miner needs an address: {entry!r}")
    unknown = set(entry) - _MINER_KEYS
    if unknown:
        raise InvalidArgument(f"unknown miner option(s) {sorted(unknown)}")
    host, port = _split_address(str(entry["address"]), int(options.get("port", DEFAULT_PORT)))
    family = str(entry.get("family", ""))
    if family and family not in FAMILIES:
        raise InvalidArgument(f"unknown miner family {family!r}; known: {sorted(FAMILIES)}")
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
        timeout_s=float(entry.get("timeout_s", options.get("timeout_s", 5.0))),
        simulated=bool(entry.get("simulated", options.get("simulated", False))),
    )


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
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidArgument(
            f"unknown asic option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}"
        )
    miners_opt = options.get("miners", []) or []
    subnets = options.get("subnets", []) or []
    if not isinstance(miners_opt, (list, tuple)) or not isinstance(subnets, (list, tuple)):
        raise InvalidArgument("asic options `miners` and `subnets` must be lists")
    concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
    timeout_s = float(options.get("timeout_s", DEFAULT_DISCOVER_TIMEOUT_S))
    if concurrency < 1 or timeout_s <= 0:
        raise InvalidArgument("concurrency must be >= 1 and timeout_s > 0")
    entries = [_entry_config(e, options) for e in miners_opt]
    port = int(options.get("port", DEFAULT_PORT))
    listed = {c.address for c, _ in entries}
    for host in _subnet_hosts(subnets):
        if f"{host}:{port}" not in listed:
            entries.append((_config(host, port, "", {}, options), ""))

    async def resolve(config: MinerConfig, family: str) -> Miner:
        if family:
            return make_miner(family, config)
        found, version = await identify(config.host, config.port, timeout_s=timeout_s,
                                        web_port=config.web_port if config.web_port != 80
                                        else None)
        config = _config(config.host, config.port, found,
                         {"username": config.username, "password": config.password,
                          "web_port": config.web_port, "simulated": config.simulated,
                          "timeout_s": config.timeout_s}, options)
        return make_miner(found, config, version)

    results = await gather_bounded([resolve(c, f) for c, f in entries], concurrency)
    found: list[Device] = []
    for (config, _family), result in zip(entries, results, strict=True):
        if isinstance(result, Miner):
            found.append(result)
        elif config.address in listed:  # listed by the operator: keep it visible
            reason = f"not identified: {type(result).__name__}: {result}"
            found.append(UnidentifiedMiner(config, reason, timeout_s))
    return found


class UnidentifiedMiner(Device):
    """A configured miner that did not answer identification yet.

    It stays in inventory (unhealthy, with the reason) instead of vanishing, and tries to
    identify its firmware again on every poll; once that works it becomes the family's device.
    """

    kind = DeviceKind.ASIC

    def __init__(self, config: MinerConfig, reason: str, timeout_s: float) -> None:
        self.config = config
        self.id = f"asic/{config.address}"
        self.reason = reason
        self._timeout_s = timeout_s
        self._miner: Miner | None = None
        self.capabilities = frozenset({Capability.TELEMETRY})

    def _resolve(self) -> Miner:
        if self._miner is None:
            try:
                family, version = run_sync(
                    lambda: identify(self.config.host, self.config.port,
                                     timeout_s=self._timeout_s), self._timeout_s * 4 + 1)
            except HalError as exc:
                self.reason = f"not identified: {type(exc).__name__}: {exc}"
                raise DeviceLost(f"{self.id}: {self.reason}") from exc
            config = dataclasses.replace(self.config, family=family)
            self._miner = make_miner(family, config, version)
            self.capabilities = self._miner.capabilities
        return self._miner

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


def discover(options: Mapping[str, Any]) -> list[Device]:
    """Miners the configuration lists; nothing is scanned unless `subnets` says so."""
    if not options or (not options.get("miners") and not options.get("subnets")):
        unknown = set(options or {}) - _OPTIONS
        if unknown:
            raise InvalidArgument(f"unknown asic option(s) {sorted(unknown)}")
        return []
    budget = float(options.get("timeout_s", DEFAULT_DISCOVER_TIMEOUT_S)) * 4 + 5.0
    miners = run_sync(lambda: discover_async(options), budget)
    return list(miners)
