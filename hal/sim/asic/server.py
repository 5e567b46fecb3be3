"""The shared core of the firmware simulators: a loopback asyncio TCP server that replays captures.

Captures are static, so state (sleep, warm-up, power target) is applied by rewriting the
relevant numeric fields of the capture text at serve time (`rewrite_numbers`): the bytes are
otherwise exactly what the real firmware sent. Replies get cgminer's trailing NUL unless the
family (Whatsminer) does not send one. Faults are injected per server on demand (`Fault`):
the malformed replies real firmware sends, and the ways a miner fails a fleet: it hangs
(accepts the connection, never answers), refuses (nothing listens), answers slowly, or
accepts a control command and does nothing. Hang and slow apply to every port the miner
serves (RPC, and the web CGI or gRPC API where the family has one).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import json
import os
import re
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

DATA_DIR = Path(__file__).with_name("data")
LOOPBACK = "127.0.0.1"


class Fault(enum.StrEnum):
    NONE = "none"
    HANG = "hang"  # accept, read the request, never answer (closing when the client does)
    REFUSE = "refuse"  # nothing listens: connection refused (apply_fault closes the ports)
    SLOW = "slow"  # answer every request after `slow_s` seconds
    IGNORE = "ignore"  # answer success to sleep/wake/power-limit/mode commands, change nothing
    RESET = "reset"  # answer with a TCP RST
    HALF = "half"  # write half the reply, then close
    HUGE = "huge"  # a 10 MB reply
    GARBAGE = "garbage"  # binary noise
    NO_COMMA = "no_comma"  # `}{` between list objects
    BARE_NAN = "bare_nan"  # a bare nan as a value
    TRAILING = "trailing"  # extra `"}` after the final brace
    STATUS_OBJECT = "status_object"  # STATUS as an object, not a list


@functools.lru_cache(maxsize=256)
def load_capture(relative: str) -> bytes:
    """A capture's bytes, read once (a fleet of hundreds serves the same files)."""
    return (DATA_DIR / relative).read_bytes()


_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _format_like(original: str, value: float) -> str:
    if "." in original:
        decimals = len(original.split(".")[1])
        return f"{value:.{decimals}f}"
    return str(round(value))


def rewrite_numbers(text: str, keys: Iterable[str], fn: Callable[[float], float]) -> str:
    """Apply `fn` to the number after each `"key":` (quoted numbers stay quoted)."""
    for key in keys:
        pattern = re.compile(r'("' + re.escape(key) + r'"\s*:\s*"?)' + _NUMBER)
        text = pattern.sub(lambda m: m.group(1) + _format_like(m.group(2),
                                                               fn(float(m.group(2)))), text)
    return text


def rewrite_blob(text: str, keys: Iterable[str], fn: Callable[[float], float]) -> str:
    """Same for Avalon's `Key[1 2 3]` blob fields (every number inside the brackets)."""
    for key in keys:
        pattern = re.compile(r"(\b" + re.escape(key) + r"\[)([^\]]*)(\])")

        def repl(m: re.Match[str]) -> str:
            inner = re.sub(_NUMBER, lambda n: _format_like(n.group(1), fn(float(n.group(1)))),
                           m.group(2))
            return m.group(1) + inner + m.group(3)

        text = pattern.sub(repl, text)
    return text


def set_numbers(text: str, values: Mapping[str, float]) -> str:
    """Set the number after each `"key":` to `values[key]`, in the number's own format."""
    for key, value in values.items():
        text = rewrite_numbers(text, (key,), functools.partial(_constant, value))
    return text


def _constant(value: float, _old: float) -> float:
    return value


def rewrite_sequence(text: str, key: str, values: Sequence[float]) -> str:
    """Set the number after the n-th `"key":` to `values[n]`: a per-board field repeated in
    each board's record (`devs`), in record order. Matches past the end keep their number."""
    pattern = re.compile(r'("' + re.escape(key) + r'"\s*:\s*"?)' + _NUMBER)
    index = itertools.count()

    def repl(m: re.Match[str]) -> str:
        n = next(index)
        if n >= len(values):
            return m.group(0)
        return m.group(1) + _format_like(m.group(2), values[n])

    return pattern.sub(repl, text)


def rewrite_blob_list(text: str, key: str, values: Sequence[float]) -> str:
    """Set Avalon's `Key[a b c]` list to `values`, each in its original number format."""
    pattern = re.compile(r"(\b" + re.escape(key) + r"\[)([^\]]*)(\])")

    def repl(m: re.Match[str]) -> str:
        olds = m.group(2).split()
        if len(olds) != len(values):
            return m.group(0)
        return m.group(1) + " ".join(_format_like(o, v) for o, v in zip(olds, values,
                                                                         strict=True)) + m.group(3)

    return pattern.sub(repl, text)


def rewrite_string(text: str, key: str, value: str) -> str:
    pattern = re.compile(r'("' + re.escape(key) + r'"\s*:\s*")([^"]*)(")')
    return pattern.sub(lambda m: m.group(1) + value + m.group(3), text)


@dataclass(frozen=True, slots=True)
class RunningRate:
    """The one running hashrate every figure of a simulated miner is served from.

    Real firmware derives its windows (5 s, 1 m, 15 m, average) and its per-board figures
    from one running measurement, so in a steady state they agree; the captures, taken at
    different moments, do not. A simulator serves every window as `total(factor)` and each
    board as its share of it (shares from the capture), so any client reading any window or
    summing the boards reads the same hashrate."""

    total_hs: float  # the capture's realtime total, at full power
    shares: tuple[float, ...]  # each board's part of it, in board order; they sum to 1

    @classmethod
    def of_boards(cls, total_hs: float, board_rates: Sequence[float]) -> RunningRate:
        whole = sum(board_rates)
        return cls(total_hs, tuple(r / whole for r in board_rates))

    def total(self, factor: float, unit_hs: float) -> float:
        """The whole miner, in `unit_hs` (1e9 for a GH/s field), at `factor` of full power."""
        return self.total_hs * factor / unit_hs

    def boards(self, factor: float, unit_hs: float,
               order: Sequence[int] | None = None) -> list[float]:
        """Each board's figure in `unit_hs`, in board order or in `order` (board indexes as
        the records list them)."""
        indexes = range(len(self.shares)) if order is None else order
        return [self.total(factor, unit_hs) * self.shares[i] for i in indexes]


@dataclass
class MinerState:
    """Mining, sleeping or warming up after a wake, under an optional power target (watts).

    Physical: asleep the miner draws `idle_power_w` and hashes nothing; after a wake it hashes
    again once `warmup_s` has passed; a new power target is clamped to the model's range
    (`min_power_w`..`max_power_w`) and the drawn power moves there linearly over
    `response_s`, with the hashrate in proportion."""

    nominal_power_w: float
    idle_power_w: float
    warmup_s: float = 1.0
    response_s: float = 0.0
    min_power_w: float = 0.0
    max_power_w: float = 0.0  # 0: the nominal power
    sleeping: bool = False
    warm_at: float = 0.0  # monotonic time the warm-up ends
    power_target_w: float | None = None
    _ramp_from_w: float = 0.0
    _ramp_at: float = 0.0

    def sleep(self) -> None:
        self.sleeping = True

    def wake(self) -> None:
        if self.sleeping:
            self.sleeping = False
            self.warm_at = time.monotonic() + self.warmup_s

    def set_target(self, watts: float | None) -> None:
        """A new power target (None: back to nominal), reached over `response_s`."""
        self._ramp_from_w = self.running_power_w()
        self._ramp_at = time.monotonic()
        self.power_target_w = None if watts is None else self.clamp(watts)

    def clamp(self, watts: float) -> float:
        high = self.max_power_w or self.nominal_power_w
        return max(self.min_power_w, min(high, watts))

    def running_power_w(self) -> float:
        """What the hash boards draw when mining, on the way to the target."""
        target = self.nominal_power_w if self.power_target_w is None else self.power_target_w
        elapsed = time.monotonic() - self._ramp_at
        if self.response_s <= 0 or elapsed >= self.response_s or not self._ramp_from_w:
            return target
        return self._ramp_from_w + (target - self._ramp_from_w) * elapsed / self.response_s

    @property
    def warming(self) -> bool:
        return not self.sleeping and time.monotonic() < self.warm_at

    @property
    def target_factor(self) -> float:
        if self.nominal_power_w <= 0:
            return 1.0
        return max(0.0, self.running_power_w() / self.nominal_power_w)

    @property
    def hash_factor(self) -> float:
        if self.sleeping or self.warming:
            return 0.0
        return self.target_factor

    def power_w(self) -> float:
        if self.sleeping:
            return self.idle_power_w
        if self.warming:
            return self.idle_power_w + 0.5 * (self.nominal_power_w - self.idle_power_w)
        return self.running_power_w()


def status_reply(status: str, code: int, msg: str, description: str = "cgminer 4.11.1",
                 when: int | None = None) -> dict[str, Any]:
    return {"STATUS": [{"STATUS": status, "When": when or int(time.time()), "Code": code,
                        "Msg": msg, "Description": description}], "id": 1}


class FirmwareServer:
    """One simulated miner's RPC port. Subclasses implement `reply(command, parameter)`."""

    family: ClassVar[str] = ""
    multi_allowed: ClassVar[bool] = True
    trailing_nul: ClassVar[bool] = True
    invalid_command_capture: ClassVar[str] = "cgminer_4.11.1_live_nodevice/badcmd.raw"
    # Commands that may be parts of an `a+b` multi-command (None: any the firmware knows).
    multi_parts: ClassVar[frozenset[str] | None] = None

    def __init__(self, host: str = LOOPBACK, port: int = 0, *, warmup_s: float = 1.0) -> None:
        if not (host.startswith("127.") or host == "::1"):
            raise ValueError("simulators listen on loopback only")
        self.host = host
        self.requested_port = port
        self.warmup_s = warmup_s
        self.fault = Fault.NONE
        self.slow_s = 0.0  # the delay of Fault.SLOW
        self.open_connections = 0  # client connections open now, on every port (for tests)
        self.connections = 0  # ... and accepted in all
        self.requests: list[str] = []
        self.refused: list[str] = []  # commands answered "invalid command", for tests
        self._rendered: dict[tuple[Any, ...], bytes] = {}
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host,
                                                  self.requested_port, backlog=512)

    async def stop(self) -> None:
        """Close the port; a later start() binds the same one again, like a rebooted miner."""
        if self._server is not None:
            self.requested_port = self.port
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The RPC port; while stopped (refusing), the one it had and binds again."""
        if self._server is None:
            if self.requested_port:
                return self.requested_port
            raise RuntimeError("server not started")
        sockname: tuple[Any, ...] = self._server.sockets[0].getsockname()
        return int(sockname[1])

    async def apply_fault(self, fault: Fault, slow_s: float | None = None) -> None:
        """Set the fault; REFUSE closes every port (a later fault opens them again)."""
        before = self.fault
        self.fault = fault
        if slow_s is not None:
            self.slow_s = slow_s
        if fault is Fault.REFUSE and self.listening:
            await self.stop()
        elif before is Fault.REFUSE and fault is not Fault.REFUSE and not self.listening:
            await self.start()

    @property
    def ignores_commands(self) -> bool:
        """Fault.IGNORE: a control command is answered as done and changes nothing."""
        return self.fault is Fault.IGNORE

    async def hang(self, reader: asyncio.StreamReader | None = None,
                   rpc_context: Any = None) -> None:
        """Fault.HANG, before a request is looked at: wait until the client gives up (its
        end of the connection closes, or its gRPC call ends), so a hung miner holds no
        socket longer than the client does, and never answers."""
        if self.fault is not Fault.HANG:
            return
        if reader is not None:
            while await reader.read(4096):
                pass
            raise ConnectionResetError("the client gave up on a hung miner")
        ended = asyncio.Event()
        if rpc_context is not None:
            rpc_context.add_done_callback(lambda _context: ended.set())
        await ended.wait()
        raise ConnectionResetError("the client gave up on a hung miner")

    async def delay(self) -> None:
        """Fault.SLOW, between a reply and its sending: the answer is the miner's state when
        the request came, arriving `slow_s` later."""
        if self.fault is Fault.SLOW:
            await asyncio.sleep(self.slow_s)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count a client connection as open while the block runs."""
        self.open_connections += 1
        self.connections += 1
        try:
            yield
        finally:
            self.open_connections -= 1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def discover_entry(self) -> dict[str, Any]:
        """The `miners` entry that points the HAL at this simulator."""
        return {"address": self.address, "family": self.family, "simulated": True}

    # --- protocol --------------------------------------------------------------------------
    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            with self.track():
                request = await self._read_request(reader)
                if request is None:
                    return
                await self.hang(reader)
                await self._answer(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        data = b""
        while len(data) < 65536:
            chunk = await asyncio.wait_for(reader.read(4096), timeout=5.0)
            if not chunk:
                break
            data += chunk
            text = data.rstrip(b"\x00").strip()
            if text.startswith(b"{"):
                try:
                    json.loads(text)
                    break
                except ValueError:
                    continue
            else:
                break  # the text form is one short line
        return data or None

    async def _answer(self, request: bytes, writer: asyncio.StreamWriter) -> None:
        fault = self.fault
        if fault is Fault.RESET:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if fault is Fault.GARBAGE:
            writer.write(b"\xff\xfe" + os.urandom(4094))
            await writer.drain()
            return
        if fault is Fault.HUGE:
            writer.write(b'{"STATUS":[{"STATUS":"S","Code":11}],"SUMMARY":[{"Pad":"')
            block = b"A" * 65536
            for _ in range(160):  # 10 MiB
                writer.write(block)
                await writer.drain()
            writer.write(b'"}],"id":1}\x00')
            await writer.drain()
            return
        reply = self.dispatch(request)
        reply = apply_quirk(reply, fault)
        await self.delay()
        if fault is Fault.HALF:
            writer.write(reply[: len(reply) // 2])
            await writer.drain()
            return
        writer.write(reply)
        await writer.drain()

    def dispatch(self, request: bytes) -> bytes:
        """Bytes to send for one request (JSON or text form, single or `a+b`)."""
        text = request.rstrip(b"\x00").decode("utf-8", "replace").strip()
        text_form = not text.startswith("{")
        if text_form:
            command, _, parameter = text.partition("|")
            param: str | None = parameter or None
            message: dict[str, Any] = {"command": command, "parameter": param}
        else:
            try:
                message = json.loads(text)
            except ValueError:
                return self._finish(load_capture("cgminer_4.11.1_live_nodevice/badjson.raw"))
            if not isinstance(message, dict):
                return self._finish(load_capture("cgminer_4.11.1_live_nodevice/badjson.raw"))
            command = str(message.get("command", message.get("cmd", "")))
            param = message.get("parameter")
            param = None if param is None else str(param)
        self.requests.append(command)
        custom = self.handle_message(message)
        if custom is not None:
            return self._finish(custom)
        if "+" in command:
            parts = command.split("+")
            if not self.multi_allowed:
                return self._finish(self._refuse(command))
            merged: dict[str, Any] = {}
            for part in parts:
                allowed = self.multi_parts is None or part in self.multi_parts
                one = self._reply_or_refuse(part, param) if allowed else self._refuse(part)
                merged[part] = [json.loads(one.rstrip(b"\x00"))]
            merged["id"] = 1
            return self._finish(json.dumps(merged).encode())
        return self._finish(self._reply_or_refuse(command, param))

    def _reply_or_refuse(self, command: str, parameter: str | None) -> bytes:
        one = self.reply(command, parameter)
        return self._refuse(command) if one is None else one

    def _refuse(self, command: str) -> bytes:
        self.refused.append(command)
        return self.invalid_command()

    def _finish(self, body: bytes) -> bytes:
        body = body.rstrip(b"\x00")
        return body + b"\x00" if self.trailing_nul else body

    def invalid_command(self) -> bytes:
        return load_capture(self.invalid_command_capture)

    # --- for subclasses --------------------------------------------------------------------
    def rendered(self, key: tuple[Any, ...], render: Callable[[], str | bytes]) -> bytes:
        """`render()`, encoded and remembered under `key`, which must hold everything the
        reply depends on (command, hash factor, power...): a fleet polled over and over
        serves the same few states, and rewriting a capture costs far more than a lookup."""
        found = self._rendered.get(key)
        if found is None:
            if len(self._rendered) >= 256:
                self._rendered.clear()
            body = render()
            found = self._rendered[key] = body.encode() if isinstance(body, str) else body
        return found

    def handle_message(self, message: dict[str, Any]) -> bytes | None:
        """A hook for requests that are not cgminer commands (Whatsminer's encrypted ones)."""
        return None

    def reply(self, command: str, parameter: str | None) -> bytes | None:
        raise NotImplementedError


def apply_quirk(reply: bytes, fault: Fault) -> bytes:
    """Turn a good reply into one of the malformed forms real firmware sends."""
    if fault is Fault.NONE:
        return reply
    nul = reply.endswith(b"\x00")
    text = reply.rstrip(b"\x00").decode("utf-8", "replace")
    if fault is Fault.NO_COMMA:
        text = re.sub(r"\}\s*,\s*\{", "}{", text, count=1)
    elif fault is Fault.BARE_NAN:
        text = re.sub(r'("(?:GHS|MHS) [^"]*"\s*:\s*)-?\d+(?:\.\d+)?', r"\1nan", text, count=1)
    elif fault is Fault.TRAILING:
        text = text + '"}'
    elif fault is Fault.STATUS_OBJECT:
        try:
            data = json.loads(text)
        except ValueError:
            return reply
        if isinstance(data.get("STATUS"), list) and data["STATUS"]:
            data["STATUS"] = data["STATUS"][0]
        text = json.dumps(data)
    else:
        return reply
    return text.encode() + (b"\x00" if nul else b"")
