"""Reaching rigd through the client library (client/): the local socket, or TCP with mTLS (and a
bearer token); errors said plainly, naming the party that failed; device names resolved the way
operators type them.

Which party failed comes from the error the library raises, never from matching rigd's text:
"cannot reach rigd" only when no answer came from rigd at all (the connection or handshake
failed), "no answer from rigd" only when rigd itself stayed silent past --timeout; a device or
its firmware that failed is named, from rigd's status details when it attaches them."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from agent.cli.exitcodes import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE
from agent.cli.output import short_id
from client.endpoint import SYSTEM_SOCKET, Endpoint
from client.errors import EndpointError, RigError, Timeout, Unreachable
from hal.device import DeviceKind

if TYPE_CHECKING:
    from client.blocking import BlockingRig
    from client.model import Inventory

T = TypeVar("T")

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
# What a device rigd names as the failing party did.
_DEVICE_DID = {
    grpc.StatusCode.UNAVAILABLE: "is unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "did not answer in time",
    grpc.StatusCode.FAILED_PRECONDITION: "refused",
    grpc.StatusCode.INVALID_ARGUMENT: "refused the value",
}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_socket_path() -> str:
    """rigd's own default socket (agent/config/paths.py), loaded only when a command needs it:
    the configuration package costs start-up time that `rigctl --socket S ...` need not pay."""
    from agent.config.paths import default_socket_path as rigds

    return rigds()


def local_socket() -> str:
    """The socket of a rigd this user runs; else the system rigd's, which the members of its
    group may use (the unit runs rigd as its own user, not as the operator)."""
    own = default_socket_path()
    if not os.path.exists(own) and os.path.exists(SYSTEM_SOCKET):
        return SYSTEM_SOCKET
    return own


def add_connection_args(parser: argparse.ArgumentParser, after_command: bool = False,
                        describe_socket: bool = True) -> None:
    """The options that say which rigd to reach. They may come before the command or after it
    (`rigctl --socket S inventory`, `rigctl inventory --socket S`): after it they default to
    nothing, so they never undo what came before. `describe_socket` names the default socket
    in the help (it costs loading rigd's configuration: only when help is asked for)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    where = "this user's rigd's, else " + SYSTEM_SOCKET
    if describe_socket:
        own = default_socket_path()
        where = own if own == SYSTEM_SOCKET else f"{own}, else {SYSTEM_SOCKET}"
    group = parser.add_argument_group("reaching rigd")
    group.add_argument("--socket", default=default(os.environ.get("RIGD_SOCKET", "")),
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
                       help="seconds per call (default: 10; with --fleet, per rig)")
    group.add_argument("--fleet", default=default(""), metavar="FILE",
                       help="run inventory, telemetry or curtail on every rig FILE lists, one "
                            "a line: [NAME] HOST:PORT or unix:/path (TLS and token options "
                            "apply to each)")
    group.add_argument("--concurrency", type=int, default=default(256), metavar="N",
                       help="with --fleet: rigs asked at once (default: 256)")


def credentials_of(args: argparse.Namespace) -> Endpoint:
    """The TLS files and token the command line gives, with no rig named yet."""
    return Endpoint(ca=args.ca, cert=args.cert, key=args.key, server_name=args.server_name,
                    token=os.environ.get("RIGCTL_TOKEN", ""), token_file=args.token_file or "")


def endpoint_of(args: argparse.Namespace) -> Endpoint:
    """The one rigd the command line names."""
    base = credentials_of(args)
    if args.address:
        return dataclasses.replace(base, address=args.address)
    return dataclasses.replace(base, socket=args.socket or local_socket())


def endpoint_error(exc: EndpointError) -> CliError:
    """A bad endpoint as rigctl's options name it (exit 2)."""
    if exc.missing:
        named = ", ".join(f"--{n} (env RIGCTL_{n.upper()})" for n in exc.missing)
        return CliError(f"mTLS needs --ca, --cert and --key together: {named} not given",
                        EXIT_USAGE)
    return CliError(str(exc), EXIT_USAGE)


def describe(exc: RigError) -> str:
    """rigd's answer as one line that names who failed: a device, its firmware, the pool (from
    rigd's status details), else what the status code says (the caller's request, rigd)."""
    says = _SAYS.get(exc.code, exc.code.name.lower())
    device = exc.device_id or "a device"
    if exc.party == "firmware":
        return f"the firmware of {device} refused: {exc.firmware_says or exc.message}"
    if exc.party == "device":
        return f"{device} {_DEVICE_DID.get(exc.code, 'failed')}: {exc.message}"
    if exc.party == "pool":
        return f"the pool {_DEVICE_DID.get(exc.code, 'failed')}: {exc.message}"
    return f"{says}: {exc.message}"


def explain(exc: RigError, endpoint: Endpoint, timeout_s: float) -> CliError:
    if isinstance(exc, Unreachable):
        return CliError(f"cannot reach rigd at {endpoint.where}: "
                        f"{unreachable(exc.message, endpoint)}", EXIT_UNREACHABLE)
    if isinstance(exc, Timeout) and not exc.answered:
        return CliError(f"no answer from rigd at {endpoint.where} within {timeout_s:g} s "
                        "(--timeout)", EXIT_UNREACHABLE)
    return CliError(describe(exc))


def unreachable(details: str, endpoint: Endpoint) -> str:
    """gRPC's last connection error as what it means: which side refused whose certificate,
    or the OS's reason."""
    low = details.lower()
    if "hostname verification" in low or "peer name" in low:
        name = endpoint.server_name or endpoint.address.rpartition(":")[0].strip("[]")
        return (f"TLS handshake failed: rigd's certificate is not for {name} (--server-name "
                "names one it is for)")
    if "certificate_verify_failed" in low or "handshake failed" in low:
        return (f"TLS handshake failed: rigd's certificate is not signed by the CA in "
                f"{endpoint.ca} (--ca), or has expired")
    if "socket closed" in low or "connection reset" in low:
        if endpoint.address and endpoint.cert:
            return (f"rigd refused the TLS handshake: it does not accept {endpoint.cert} "
                    "(not signed by the CA in its [tls] client_ca_file, or expired)")
        if endpoint.address:
            return ("rigd closed the connection; if it serves mTLS, give --ca, --cert and "
                    "--key (env RIGCTL_CA, RIGCTL_CERT, RIGCTL_KEY)")
    return details.rsplit(":", 1)[-1].strip() or "no answer"


class Rig:
    """One rigd, as the command line names it: the client library's blocking rig, made on
    first use, its errors as rigctl's one-line CliError."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.endpoint = endpoint_of(args)
        self.where = self.endpoint.where
        self._client: BlockingRig | None = None
        self._inventory: Inventory | None = None

    @property
    def client(self) -> BlockingRig:
        if self._client is None:
            from client.blocking import BlockingRig

            try:
                self._client = BlockingRig(self.endpoint, timeout_s=self.args.timeout)
            except EndpointError as exc:
                raise endpoint_error(exc) from None
        return self._client

    def call(self, fn: Callable[[BlockingRig], T]) -> T:
        """fn(client); a refusal or failure becomes one line."""
        try:
            return fn(self.client)
        except RigError as exc:
            raise self.explain(exc) from None

    def explain(self, exc: RigError) -> CliError:
        return explain(exc, self.endpoint, self.args.timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def inventory(self) -> Inventory:
        if self._inventory is None:
            self._inventory = self.call(lambda c: c.inventory())
        return self._inventory

    def resolve(self, names: Sequence[str]) -> list[str]:
        """Device ids from what an operator types: a full id, a GPU index, the short id the
        tables show, or a unique prefix of either. Unknown or ambiguous names are an error
        that suggests."""
        devices = self.inventory().devices
        ids = [d.id for d in devices]
        gpu_index = {d.info.attributes.get("index"): d.id for d in devices
                     if d.kind == DeviceKind.GPU and "index" in d.info.attributes}
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
        import difflib  # only to suggest: not on every command's start-up

        close = difflib.get_close_matches(name, ids + [short_id(i) for i in ids], n=1,
                                          cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CliError(f"no device {name!r}{hint}; `rigctl inventory` lists them")
