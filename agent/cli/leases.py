"""rigctl lease and rigctl health."""

from __future__ import annotations

import argparse
from typing import Any

from agent.cli.connect import Rig
from agent.cli.exitcodes import EXIT_FAILED
from agent.cli.output import emit_json, lease_message, utc
from client.model import LeaseInfo


def cmd_lease(rig: Rig, args: argparse.Namespace) -> int:
    lease: LeaseInfo
    if args.action == "acquire":
        # Not kept: this process ends now; whoever uses the token renews it (`lease renew`).
        lease = rig.call(lambda c: c.acquire_lease(args.holder, args.ttl, preempt=args.preempt,
                                                   keep=False)).info
    elif args.action == "renew":
        lease = rig.call(lambda c: c.renew_lease(args.lease_id, args.ttl))
    else:
        rig.call(lambda c: c.release_lease(args.lease_id))
        emit_json("lease", {"released": args.lease_id}) if args.json else \
            print(f"lease {args.lease_id} released")
        return 0
    if args.json:
        emit_json("lease", lease_message(lease))
    else:
        expires = utc(lease.expire_unix_s, "%H:%M:%S UTC")
        print(f"lease {lease.lease_id} held by {lease.holder} until {expires}; "
              f"fencing token {lease.fencing_token}")
    return 0


def cmd_health(rig: Rig, args: argparse.Namespace) -> int:
    checked = rig.call(lambda c: c.health())
    statuses = {service or "rigd": status for service, status in checked.items()}
    if args.json:
        emit_json("health", statuses)
    else:
        print(", ".join(f"{name}: {status}" for name, status in statuses.items()))
    return 0 if all(s == "serving" for s in statuses.values()) else EXIT_FAILED


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "lease", parents=[common], help="acquire, renew or release the rig's lease",
        description="One writer per rig: a controller holds the lease and passes its fencing "
                    "token with every change. Over the Unix socket each process is its own "
                    "identity, so a lease taken by one rigctl cannot be used by the next: "
                    "scripts that hold a lease across commands use a token (--token-file).",
        epilog="examples:\n  rigctl lease acquire --holder night-shift --ttl 300\n"
               "  rigctl lease renew LEASE_ID --ttl 300\n  rigctl lease release LEASE_ID",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("acquire", "renew", "release"),
                   help="take the lease, extend it, or give it up")
    p.add_argument("lease_id", nargs="?", default="", metavar="LEASE_ID",
                   help="for renew and release")
    p.add_argument("--holder", default="rigctl",
                   help="who holds it, for the audit log and others to see "
                        "(default: %(default)s)")
    p.add_argument("--ttl", type=int, default=60, metavar="S",
                   help="seconds, 1 .. 3600 (default: %(default)s)")
    p.add_argument("--preempt", action="store_true", help="take it from its holder (admin)")
    p.set_defaults(func=cmd_lease)

    p = sub.add_parser("health", parents=[common], help="is rigd serving? (gRPC health)",
                       description="The standard gRPC health check, as a load balancer sees "
                                   "it; exit 0 when serving.",
                       epilog="example:\n  rigctl health && echo up",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_health)
