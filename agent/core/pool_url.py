"""Pool URLs: `stratum+tcp://host:port`, parsed and checked once for the configuration, the API
and the Stratum client alike.

The host is a DNS name (at most 253 characters, labels of 1 .. 63 letters, digits, `-` or `_`),
an IPv4 address, or an IPv6 address in brackets; the port is 1 .. 65535."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from hal.errors import InvalidArgument

SCHEME = "stratum+tcp://"
MAX_HOST_CHARS = 253
MAX_URL_CHARS = len(SCHEME) + MAX_HOST_CHARS + 2 + 6  # brackets, ":65535"
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


@dataclass(frozen=True, slots=True)
class PoolAddress:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{host}:{self.port}"


def _shown(url: str) -> str:
    return repr(url) if len(url) <= 80 else f"{url[:80]!r}…[{len(url)} chars]"


def parse_pool_url(url: str) -> PoolAddress:
    """`stratum+tcp://host:port` -> PoolAddress; InvalidArgument, naming what is wrong, for
    anything else."""
    if not isinstance(url, str) or not url.startswith(SCHEME):
        shown = _shown(url) if isinstance(url, str) else type(url).__name__
        raise InvalidArgument(f"pool URL must start with {SCHEME}: {shown}")
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(f"pool URL is {len(url)} characters, at most {MAX_URL_CHARS}: "
                              f"{_shown(url)}")
    rest = url[len(SCHEME):].rstrip("/")
    bracketed = rest.startswith("[")
    if bracketed:  # [ipv6]:port
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not _host_ok(host, bracketed):
        raise InvalidArgument(f"bad host in pool URL {_shown(url)}: a DNS name of at most "
                              f"{MAX_HOST_CHARS} characters, an IPv4 address or [an IPv6 one]")
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 \
            or not 0 < int(port_text) < 65536:
        raise InvalidArgument(f"bad port in pool URL {_shown(url)}: 1 .. 65535")
    return PoolAddress(host, int(port_text))


def _host_ok(host: str, bracketed: bool) -> bool:
    if not host or len(host) > MAX_HOST_CHARS or not host.isascii():
        return False
    if bracketed:
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    return all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))
