"""Pool URLs: `stratum+tcp://host:port`, parsed and checked once for the configuration, the API
and the Stratum client alike."""

from __future__ import annotations

from dataclasses import dataclass

from hal.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class PoolAddress:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"stratum+tcp://{host}:{self.port}"


def parse_pool_url(url: str) -> PoolAddress:
    """`stratum+tcp://host:port` -> PoolAddress; InvalidArgument for anything else."""
    scheme = "stratum+tcp://"
    if not isinstance(url, str) or not url.startswith(scheme):
        raise InvalidArgument(f"pool URL must start with {scheme}: {url!r}")
    rest = url[len(scheme) :].rstrip("/")
    if rest.startswith("["):  # [ipv6]:port
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or any(c.isspace() or c in "/@?#[]" for c in host):
        raise InvalidArgument(f"bad host in pool URL {url!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(f"bad port in pool URL {url!r}")
    return PoolAddress(host, int(port_text))
