"""Reaching rigd: the local socket, or TCP with mTLS (and a bearer token), errors said plainly,
and device names resolved the way operators type them."""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from agent.cli.exitcodes import EXIT_FAILED, EXIT_UNREACHABLE
from agent.cli.output import short_id
from agent.config.paths import default_socket_path
from rigapi import FRESH_STREAM_OPTIONS, pb, pb_grpc

T = TypeVar("T")

SYSTEM_SOCKET = "/run/rigd/rigd.sock"  # rigd under systemd (deploy/rigd.service)

# What each refusal means to an operator, instead of the status name.
_SAYS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.NOT_FOUND: "not found",
    grpc.StatusCode.ALREADY_EXISTS: "already used",
    grpc.StatusCode.PERMISSION_DENIED: "not allowed",
    grpc.StatusCode.UNAUTHENTICATED: "not authenticated",
    grpc.StatusCode.FAILED_PRECONDITION: "refused",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too much",
    grpc.StatusCode.UNIMPLEMENTED: "not built",
    grpc.StatusCode.INTERNAL: "failed inside rigd",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timed out",
}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_connection_args(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The options that say which rigd to reach. They may come before the command or after it
    (`rigctl --socket S inventory`, `rigctl inventory --socket S`): after it they default to
    nothing, so they never undo what came before."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    own = default_socket_path()
    where = own if own == SYSTEM_SOCKET else f"{own}, else {SYSTEM_SOCKET}"
    group = parser.add_argument_group("reaching rigd")
    group.add_argument("--socket", default=default(os.environ.get("RIGD_SOCKET",
                                                                  local_socket())),
                       help=f"rigd's Unix socket (env RIGD_SOCKET; default: {where})")
    group.add_argument("--address", default=default(os.environ.get("RIGD_ADDRESS", "")),
                       help="reach rigd over TCP instead, HOST:PORT (env RIGD_ADDRESS); with "
                            "--ca/--cert/--key over mTLS")
    group.add_argument("--ca", default=default(os.environ.get("RIGCTL_CA", "")),
                       help="CA that signed rigd's certificate (env RIGCTL_CA)")
    group.add_argument("--cert", default=default(os.environ.get("RIGCTL_CERT", "")),
                       help="this client's certificate (env RIGCTL_CERT)")
    group.add_argument("--key", default=default(os.environ.get("RIGCTL_KEY", "")),
                       help="this client's private key (env RIGCTL_KEY)")
    group.add_argument("--server-name", default=default(""),
                       help="the name in rigd's certificate, if not the address's host")
    group.add_argument("--token-file", default=default(None),
                       help="bearer token file (or env RIGCTL_TOKEN)")
    group.add_argument("--timeout", type=float, default=default(10.0), metavar="S",
                       help="seconds per call (default: 10)")


def local_socket() -> str:
    """The socket of a rigd this user runs; else the system rigd's, which the members of its
    group may use (the unit runs rigd as its own user, not as the operator)."""
    own = default_socket_path()
    if not os.path.exists(own) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return own


class Rig:
    """One rigd, as the command line names it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.where = args.address or f"unix:{args.socket}"
        self._inventory: pb.GetInventoryResponse | None = None

    def channel(self) -> grpc.Channel:
        args = self.args
        if not args.address:
            return grpc.insecure_channel(f"unix:{args.socket}", options=FRESH_STREAM_OPTIONS)
        files = (args.ca, args.cert, args.key)
        if not any(files):
            return grpc.insecure_channel(args.address, options=FRESH_STREAM_OPTIONS)
        if not all(files):
            missing = [f"--{n} (env RIGCTL_{n.upper()})" for n, f in zip(
                ("ca", "cert", "key"), files, strict=True) if not f]
            raise CliError(f"mTLS needs --ca, --cert and --key together: {', '.join(missing)} "
                           "not given", 2)
        try:
            ca, cert, key = (Path(f).read_bytes() for f in files)
        except OSError as exc:
            raise CliError(f"cannot read {exc.filename}: {exc.strerror}", 2) from None
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        options: list[tuple[str, Any]] = list(FRESH_STREAM_OPTIONS)
        if args.server_name:
            options.append(("grpc.ssl_target_name_override", args.server_name))
        return grpc.secure_channel(args.address, credentials, options=options)

    def metadata(self) -> list[tuple[str, str]]:
        token = os.environ.get("RIGCTL_TOKEN", "")
        if self.args.token_file:
            try:
                token = Path(self.args.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CliError(f"cannot read token file {self.args.token_file}: "
                               f"{exc.strerror}", 2) from None
        return [("authorization", f"Bearer {token}")] if token else []

    def call(self, fn: Callable[[pb_grpc.RigAgentStub, list[tuple[str, str]]], T]) -> T:
        """fn(stub, metadata) on a fresh channel; a refusal or failure becomes one line."""
        with self.channel() as channel:
            try:
                return fn(pb_grpc.RigAgentStub(channel), self.metadata())
            except grpc.RpcError as exc:
                raise self.explain(exc) from None

    def explain(self, exc: grpc.RpcError) -> CliError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower()
                                                    or "handshake" in details.lower()):
            return CliError(f"cannot reach rigd at {self.where}: {self._unreachable(details)}",
                            EXIT_UNREACHABLE)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(f"no answer from rigd at {self.where} within "
                            f"{self.args.timeout:g} s (--timeout)", EXIT_UNREACHABLE)
        return CliError(f"{_SAYS.get(code, code.name.lower())}: {details}")

    def _unreachable(self, details: str) -> str:
        """gRPC's last connection error as what it means: which side refused whose
        certificate, or the OS's reason."""
        low, args = details.lower(), self.args
        if "hostname verification" in low or "peer name" in low:
            name = args.server_name or args.address.rpartition(":")[0].strip("[]")
            return (f"TLS handshake failed: rigd's certificate is not for {name} (--server-name "
                    "names one it is for)")
        if "certificate_verify_failed" in low or "handshake failed" in low:
            return (f"TLS handshake failed: rigd's certificate is not signed by the CA in "
                    f"{args.ca} (--ca), or has expired")
        if "socket closed" in low or "connection reset" in low:
            if args.address and args.cert:
                return (f"rigd refused the TLS handshake: it does not accept {args.cert} "
                        "(not signed by the CA in its [tls] client_ca_file, or expired)")
            if args.address:
                return ("rigd closed the connection; if it serves mTLS, give --ca, --cert and "
                        "--key (env RIGCTL_CA, RIGCTL_CERT, RIGCTL_KEY)")
        return details.rsplit(":", 1)[-1].strip() or "no answer"

    def inventory(self) -> pb.GetInventoryResponse:
        if self._inventory is None:
            self._inventory = self.call(lambda s, md: s.GetInventory(
                pb.GetInventoryRequest(), metadata=md, timeout=self.args.timeout))
        return self._inventory

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Device ids from what an operator types: a full id, a GPU index, the short id the
        tables show, or a unique prefix of either. Unknown or ambiguous names are an error
        that suggests."""
        devices = self.inventory().devices
        ids = [d.id for d in devices]
        gpu_index = {d.attributes.get("index"): d.id for d in devices
                     if d.kind == pb.DEVICE_KIND_GPU and "index" in d.attributes}
        resolved = []
        for name in names:
            if name in ids:
                resolved.append(name)
            elif name in gpu_index:
                resolved.append(gpu_index[name])
            else:
                resolved.append(self._match(name, ids))
        return resolved

    @staticmethod
    def _match(name: str, ids: list[str]) -> str:
        matches = [i for i in ids if i.startswith(name) or short_id(i).startswith(name)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CliError(f"{name!r} matches {len(matches)} devices "
                           f"({', '.join(short_id(m) for m in matches[:4])}): give more of it")
        close = difflib.get_close_matches(name, ids + [short_id(i) for i in ids], n=1,
                                          cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CliError(f"no device {name!r}{hint}; `rigctl inventory` lists them")
