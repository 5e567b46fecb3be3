"""Where one rigd is and how to reach it: its Unix socket, TCP, or TCP with mTLS, and a bearer
token. The environment variables are rigctl's:

    RIGD_SOCKET   rigd's Unix socket            RIGD_ADDRESS  HOST:PORT, TCP instead
    RIGCTL_CA     CA that signed rigd's cert    RIGCTL_CERT   this client's certificate
    RIGCTL_KEY    this client's private key     RIGCTL_TOKEN  a bearer token
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from client.errors import EndpointError

SYSTEM_SOCKET = "/run/rigd/rigd.sock"  # rigd under systemd (deploy/rigd.service)

# A channel's reconnection: gRPC's default backoff grows to 120 s, so a rig back from a restart
# would go unseen for up to two minutes; here a channel tries again within 5 s. (Not
# grpc.min_reconnect_backoff_ms: gRPC takes it as the time a connection attempt may take, and a
# rig slow to accept is then "unreachable" instead of a call that ends at its deadline.)
RECONNECT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One rigd: `address` (HOST:PORT) for TCP, else `socket` (a Unix socket path); mTLS when
    `ca`, `cert` and `key` (file paths) are given, all three; a bearer token as text or a file.
    """

    socket: str = ""
    address: str = ""
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""  # the name in rigd's certificate, if not the address's host
    token: str = ""
    token_file: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: str | None
                 ) -> Endpoint:
        """The endpoint the environment names, with `given` values (not None) over it."""
        env = os.environ if environ is None else environ
        values = {"socket": env.get("RIGD_SOCKET", ""), "address": env.get("RIGD_ADDRESS", ""),
                  "ca": env.get("RIGCTL_CA", ""), "cert": env.get("RIGCTL_CERT", ""),
                  "key": env.get("RIGCTL_KEY", ""), "token": env.get("RIGCTL_TOKEN", "")}
        values.update({k: v for k, v in given.items() if v is not None})
        return cls(**values)

    @classmethod
    def parse(cls, target: str, template: Endpoint | None = None) -> Endpoint:
        """`unix:/path`, `/path` (a socket) or `HOST:PORT`, with the credentials of
        `template`."""
        base = template or cls()
        target = target.strip()
        if target.startswith("unix:"):
            return dataclasses.replace(base, socket=target.removeprefix("unix:"), address="")
        if target.startswith("/"):
            return dataclasses.replace(base, socket=target, address="")
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise EndpointError(f"{target!r} is neither HOST:PORT nor unix:/path/to/socket")
        return dataclasses.replace(base, address=target, socket="")

    @property
    def tcp(self) -> bool:
        return bool(self.address)

    @property
    def where(self) -> str:
        """How errors name this rig: its address, or unix:<socket>."""
        return self.address or f"unix:{self.socket or SYSTEM_SOCKET}"

    @property
    def tls(self) -> bool:
        return self.tcp and any((self.ca, self.cert, self.key))

    def bearer(self) -> str:
        """The token to send, read from token_file when one is named."""
        if not self.token_file:
            return self.token
        try:
            return Path(self.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise EndpointError(f"cannot read token file {self.token_file}: {exc.strerror}",
                                path=self.token_file) from None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.bearer()
        return (("authorization", f"Bearer {token}"),) if token else ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        """mTLS credentials, the files read now; None for a plain channel."""
        if not self.tls:
            return None
        files = {"ca": self.ca, "cert": self.cert, "key": self.key}
        missing = tuple(name for name, path in files.items() if not path)
        if missing:
            named = ", ".join(f"{n} (env RIGCTL_{n.upper()})" for n in missing)
            raise EndpointError(f"mTLS needs ca, cert and key together: {named} not given",
                                missing=missing)
        try:
            ca, cert, key = (Path(p).read_bytes() for p in files.values())
        except OSError as exc:
            raise EndpointError(f"cannot read {exc.filename}: {exc.strerror}",
                                path=str(exc.filename)) from None
        return grpc.ssl_channel_credentials(ca, key, cert)

    def channel(self, options: Sequence[tuple[str, Any]] = (),
                credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
        """A grpc.aio channel to this rig (made in the event loop that will use it)."""
        opts: list[tuple[str, Any]] = [*RECONNECT_OPTIONS, *options]
        if not self.tcp:
            return grpc.aio.insecure_channel(f"unix:{self.socket or SYSTEM_SOCKET}", options=opts)
        if credentials is None:
            credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.address, options=opts)
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.aio.secure_channel(self.address, credentials, options=opts)
