"""rigctl certs init: the certificates a first installation needs for mTLS, and the lines of
rigd.toml and of rigctl that use them. Runs on this machine; rigd need not be running.

`cryptography` and the agent's configuration module are imported when the command runs:
every other rigctl command starts without them.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import re
from pathlib import Path
from typing import Any

from agent.cli.connect import CliError
from agent.cli.exitcodes import EXIT_USAGE

DEFAULT_PORT = 50051
_CLIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _client(text: str) -> tuple[str, str]:
    """NAME or NAME=ROLE; the name becomes the certificate's common name and its file name."""
    from agent.config.settings import ROLES

    name, _, role = text.partition("=")
    if not _CLIENT.fullmatch(name) or name in ("ca", "server"):
        raise argparse.ArgumentTypeError(
            f"client name {name!r}: letters, digits, '.', '_' and '-' (not ca or server)")
    if role and role not in ROLES:
        raise argparse.ArgumentTypeError(f"role {role!r}: one of {', '.join(ROLES)}")
    return name, role or "admin"


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 36500:
        raise argparse.ArgumentTypeError(f"{text!r}: a number of days, 1 .. 36500")
    return days


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_address(names: tuple[str, ...], port: int) -> str:
    """The first non-loopback IP given, else every address; loopback if only loopback."""
    from agent.config.settings import is_loopback

    for name in names:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            continue
        if not ip.is_loopback:
            return _host_port(name, port)
    if all(is_loopback(n) for n in names):
        return f"127.0.0.1:{port}"
    return f"0.0.0.0:{port}"


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_certs(args: argparse.Namespace) -> int:
    from agent.core import certs

    gid = None
    if args.key_group:
        try:
            gid = int(args.key_group) if args.key_group.isdigit() else \
                grp.getgrnam(args.key_group).gr_gid
        except KeyError:
            raise CliError(f"no group {args.key_group!r} (--key-group)", EXIT_USAGE) from None
    clients = dict(args.client_name or [(certs.DEFAULT_CLIENT, "admin")])
    names = certs.server_names(args.server_name or ())
    directory = Path(args.directory).absolute()
    try:
        issued = certs.init(directory, names, list(clients), days=args.days,
                            ca_days=args.ca_days, force=args.force, key_group=gid)
    except certs.CertError as exc:
        raise CliError(str(exc)) from None
    print(report(issued, clients, args.port, args.days))
    return 0


def report(issued: Any, clients: dict[str, str], port: int, days: int) -> str:
    """What was written, the rigd.toml lines that use it and the rigctl command line."""
    d, names = issued.directory, issued.server_names
    files = ", ".join(f"{n}.{s}" for n in ("ca", "server", *clients) for s in ("pem", "key"))
    listen = _listen_address(names, port)
    roles = ", ".join(f"{_toml(c)} = {_toml(r)}" for c, r in clients.items())
    lines = [f"wrote {d}: {files}",
             f"rigd's certificate is for {', '.join(names)}; certificates last {days} days",
             "ca.key signs certificates: keep it off the rig once the clients are issued", "",
             "# rigd: add to /etc/rigd/rigd.toml (rigd --check-config checks it)",
             "[server]", f"tcp_address = {_toml(listen)}"]
    if not listen.startswith("127.0.0.1:"):
        lines.append("allow_non_loopback = true")
    lines += ["[tls]", f"cert_file = {_toml(str(d / 'server.pem'))}",
              f"key_file = {_toml(str(d / 'server.key'))}",
              f"client_ca_file = {_toml(str(d / 'ca.pem'))}",
              "[auth]", f"certificate_roles = {{ {roles} }}", ""]
    client = next(iter(clients))
    address = _host_port(names[0], port)
    pem, key, ca = (d / f"{client}.pem", d / f"{client}.key", d / "ca.pem")
    lines += [f"# rigctl elsewhere: copy ca.pem, {client}.pem and {client}.key there, then",
              f"rigctl --address {address} --ca {ca} --cert {pem} --key {key} inventory",
              "# or, for every command of a shell:",
              f"export RIGD_ADDRESS={address} RIGCTL_CA={ca} RIGCTL_CERT={pem} RIGCTL_KEY={key}"]
    return "\n".join(lines)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """`certs` runs here, not through rigd: `common` (connection options) is not used."""
    certs = sub.add_parser(
        "certs", help="create the CA and certificates for mTLS (local)",
        description="Certificates for rigd's mTLS listener and its clients. Runs on this "
                    "machine; rigd need not be running.",
        epilog="example:\n  rigctl certs init /etc/rigd/pki --server-name rig12.example.net",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    certs_sub = certs.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    p = certs_sub.add_parser(
        "init", help="a CA, rigd's certificate and client certificates for a first installation",
        description="Create DIR/ca.pem and ca.key (the CA), DIR/server.pem and server.key "
                    "(rigd's certificate: the names given, plus localhost, 127.0.0.1 and ::1) "
                    "and DIR/NAME.pem and NAME.key for each client; keys are written 0600 and "
                    "nothing is overwritten unless --force. Prints the rigd.toml lines and the "
                    "rigctl options that use them.",
        epilog="examples:\n"
               "  rigctl certs init /etc/rigd/pki --server-name rig12.example.net "
               "--server-name 10.0.0.12\n"
               "  rigctl certs init /etc/rigd/pki --client-name ops=admin "
               "--client-name controller-a=operator --key-group rigd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", metavar="DIR", help="where the files go (created if missing)")
    p.add_argument("--server-name", action="append", metavar="NAME",
                   help="a DNS name or IP address controllers reach rigd at; repeatable "
                        "(default: this host's name)")
    p.add_argument("--client-name", action="append", type=_client, metavar="NAME[=ROLE]",
                   help="a client certificate's common name and the role rigd.toml gives it; "
                        "repeatable (default: rigctl=admin)")
    p.add_argument("--days", type=_days, default=825, metavar="N",
                   help="how long rigd's and the clients' certificates last (default: "
                        "%(default)s)")
    p.add_argument("--ca-days", type=_days, default=3650, metavar="N",
                   help="how long the CA lasts (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help="rigd's TCP port in the printed lines (default: %(default)s)")
    p.add_argument("--key-group", metavar="GROUP",
                   help="server.key readable (0640) by this group, the one rigd runs as "
                        "(default: none, 0600)")
    p.add_argument("--force", action="store_true", help="replace files that exist")
    p.set_defaults(func=None, local=cmd_certs)
