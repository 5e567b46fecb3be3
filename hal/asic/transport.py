"""cgminer RPC over TCP: one request per connection, replies parsed defensively.

Real firmware is sloppy: replies end in a NUL, some are not JSON (`}{` with no comma, bare
`nan`, bytes after the last brace, STATUS as an object, numbers as strings, a plain-text form).
`parse_reply` survives all of these or raises `ProtocolError` carrying the raw bytes.
Every request is bounded: connect timeout, total read deadline and a reply-size cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import re
import resource
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from hal.errors import (
    DeviceLost,
    FirmwareRefused,
    HalError,
    NotSupported,
    PermissionDenied,
    ProtocolError,
    Timeout,
)

DEFAULT_PORT = 4028
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_MAX_REPLY_BYTES = 4 * 1024 * 1024

MAX_REPAIR_CHARS = 512 * 1024  # real replies are < 100 KB; repair costs ~0.3 s per MB

CODE_ACCESS_DENIED = 45
CODE_INVALID_COMMAND = 14

_BARE_WORDS = {"nan": "null", "-nan": "null", "inf": "null", "-inf": "null",
               "NaN": "null", "Infinity": "null", "-Infinity": "null"}


@dataclass(slots=True)
class Reply:
    """One command's decoded reply with the bytes it came from (for ProtocolError)."""

    command: str
    data: dict[str, Any]
    raw: bytes = b""
    address: str = ""  # host:port of the miner, for error messages

    @property
    def status(self) -> dict[str, Any]:
        status = first_status(self.data)
        if not status and "+" in self.command:
            # `a+b`: no STATUS of its own; the first refused part speaks for the whole.
            parts = [first_status(_part(self.data, c)) for c in self.command.split("+")]
            refused = [p for p in parts if not _status_ok(p)]
            return refused[0] if refused else (parts[0] if parts else {})
        return status

    @property
    def ok(self) -> bool:
        return _status_ok(self.status)

    @property
    def message(self) -> str:
        return str(self.status.get("Msg", ""))

    def section(self, key: str) -> list[dict[str, Any]]:
        """The list under `key` (e.g. SUMMARY), tolerating a single object or absence."""
        value = self.data.get(key)
        if isinstance(value, dict):
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
        return []

    def raise_for_status(self) -> Reply:
        status = self.status
        if self.ok:
            return self
        code = _as_int(status.get("Code"))
        msg = self.message or str(status)
        where = f"{self.address}: " if self.address else ""
        if code == CODE_ACCESS_DENIED or "access denied" in msg.lower():
            raise PermissionDenied(f"{where}{self.command}: {msg}")
        if code == CODE_INVALID_COMMAND or "invalid cmd" in msg.lower() \
                or "invalid command" in msg.lower():
            raise NotSupported(f"{where}{self.command}: {msg}")
        raise FirmwareRefused(f"{where}{self.command}: firmware error: {msg}", msg, self.raw)


def _status_ok(status: dict[str, Any]) -> bool:
    return str(status.get("STATUS", "S")) in ("S", "I", "W")


def _part(data: dict[str, Any], command: str) -> dict[str, Any]:
    value = data.get(command)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return value if isinstance(value, dict) else {"STATUS": [{"STATUS": "E", "Msg": "missing"}]}


def first_status(data: dict[str, Any]) -> dict[str, Any]:
    """STATUS comes as a list of one object, a bare object (Whatsminer) or a string ("BYE")."""
    status = data.get("STATUS")
    if isinstance(status, list) and status and isinstance(status[0], dict):
        return status[0]
    if isinstance(status, dict):
        return status
    if isinstance(status, str):
        # Whatsminer v1/v2 put STATUS/Code/Msg at the top level.
        return {k: data[k] for k in ("STATUS", "Code", "Msg", "Description", "When") if k in data}
    return {}


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Parsing


_JSON_ESCAPES = frozenset('"\\/bfnrtu')


def _sanitise(text: str) -> str:
    """Repair the known non-JSON quirks: outside strings `}{` and bare nan/inf; inside strings
    escapes JSON does not know (Whatsminer's `\\'`) and raw control characters (StrongU's
    newline in "Last Share Time")."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\" and i + 1 < n:
                follower = text[i + 1]
                # `\\'` and the like: keep the character, drop the escape JSON refuses.
                out.append(ch + follower if follower in _JSON_ESCAPES else follower)
                i += 2
                continue
            if ch < " ":
                out.append(f"\\u{ord(ch):04x}")
                i += 1
                continue
            out.append(ch)
            if ch == '"':
                in_string = False
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
            i += 1
            continue
        if ch == "}":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            out.append("}")
            if j < n and text[j] == "{":
                out.append(",")
            i += 1
            continue
        if ch in "-nNiI":
            match = re.match(r"-?(?:nan|NaN|inf|Infinity)\b", text[i:i + 10])
            if match:
                out.append(_BARE_WORDS.get(match.group(0), "null"))
                i += len(match.group(0))
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _decode_json(text: str) -> Any:
    """First complete JSON value in `text`; bytes after it are ignored (S9k `version`)."""
    decoder = json.JSONDecoder(parse_constant=lambda _: None)
    value, _end = decoder.raw_decode(text.lstrip())
    return value


def _parse_text_form(text: str) -> dict[str, Any]:
    """The plain-text API form: `STATUS=S,Code=11,...|SUMMARY,Elapsed=8,...|`."""
    result: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for part in text.split("|"):
        if not part.strip():
            continue
        if part.startswith("CMD="):
            command = part[4:]
            current = {}
            sections[command] = current
            continue
        target = current if current is not None else result
        fields = part.split(",")
        head = fields[0]
        if "=" in head and head.split("=", 1)[0] == "STATUS":
            record = _text_pairs(fields)
            target.setdefault("STATUS", []).append(record)
        else:
            record = _text_pairs(fields[1:]) if "=" not in head else _text_pairs(fields)
            key = head if "=" not in head else "DATA"
            target.setdefault(key, []).append(record)
    if sections:
        return {cmd: [body] for cmd, body in sections.items()}
    if "STATUS" not in result:
        raise ValueError("no STATUS section in text reply")
    return result


def _text_pairs(fields: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for item in fields:
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        record[key] = value
    return record


def parse_reply(raw: bytes, command: str = "") -> dict[str, Any]:
    """Decode one reply (JSON or text form) into a dict, or raise ProtocolError(raw)."""
    body = raw.rstrip(b"\x00 \r\n\t")
    if not body:
        raise ProtocolError(f"{command or 'reply'}: empty reply", raw)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # Some firmware sends latin-1 text; control bytes mean binary noise, not a reply.
        text = body.decode("latin-1")
        if any(ord(ch) < 32 and ch not in "\r\n\t" for ch in text):
            raise ProtocolError(f"{command or 'reply'}: binary data, not an API reply",
                                raw) from None
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        if stripped.startswith(("STATUS=", "CMD=")):
            try:
                return _parse_text_form(stripped)
            except ValueError as exc:
                raise ProtocolError(f"{command}: bad text reply: {exc}", raw) from exc
        raise ProtocolError(f"{command or 'reply'}: not a JSON or text API reply", raw)
    try:
        value = json.loads(stripped)
    except ValueError:
        if len(stripped) > MAX_REPAIR_CHARS:
            # The repair pass is pure Python; it must not stall the event loop for a fleet.
            raise ProtocolError(f"{command or 'reply'}: malformed JSON too large to repair "
                                f"({len(stripped)} chars)", raw) from None
        try:
            value = _decode_json(_sanitise(stripped))
        except ValueError as exc:
            raise ProtocolError(f"{command or 'reply'}: malformed JSON: {exc}", raw) from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"{command or 'reply'}: top-level JSON is not an object", raw)
    return value


def split_multi(data: dict[str, Any], commands: list[str], raw: bytes,
                address: str = "") -> dict[str, Reply]:
    """A `a+b` reply is {"a":[{...}],"b":[{...}]}; return one Reply per command."""
    replies: dict[str, Reply] = {}
    for command in commands:
        part = data.get(command)
        if isinstance(part, list) and part and isinstance(part[0], dict):
            replies[command] = Reply(command, part[0], raw, address)
        elif isinstance(part, dict):
            replies[command] = Reply(command, part, raw, address)
        else:
            raise ProtocolError(f"multi-command reply lacks {command!r}", raw)
    return replies


def to_float(value: Any) -> float | None:
    """Numbers arrive as numbers, strings ("504.56"), "" or null; never raise."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip().strip("'"))
        except ValueError:
            return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number


def to_int(value: Any) -> int | None:
    number = to_float(value)
    return None if number is None else int(number)


def dash_list(value: Any) -> list[float]:
    """Antminer packs lists as "78-50-69-70"."""
    if value is None:
        return []
    if isinstance(value, list):
        return [f for f in (to_float(v) for v in value) if f is not None]
    out = []
    for part in str(value).split("-"):
        number = to_float(part)
        if number is not None:
            out.append(number)
    return out


# ---------------------------------------------------------------------------------------------
# The client


@dataclass(slots=True)
class RpcClient:
    """One miner's RPC endpoint. Each request opens its own connection, like cgminer expects."""

    host: str
    port: int = DEFAULT_PORT
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES
    multi_allowed: bool | None = None  # None: try once, remember the firmware's answer
    _requests_sent: int = field(default=0, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def exchange(self, payload: bytes) -> bytes:
        """Send `payload`, read until EOF or the trailing NUL, within the deadline (counted
        from when the request may start: see `request_slot`)."""
        async with request_slot():
            return await self._exchange(payload)

    async def _exchange(self, payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        connect_s = min(self.connect_timeout_s, self.timeout_s)
        try:
            async with asyncio.timeout(connect_s):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as exc:
            raise Timeout(f"no answer on {self.address} within {connect_s:g} s "
                          f"(connection not accepted)") from exc
        except ConnectionRefusedError as exc:
            raise DeviceLost(f"connection refused by {self.address}") from exc
        except OSError as exc:
            raise DeviceLost(f"cannot connect to {self.address}: {exc.strerror or exc}") from exc
        self._requests_sent += 1
        buffer = bytearray()
        try:
            async with asyncio.timeout_at(deadline):
                writer.write(payload)
                await writer.drain()
                while chunk := await reader.read(65536):
                    buffer += chunk
                    if len(buffer) > self.max_reply_bytes:
                        raise ProtocolError(
                            f"{self.address}: reply exceeds {self.max_reply_bytes} bytes",
                            bytes(buffer[:4096]),
                        )
                    if buffer.endswith(b"\x00"):
                        break
        except TimeoutError as exc:
            what = "no answer" if not buffer else f"incomplete answer ({len(buffer)} bytes)"
            raise Timeout(f"{what} on {self.address} within {self.timeout_s:g} s") from exc
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            raise DeviceLost(f"connection reset by {self.address}") from exc
        except OSError as exc:
            raise DeviceLost(f"connection to {self.address} failed: "
                             f"{exc.strerror or exc}") from exc
        finally:
            writer.close()
        if not buffer:
            raise DeviceLost(f"{self.address} closed the connection without a reply")
        return bytes(buffer)

    async def request_raw(self, command: str, parameter: str | None = None,
                          *, text_form: bool = False) -> tuple[dict[str, Any], bytes]:
        if text_form:
            payload = command if parameter is None else f"{command}|{parameter}"
            raw = await self.exchange(payload.encode())
        else:
            message: dict[str, Any] = {"command": command}
            if parameter is not None:
                message["parameter"] = parameter
            raw = await self.exchange(json.dumps(message).encode())
        data = parse_reply(raw, command)
        if "+" in command and command.split("+")[0] in data:
            return data, raw
        if not text_form and "+" not in command and not first_status(data):
            raise ProtocolError(f"{command}: reply has no STATUS", raw)
        return data, raw

    async def request(self, command: str, parameter: str | None = None,
                      *, text_form: bool = False, check: bool = True) -> Reply:
        """One command; with `check`, firmware errors become HAL errors."""
        data, raw = await self.request_raw(command, parameter, text_form=text_form)
        reply = Reply(command, data, raw, self.address)
        return reply.raise_for_status() if check else reply

    async def exchange_framed(self, message: dict[str, Any]) -> Reply:
        """Whatsminer API v3 framing: a 4-byte little-endian length, then JSON, both ways."""
        body = json.dumps(message).encode()
        raw = await self.exchange(len(body).to_bytes(4, "little") + body)
        name = str(message.get("cmd", ""))
        if len(raw) < 4:
            raise ProtocolError(f"{name}: reply shorter than its length prefix", raw)
        length = int.from_bytes(raw[:4], "little")
        if length != len(raw) - 4:
            raise ProtocolError(f"{name}: length prefix says {length} bytes, got "
                                f"{len(raw) - 4}", raw)
        return Reply(name, parse_reply(raw[4:], name), raw, self.address)

    async def send_json(self, message: dict[str, Any]) -> Reply:
        """Whatsminer-style `{"cmd": ...}` requests."""
        name = str(message.get("cmd") or message.get("command") or "")
        raw = await self.exchange(json.dumps(message).encode())
        return Reply(name, parse_reply(raw, name), raw, self.address)

    async def multi(self, commands: list[str]) -> dict[str, Reply]:
        """Each command once; merged into `a+b` where the firmware allows it (unchecked)."""
        commands = list(dict.fromkeys(commands))
        if len(commands) > 1 and self.multi_allowed is not False:
            joined = "+".join(commands)
            data, raw = await self.request_raw(joined)
            if all(c in data for c in commands):
                self.multi_allowed = True
                return split_multi(data, commands, raw, self.address)
            status = first_status(data)
            if str(status.get("STATUS")) == "E":
                self.multi_allowed = False  # e.g. stock S19: fall back to single commands
            else:
                raise ProtocolError(f"{joined}: multi-command reply without its parts", raw)
        results: dict[str, Reply] = {}
        for command in commands:
            data, raw = await self.request_raw(command)
            results[command] = Reply(command, data, raw, self.address)
        return results


# ---------------------------------------------------------------------------------------------
# Request pacing: requests start as fast as an event loop (and the miners) can serve them,
# never held by a hung miner.
#
# Started all at once, thousands of requests share one core: each waits for all the others'
# parsing, so every one of them runs past its timeout and a healthy fleet reads as dead. At most
# YOUNG_REQUESTS per event loop are young; a request holds its place until it ends or grows old,
# whichever comes first, so a hung miner holds one for a moment and then waits out its deadline
# holding nothing. "Old" follows how long requests take now, like a TCP retransmission timer:
# four times the recent average of answered requests, within YOUTH_S; on a loaded machine
# answers come later and requests stay young longer, so the line does not open to everyone at
# once just when it matters. A request's timeout starts when it gets its place. Controls (and
# the reads that decide them) skip the line: `as_control()`.

YOUNG_REQUESTS = 64
YOUTH_S = (0.1, 2.0)  # bounds of how long a request stays young
_YOUTH_FACTOR = 4.0
_EWMA_WEIGHT = 0.05

_control: contextvars.ContextVar[bool] = contextvars.ContextVar("hal_asic_control",
                                                                  default=False)


class _Pace:
    """One event loop's line: its places and how long its answered requests take."""

    def __init__(self) -> None:
        self.places = asyncio.Semaphore(YOUNG_REQUESTS)
        self.typical_s = YOUTH_S[0] / _YOUTH_FACTOR

    def youth_s(self) -> float:
        return min(YOUTH_S[1], max(YOUTH_S[0], _YOUTH_FACTOR * self.typical_s))

    def answered(self, took_s: float) -> None:
        self.typical_s += _EWMA_WEIGHT * (took_s - self.typical_s)


_paces: dict[asyncio.AbstractEventLoop, _Pace] = {}
_paces_lock = threading.Lock()


def _pace(loop: asyncio.AbstractEventLoop) -> _Pace:
    with _paces_lock:
        pace = _paces.get(loop)
        if pace is None:
            for old in [other for other in _paces if other.is_closed()]:
                del _paces[old]
            pace = _paces[loop] = _Pace()
        return pace


class _Place:
    __slots__ = ("held", "semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = True

    def give_up(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()


@contextlib.asynccontextmanager
async def request_slot() -> AsyncIterator[None]:
    """A place among the young requests of this event loop (see above); none for controls."""
    if _control.get():
        yield
        return
    loop = asyncio.get_running_loop()
    pace = _pace(loop)
    await pace.places.acquire()
    place = _Place(pace.places)
    began = loop.time()
    aging = loop.call_later(pace.youth_s(), place.give_up)
    try:
        yield
        pace.answered(loop.time() - began)
    finally:
        aging.cancel()
        place.give_up()


@contextlib.contextmanager
def as_control() -> Iterator[None]:
    """Within this block (and the tasks it starts), requests skip the pacing line."""
    token = _control.set(True)
    try:
        yield
    finally:
        _control.reset(token)


def fd_headroom(reserve: int = 64) -> int:
    """File descriptors this process may still open: its soft RLIMIT_NOFILE less those open
    now and `reserve` (for everything else the process does)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:  # no procfs: assume the usual few
        used = 16
    return max(0, soft - used - reserve)


async def gather_bounded(coros: list[Any], concurrency: int) -> list[Any]:
    """Run coroutines with at most `concurrency` in flight; exceptions are returned."""
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def run(coro: Any) -> Any:
        async with semaphore:
            try:
                return await coro
            except HalError as exc:
                return exc

    return await asyncio.gather(*(run(c) for c in coros))
