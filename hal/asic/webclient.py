"""A small asyncio HTTP/1.1 client with digest auth (RFC 7616, MD5, qop=auth) for miner CGIs.

One request per connection (`Connection: close`), bounded by a deadline and a size cap, like
the RPC transport. Enough for Antminer's `/cgi-bin/*.cgi`; not a general HTTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass

from hal.errors import DeviceLost, PermissionDenied, ProtocolError, Timeout

MAX_BODY_BYTES = 1024 * 1024


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_challenge(header: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` -> {"realm": "x", ...}."""
    if not header.lower().startswith("digest "):
        return {}
    return {k.lower(): v for k, v in re.findall(r'(\w+)="?([^",]*)"?', header[7:])}


def digest_response(method: str, uri: str, username: str, password: str,
                    challenge: dict[str, str], cnonce: str, nc: str = "00000001") -> str:
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    if "auth" in challenge.get("qop", "").split(","):
        return hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()


async def http_request(host: str, port: int, method: str, path: str, body: bytes = b"",
                       headers: dict[str, str] | None = None,
                       timeout_s: float = 5.0) -> HttpResponse:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    try:
        async with asyncio.timeout(timeout_s):
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                raise DeviceLost(f"{host}:{port}: cannot connect: {exc}") from exc
            try:
                writer.write(request)
                await writer.drain()
                data = bytearray()
                while chunk := await reader.read(65536):
                    data += chunk
                    if len(data) > MAX_BODY_BYTES:
                        raise ProtocolError(f"{host}:{port}{path}: reply too large",
                                            bytes(data[:4096]))
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise DeviceLost(f"{host}:{port}: connection reset") from exc
            finally:
                writer.close()
    except TimeoutError as exc:
        raise Timeout(f"{host}:{port}{path}: no reply within {timeout_s:g} s") from exc
    return _parse_response(bytes(data), f"{host}:{port}{path}")


def _parse_response(data: bytes, where: str) -> HttpResponse:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ProtocolError(f"{where}: incomplete HTTP response", data)
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not match:
        raise ProtocolError(f"{where}: not an HTTP response", data)
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        body = body[: int(length)]
    return HttpResponse(int(match.group(1)), headers, body)


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
        first = await http_request(self.host, self.port, method, path, body, headers,
                                   self.timeout_s)
        if first.status != 401:
            return self._check(first, path)
        challenge = parse_challenge(first.headers.get("www-authenticate", ""))
        if not challenge:
            raise ProtocolError(f"{path}: 401 without a digest challenge", first.body)
        cnonce = os.urandom(8).hex()
        response = digest_response(method, path, self.username, self.password, challenge, cnonce)
        auth = (
            f'Digest username="{self.username}", realm="{challenge.get("realm", "")}", '
            f'nonce="{challenge.get("nonce", "")}", uri="{path}", response="{response}"'
        )
        if "qop" in challenge:
            auth += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
        if "opaque" in challenge:
            auth += f', opaque="{challenge["opaque"]}"'
        second = await http_request(self.host, self.port, method, path, body,
                                    {**headers, "Authorization": auth}, self.timeout_s)
        if second.status == 401:
            raise PermissionDenied(f"{self.host}:{self.port}{path}: digest auth rejected "
                                   f"(check username/password)")
        return self._check(second, path)

    def _check(self, response: HttpResponse, path: str) -> tuple[int, bytes]:
        if response.status >= 400:
            raise ProtocolError(f"{path}: HTTP {response.status}", response.body)
        return response.status, response.body
