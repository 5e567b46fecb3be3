"""Miner web CGIs (Antminer `/cgi-bin/*.cgi`) over `httpx`, with HTTP digest auth.

One client per request, bounded by a deadline and a body-size cap like the RPC transport;
transport failures become HAL errors that name the miner and say what happened.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

import httpx

from hal.asic.transport import request_slot
from hal.errors import DeviceLost, PermissionDenied, ProtocolError, Timeout

MAX_BODY_BYTES = 1024 * 1024


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: httpx builds one per client otherwise (about 40 ms of
    CPU each, which at a fleet's scale stalls the event loop for seconds); miners' CGIs are
    plain HTTP, so it is never used to talk to one."""
    return ssl.create_default_context()


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_request(host: str, port: int, method: str, path: str, body: bytes = b"",
                       headers: dict[str, str] | None = None, timeout_s: float = 5.0,
                       auth: httpx.Auth | None = None) -> HttpResponse:
    """One request; raises DeviceLost / Timeout / ProtocolError naming host:port."""
    async with request_slot():
        return await _http_request(host, port, method, path, body, headers, timeout_s, auth)


async def _http_request(host: str, port: int, method: str, path: str, body: bytes,
                        headers: dict[str, str] | None, timeout_s: float,
                        auth: httpx.Auth | None) -> HttpResponse:
    where = f"{host}:{port}"
    url = f"http://{where}{path}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False,
                                     verify=_tls_context()) as client, \
                client.stream(method, url, content=body, headers=headers, auth=auth) as reply:
            data = bytearray()
            async for chunk in reply.aiter_bytes():
                data += chunk
                if len(data) > MAX_BODY_BYTES:
                    raise ProtocolError(f"{where}{path}: reply exceeds {MAX_BODY_BYTES} bytes",
                                        bytes(data[:4096]))
            return HttpResponse(reply.status_code,
                                {k.lower(): v for k, v in reply.headers.items()}, bytes(data))
    except httpx.TimeoutException as exc:
        raise Timeout(f"no answer on {where} within {timeout_s:g} s ({path})") from exc
    except httpx.ConnectError as exc:
        if _refused(exc):
            raise DeviceLost(f"connection refused by {where}") from exc
        raise DeviceLost(f"cannot connect to {where}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise DeviceLost(f"{where}{path}: HTTP exchange failed: {exc}") from exc


def _refused(exc: BaseException | None) -> bool:
    """httpx says "All connection attempts failed"; the OS error under it says why."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError):
            return True
        if isinstance(exc, ExceptionGroup):
            return any(_refused(e) for e in exc.exceptions)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


@dataclass(slots=True)
class DigestClient:
    host: str
    port: int
    username: str
    password: str
    timeout_s: float = 5.0

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "") -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await http_request(self.host, self.port, method, path, body, headers,
                                      self.timeout_s, httpx.DigestAuth(self.username,
                                                                       self.password))
        if response.status == 401:
            raise PermissionDenied(f"{self.host}:{self.port}{path}: digest auth rejected "
                                   f"(check username/password)")
        if response.status >= 400:
            raise ProtocolError(f"{self.host}:{self.port}{path}: HTTP {response.status}",
                                response.body)
        return response.status, response.body


__all__ = ["MAX_BODY_BYTES", "DigestClient", "HttpResponse", "http_request"]
