"""Many simulated miners in one asyncio loop on a background thread, with per-miner faults.

    fleet = SimFleet.of(["antminer", "luxos", "whatsminer"], warmup_s=1.0).start()
    hal.asic.discover(fleet.discover_options())
    fleet.set_fault(0, Fault.HANG)
    fleet.stop()

`python -m hal.sim.asic.fleet --count 500 --fault hang:10%` runs a fleet in its own process
(for benchmarks) and prints the discover options as one JSON line; it stops when stdin closes.
`--fault` picks which miners fail and how (see `--help` and `fault_plan`); the process raises
its soft RLIMIT_NOFILE to the hard limit (a miner holds a listening socket per port and one
per client connection) and says so on stderr.

Clients that only know the standard ports (pyasic: RPC 4028, web 80, Braiins gRPC 50051,
Whatsminer API v3 4433) need one address per miner: `SimFleet.of(..., standard_ports=True)`
puts each miner on its own loopback address 127.x.y.z where every port such a client tries is
free, so nothing else on the machine answers in its place.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hal.sim.asic.antminer import AntminerSim
from hal.sim.asic.avalon import AvalonSim
from hal.sim.asic.braiins import BraiinsSim
from hal.sim.asic.cgminer import CgminerSim
from hal.sim.asic.luxos import LuxosSim
from hal.sim.asic.server import LOOPBACK, Fault, FirmwareServer
from hal.sim.asic.whatsminer import WhatsminerSim, WhatsminerV3Sim

T = TypeVar("T")

SIM_CLASSES: dict[str, Callable[..., FirmwareServer]] = {
    "antminer": AntminerSim,
    "luxos": LuxosSim,
    "whatsminer": WhatsminerSim,
    "whatsminer_v3": WhatsminerV3Sim,
    "avalon": AvalonSim,
    "braiins": BraiinsSim,
    "cgminer": CgminerSim,
}
DEFAULT_FAMILIES = ("antminer", "luxos", "whatsminer", "avalon", "braiins")
RPC_PORT, WEB_PORT, GRPC_PORT, WHATSMINER_V3_PORT = 4028, 80, 50051, 4433
# Every port pyasic tries on a miner (4028, http/https, btminer v3, BOSer gRPC, btminer 8889).
CLIENT_PORTS = (RPC_PORT, WEB_PORT, 443, WHATSMINER_V3_PORT, GRPC_PORT, 8889)


def ports_free(host: str, ports: Sequence[int]) -> bool:
    """Whether every port in `ports` can be bound on `host` right now."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except PermissionError as exc:
                raise RuntimeError(f"cannot bind {host}:{port}: ports below 1024 need root "
                                   f"(or net.ipv4.ip_unprivileged_port_start)") from exc
            except OSError:
                return False
    return True


def loopback_hosts(count: int, ports: Sequence[int] = CLIENT_PORTS) -> list[str]:
    """`count` addresses in 127.0.0.0/8 (loopback only) where every port in `ports` is free,
    from a random /16 so that concurrent test runs rarely meet."""
    found: list[str] = []
    for _attempt in range(8):
        block = random.randrange(32, 255)
        for index in range(256 * 254):
            host = f"127.{block}.{index // 254}.{index % 254 + 1}"
            if ports_free(host, ports):
                found.append(host)
                if len(found) == count:
                    return found
    raise RuntimeError(f"only {len(found)} of {count} loopback addresses have {ports} free")


def _standard_ports(family: str) -> dict[str, int]:
    if family == "whatsminer_v3":
        return {"port": WHATSMINER_V3_PORT}
    extra = {"port": RPC_PORT}
    if family == "antminer":
        extra["web_port"] = WEB_PORT
    if family == "braiins":
        extra["grpc_port"] = GRPC_PORT
    return extra


class SimFleet:
    def __init__(self, miners: Sequence[FirmwareServer]) -> None:
        self.miners = list(miners)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, families: Sequence[str], *, host: str = LOOPBACK, standard_ports: bool = False,
           **kwargs: Any) -> SimFleet:
        """One simulator per family name; all on `host` with ports the OS picks, or with
        `standard_ports` each on its own loopback address with the firmware's own ports."""
        hosts = loopback_hosts(len(families)) if standard_ports else [host] * len(families)
        miners = []
        for family, miner_host in zip(families, hosts, strict=True):
            if family not in SIM_CLASSES:
                raise ValueError(f"no simulator for {family!r}; have {sorted(SIM_CLASSES)}")
            extra = {k: v for k, v in kwargs.items() if family != "cgminer"}
            if family == "whatsminer_v3":
                extra.pop("warmup_s", None)
            ports = _standard_ports(family) if standard_ports else {"port": 0}
            miners.append(SIM_CLASSES[family](miner_host, **ports, **extra))
        return cls(miners)

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        if self._loop is None:
            raise RuntimeError("fleet not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> SimFleet:
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="sim-asic-fleet",
                                        daemon=True)
        self._thread.start()
        self._loop = loop

        async def start_all() -> None:
            for miner in self.miners:
                await miner.start()

        self._run(start_all(), timeout_s=120.0)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(m.stop() for m in self.miners), return_exceptions=True)

        try:
            self._run(stop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def addresses(self) -> list[str]:
        return [m.address for m in self.miners]

    def power_off(self, index: int) -> None:
        """The miner goes off the network: its ports close (connections are refused)."""
        self._run(self.miners[index].stop())

    def power_on(self, index: int) -> None:
        """...and comes back on the same ports."""
        self._run(self.miners[index].start())

    def set_fault(self, index: int, fault: Fault | str, slow_s: float | None = None) -> None:
        """Make miner `index` fail (Fault.HANG, REFUSE, SLOW after `slow_s` seconds, IGNORE,
        or a malformed reply) or recover (Fault.NONE); REFUSE closes its ports, the next
        fault opens them again on the same ports."""
        self._run(self.miners[index].apply_fault(Fault(fault), slow_s))

    def apply_faults(self, plan: Mapping[int, tuple[Fault, float]]) -> None:
        """Every miner's fault from a `fault_plan`."""
        for index, (fault, slow_s) in plan.items():
            self.set_fault(index, fault, slow_s)

    def discover_options(self, **extra: Any) -> dict[str, Any]:
        """Options for `hal.asic.discover` that point at every miner of this fleet."""
        return {"miners": [m.discover_entry() for m in self.miners], **extra}


def start_demo_fleet(warmup_s: float = 5.0) -> tuple[SimFleet, dict[str, Any]]:
    """An Antminer S19 Pro (stock), a LuxOS S19k Pro, a Whatsminer and a Braiins OS S19 XP,
    and the options for them."""
    fleet = SimFleet.of(["antminer", "luxos", "whatsminer", "braiins"],
                        warmup_s=warmup_s).start()
    return fleet, fleet.discover_options()


FAULT_HELP = """\
--fault KIND[=SECONDS]:WHICH makes some miners fail; repeat it to mix faults (a miner has at
most one). KIND: hang (accepts connections, never answers), refuse (nothing listens: connection
refused), slow=SECONDS (answers every request after SECONDS), ignore (answers success to
sleep, wake, power-limit and mode commands and changes nothing: it keeps drawing power and
hashing), or a malformed-reply fault (reset, half, huge, garbage, no_comma, bare_nan, trailing,
status_object). WHICH: a share of the fleet, "10%" (spread evenly over the miners no earlier
--fault took, so the same arguments always pick the same miners), or miner indexes and
ranges, "0,5,10-19". Examples: --fault hang:10% --fault slow=3:0-4 --fault ignore:7"""


def fault_plan(specs: Sequence[str], count: int) -> dict[int, tuple[Fault, float]]:
    """{miner index: (fault, slow_s)} for `--fault` specs over a fleet of `count` (see
    FAULT_HELP); ValueError naming the spec when one is malformed or two give one miner a
    fault each. Deterministic: a benchmark computes the same plan to know which are faulty."""
    plan: dict[int, tuple[Fault, float]] = {}
    for spec in specs:
        kind_text, sep, which = spec.partition(":")
        name, eq, seconds = kind_text.partition("=")
        try:
            fault = Fault(name.strip().lower())
        except ValueError:
            raise ValueError(f"--fault {spec!r}: unknown fault {name!r}; known: "
                             f"{', '.join(f for f in Fault if f is not Fault.NONE)}") from None
        if not sep or not which.strip() or fault is Fault.NONE:
            raise ValueError(f"--fault {spec!r}: give KIND[=SECONDS]:WHICH, e.g. hang:10%")
        slow_s = 0.0
        if fault is Fault.SLOW:
            try:
                slow_s = float(seconds)
            except ValueError:
                raise ValueError(f"--fault {spec!r}: slow needs its delay, slow=SECONDS") \
                    from None
            if not 0 < slow_s <= 3600:
                raise ValueError(f"--fault {spec!r}: the delay must be in (0, 3600] s")
        elif eq:
            raise ValueError(f"--fault {spec!r}: only slow takes =SECONDS")
        for index in _selected(spec, which.strip(), count, plan):
            if index in plan:
                raise ValueError(f"--fault {spec!r}: miner {index} already has the fault "
                                 f"{plan[index][0]}")
            plan[index] = (fault, slow_s)
    return plan


def _selected(spec: str, which: str, count: int,
              taken: Mapping[int, object]) -> list[int]:
    if which.endswith("%"):
        try:
            share = float(which[:-1]) / 100
        except ValueError:
            raise ValueError(f"--fault {spec!r}: {which!r} is not a percentage") from None
        if not 0 <= share <= 1:
            raise ValueError(f"--fault {spec!r}: the share must be 0-100%")
        free = [i for i in range(count) if i not in taken]
        wanted = min(len(free), round(share * count))
        return [free[int(k * len(free) / wanted)] for k in range(wanted)]
    indexes: list[int] = []
    for part in which.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ValueError(f"--fault {spec!r}: {part!r} is not an index or a range") from None
        if not 0 <= first <= last < count:
            raise ValueError(f"--fault {spec!r}: {part!r} is outside the fleet (0-{count - 1})")
        indexes += range(first, last + 1)
    return indexes


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return soft, target
    return soft, soft


@dataclass(frozen=True, slots=True)
class FleetRun:
    """A simulated fleet in a process of its own (see `fleet_process`)."""

    options: dict[str, Any]  # [hal.asic] discover options for every miner, in fleet order
    faults: dict[int, tuple[Fault, float]]  # miner index -> (fault, slow_s), as fault_plan

    def healthy(self) -> list[int]:
        return [i for i in range(len(self.options["miners"])) if i not in self.faults]


@contextlib.contextmanager
def fleet_process(count: int, families: Sequence[str] = DEFAULT_FAMILIES, *,
                  faults: Sequence[str] = (), standard_ports: bool = False,
                  warmup_s: float = 1.0, response_s: float = 0.0,
                  extra_args: Sequence[str] = ()) -> Iterator[FleetRun]:
    """Run `count` simulated miners (families in turn) in their own process, as a real fleet
    does not share its client's interpreter, with `faults` as `--fault` specs (FAULT_HELP);
    yield what the client needs; the fleet stops when the block ends. For benches and tests:

        with fleet_process(1000, faults=["hang:10%"]) as fleet:
            devices = hal.asic.discover(fleet.options)"""
    args = ["--count", str(count), "--families", ",".join(families),
            "--warmup-s", str(warmup_s), "--response-s", str(response_s), *extra_args]
    for spec in faults:
        args += ["--fault", spec]
    if standard_ports:
        args.append("--standard-ports")
    plan = fault_plan(faults, count)  # the process picks the same miners
    root = str(Path(__file__).resolve().parents[3])  # this hal's checkout, for the child too
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hal.sim.asic.fleet import main; "
         "sys.exit(main(sys.argv[1:]))", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": path})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fleet process ended at start (exit {process.wait()})")
        yield FleetRun(json.loads(line), plan)
    finally:
        if process.stdin is not None:
            process.stdin.close()  # the fleet stops at the end of its standard input
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=FAULT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--standard-ports", action="store_true",
                        help="each miner on its own loopback address with the standard ports")
    parser.add_argument("--response-s", type=float, default=0.0,
                        help="seconds a miner's power takes to reach a new target")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND[=S]:WHICH",
                        help="make some miners fail (see below); repeatable")
    args = parser.parse_args(argv)
    try:
        plan = fault_plan(args.fault, args.count)
    except ValueError as exc:
        parser.error(str(exc))
    before, after = raise_fd_limit()
    print(f"fleet: RLIMIT_NOFILE soft limit {before} -> {after} (hard limit)", file=sys.stderr)
    families = args.families.split(",")
    fleet = SimFleet.of([families[i % len(families)] for i in range(args.count)],
                        warmup_s=args.warmup_s, standard_ports=args.standard_ports).start()
    for miner in fleet.miners:  # every family's simulator keeps a MinerState
        state = getattr(miner, "state", None)
        if state is not None:
            state.response_s = args.response_s
    fleet.apply_faults(plan)
    if plan:
        counts: dict[str, int] = {}
        for fault, _slow_s in plan.values():
            counts[str(fault)] = counts.get(str(fault), 0) + 1
        print(f"fleet: faults {counts} of {args.count} miners", file=sys.stderr)
    print(json.dumps(fleet.discover_options()), flush=True)
    try:
        sys.stdin.read()
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
