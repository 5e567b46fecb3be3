"""rigctl lease and rigctl health."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.cli.connect import Rig
from agent.cli.exitcodes import EXIT_FAILED
from agent.cli.output import emit_json
from rigapi import SERVICE_NAME, pb


def cmd_lease(rig: Rig, args: argparse.Namespace) -> int:
    if args.action == "acquire":
        reply = rig.call(lambda s, md: s.AcquireLease(pb.AcquireLeaseRequest(
            holder=args.holder, ttl_s=args.ttl, preempt=args.preempt), metadata=md,
            timeout=args.timeout))
    elif args.action == "renew":
        reply = rig.call(lambda s, md: s.RenewLease(pb.RenewLeaseRequest(
            lease_id=args.lease_id, ttl_s=args.ttl), metadata=md, timeout=args.timeout))
    else:
        reply = rig.call(lambda s, md: s.ReleaseLease(pb.ReleaseLeaseRequest(
            lease_id=args.lease_id), metadata=md, timeout=args.timeout))
        emit_json("lease", {"released": args.lease_id}) if args.json else \
            print(f"lease {args.lease_id} released")
        return 0
    lease = reply.lease
    if args.json:
        emit_json("lease", lease)
    else:
        expires = lease.expire_time.ToDatetime().strftime("%H:%M:%S UTC")
        print(f"lease {lease.lease_id} held by {lease.holder} until {expires}; "
              f"fencing token {lease.fencing_token}")
    return 0


def cmd_health(rig: Rig, args: argparse.Namespace) -> int:
    def check(channel: grpc.Channel, service: str) -> int:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service),
                              timeout=args.timeout).status)

    statuses = {}
    with rig.channel() as channel:
        for service in ("", SERVICE_NAME):
            try:
                statuses[service or "rigd"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    check(channel, service)).lower()
            except grpc.RpcError as exc:
                raise rig.explain(exc) from None
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
