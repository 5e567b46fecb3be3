"""`rigsite`: the site controller's command line.

    rigsite run -c site.toml [--replica NAME]   the live controller (one replica)
    rigsite status -c site.toml                 the leader, the last round, what is in flight
    rigsite explain -c site.toml DEVICE         why a device does what it does, since when
    rigsite replay --days 90 --seed 1           a site replayed through every policy"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from controller.sim import report
from controller.sim.engine import SimOptions
from controller.sim.replay import ReplayJob, build, policies, run_all
from controller.sim.site import SiteSpec
from controller.sim.traces import write_csv


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value
    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be ≥ 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rigsite", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "replay", help="replay a site through every policy and print the table",
        description="Replay a simulated site through the field's rules and the controller's "
                    "policy, over the same traces, and print the table an operator would use "
                    "to choose a policy. Writes replay.csv, events.csv and week.png to --out.")
    r.add_argument("--days", type=_positive(float), default=90.0, help="replayed days (90)")
    r.add_argument("--seed", type=int, default=1, help="seed of the site and traces (1)")
    r.add_argument("--out", type=Path, default=Path("replay-out"),
                   help="directory for replay.csv, events.csv, week.png (replay-out)")
    r.add_argument("--jobs", type=_positive(int), default=2,
                   help="processes running policies side by side (2)")
    r.add_argument("--traces", type=Path, default=None,
                   help="directory of CSV traces (price.csv, hashprice.csv, demand.csv, "
                        "grid.csv); each file present replaces its generator")
    r.add_argument("--write-traces", type=Path, default=None,
                   help="write the traces used to this directory as CSV")
    r.add_argument("--policy", action="append", default=[],
                   help="run only this policy (repeatable; default: all)")
    r.add_argument("--miner-rigs", type=_count, default=80, help="rigs of miners (80)")
    r.add_argument("--miners-per-rig", type=_count, default=100, help="(100)")
    r.add_argument("--gpu-rigs", type=_count, default=20, help="rigs of GPUs (20)")
    r.add_argument("--gpus-per-rig", type=_count, default=20, help="(20)")
    r.add_argument("--miner-wake-s", type=_positive(float), default=SiteSpec.miner_wake_s,
                   help="a miner's wake to full power, s (1.0: this project's simulators)")
    r.add_argument("--no-plot", action="store_true", help="skip week.png")
    r.add_argument("--site", type=Path, default=None,
                   help="a measured site (JSON, device by device) instead of the generated one")
    r.add_argument("-c", "--config", type=Path, default=None,
                   help="a live site.toml: the controller's [policy] knobs from it")
    r.add_argument("--step-s", type=_positive(float), default=300.0,
                   help="a window, s (300; a compressed replay takes the live run's)")
    r.add_argument("--steps", type=_positive(int), default=None,
                   help="replay this many windows (instead of --days)")
    r.add_argument("--record", type=Path, default=None,
                   help="write each round's changes and each window's site power (JSON lines; "
                        "one policy)")
    live = sub.add_parser("run", help="run the live controller (one replica)",
                          description="The live site controller: one replica; with [etcd] "
                                      "endpoints, one of several (one leads, the others wait).")
    live.add_argument("-c", "--config", type=Path, help="site.toml")
    live.add_argument("--replica", help="this replica's name (default: the config's, else the "
                                        "hostname)")
    live.add_argument("--metrics-address", help="serve /metrics here (HOST:PORT), over the "
                                                "config's")
    live.add_argument("--print-config", action="store_true",
                      help="print every setting with its default and meaning, and exit")
    for name, text in (("status", "the leader, the last round and what is in flight"),
                       ("explain", "why a device does what it does, since when")):
        q = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, from "
                                                        "the journals.")
        q.add_argument("-c", "--config", type=Path, help="site.toml (for [journal] dir)")
        q.add_argument("--journal", type=Path, help="the journal directory, instead")
        if name == "explain":
            q.add_argument("device", help="a device id (gpu/GPU-..., asic/10.0.0.5:4028)")
    return p


def _journal_dir(args: argparse.Namespace) -> Path:
    from controller import config as site_config

    if args.journal is not None:
        return Path(args.journal)
    if args.config is None:
        raise site_config.ConfigError("give -c site.toml or --journal DIR")
    return site_config.load(args.config).journal_path()


def live(args: argparse.Namespace) -> int:
    from controller import config as site_config

    if args.print_config:
        print(site_config.describe(), end="")
        return 0
    if args.config is None:
        print("rigsite run: give -c site.toml", file=sys.stderr)
        return 2
    try:
        config = site_config.load(args.config, replica=args.replica)
        if args.metrics_address is not None:
            config = site_config.with_metrics(config, args.metrics_address)
    except site_config.ConfigError as e:
        print(f"rigsite run: {e}", file=sys.stderr)
        return 2
    from controller.live import run

    return run(config)


def journal_command(args: argparse.Namespace) -> int:
    from controller import config as site_config
    from controller import journal

    try:
        directory = _journal_dir(args)
        if args.command == "status":
            print(journal.status(directory))
        else:
            print(journal.explain(directory, args.device))
    except site_config.ConfigError as e:
        print(f"rigsite {args.command}: {e}", file=sys.stderr)
        return 2
    except LookupError as e:
        print(f"rigsite {args.command}: {e.args[0]}", file=sys.stderr)
        return 1
    return 0


def replay(args: argparse.Namespace) -> int:
    from controller.policy import PolicyConfig

    spec = SiteSpec(miner_rigs=args.miner_rigs, miners_per_rig=args.miners_per_rig,
                    gpu_rigs=args.gpu_rigs, gpus_per_rig=args.gpus_per_rig,
                    miner_wake_s=args.miner_wake_s)
    policy = PolicyConfig()
    if args.config is not None:
        from controller import config as site_config

        policy = site_config.load(args.config).policy
    if args.record is not None and len(args.policy) != 1:
        print("rigsite replay: --record needs one --policy", file=sys.stderr)
        return 2
    days = args.steps * args.step_s / 86_400.0 if args.steps else args.days
    job = ReplayJob(days=days, seed=args.seed, site=spec, traces_dir=args.traces,
                    step_s=args.step_s,
                    options=SimOptions(seed=args.seed, keep_decisions=args.record is not None),
                    site_file=args.site, policy=policy)
    site, traces = build(job)
    if args.write_traces is not None:
        write_csv(traces, args.write_traces)
    names = [p.name for p in policies(site, traces, policy)]
    unknown = [n for n in args.policy if n not in names]
    if unknown:
        print(f"rigsite replay: unknown policy {unknown[0]!r}; known: {', '.join(names)}",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    results = run_all(job, jobs=args.jobs, only=args.policy)
    wall_s = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_csv(results, args.out / "replay.csv")
    if args.record is not None:
        report.write_record(results[0], args.record)
    report.write_events_csv(results, args.out / "events.csv")
    n_miners = int((~site.is_gpu).sum())
    print(f"site: {len(site.fleet.rig_ids)} rigs, {n_miners:,} miners, "
          f"{int(site.is_gpu.sum()):,} GPUs; {traces.steps:,} windows of {traces.step_s:g} s "
          f"({days:g} days), seed {args.seed}; {len(traces.grid.events)} grid events")
    print(report.table(results))
    print(report.lyra_line(results, spec.served.patience_s))
    if not args.no_plot and traces.steps * traces.step_s >= 86_400:  # a week, or what is run
        start = report.plot_week(results, traces, args.out / "week.png")
        print(f"plot: {args.out / 'week.png'} (days {start}-{start + 7})")
    # Wall time is not a result: it goes to stderr, apart from the table.
    print(f"replayed {len(results)} policies in {wall_s:.1f} s wall", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "replay":
        try:
            return replay(args)
        except (OSError, ValueError) as e:
            print(f"rigsite replay: {e}", file=sys.stderr)
            return 1
    if args.command == "run":
        return live(args)
    if args.command in ("status", "explain"):
        return journal_command(args)
    return 2  # pragma: no cover (argparse requires a command)


if __name__ == "__main__":
    sys.exit(main())
