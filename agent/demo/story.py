"""The story `make demo` tells: a hybrid rig that mines, serves inference, answers the grid and
comes back, told through rigctl as an operator would type it, each step with its latency.

    python -m agent.demo.story [--seconds N]

It runs rigd on its demo rig (simulated GPUs hashing on the machine's OpenCL device, simulated
miners, a local pool) with an OpenADR VEN, and an OpenADR VTN of its own that plays the utility.
After the story rigd keeps running for the visitor until Ctrl-C (or N seconds); everything it
started ends with it. tests/e2e runs the same story with assertions (`tell` returns the facts).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

RIGCTL = str(Path(sys.executable).with_name("rigctl"))
RIGD = str(Path(sys.executable).with_name("rigd"))
SENTENCES = ("Grid operators pay bitcoin miners to switch off during peak demand.",
             "Mining farms earn money by curtailing their power use when the grid is stressed.",
             "Knead the dough for ten minutes, then let it rise.")
GRID_FRACTION = 0.5  # the utility asks for half of what the rig draws
EVENT_S = 600  # the event's length; the story ends it early, as a utility cancelling would
STEPS = (  # the timeline's steps; README.md's captured timeline shows the same
    "what the rig is",
    "everything mines: four GPUs (their kernel on this CPU), the miners, for a local pool",
    "inference demand arrives: two GPUs switch to the builtin runtime",
    f"the grid asks: the utility's VTN sends an OpenADR event for {GRID_FRACTION:.0%} of the "
    f"rig's power",
    "the event ends: the rig comes back exactly as it was",
    "the same rig in rigctl top (one frame)",
)


@dataclass
class Facts:
    """What the story saw, for the end-to-end test to assert on."""

    devices: int = 0
    gpus: list[str] = field(default_factory=list)
    mining_hs: float = 0.0
    shares_accepted: int = 0
    switch_state: str = ""
    endpoint: str = ""
    similarity_related: float = math.nan
    similarity_unrelated: float = math.nan
    rig_before_w: float = 0.0
    target_w: float = 0.0
    curtailment: dict[str, Any] = field(default_factory=dict)
    rig_curtailed_w: float = 0.0
    asics_mining_curtailed: list[bool] = field(default_factory=list)
    serving_while_curtailed: bool = False
    opted: str = ""
    restored_equal: bool = False
    steps: list[tuple[str, float]] = field(default_factory=list)


class Story:
    def __init__(self, socket: str, out: Callable[[str], None] = print) -> None:
        self.socket = socket
        self.out = out
        self.started = time.monotonic()
        self.facts = Facts()

    # -- telling ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, number: int) -> Iterator[None]:
        title = STEPS[number - 1]
        began = time.monotonic()
        self.out(f"\n[t+{began - self.started:5.1f}s] {number}. {title}")
        yield
        took = time.monotonic() - began
        self.facts.steps.append((title, took))
        self.out(f"    ... {took:.1f} s")

    def rigctl(self, *args: str, show: bool = True) -> str:
        """Run rigctl as an operator would, print what they would see."""
        command = ["rigctl", *args]
        if show:
            self.out(f"$ {' '.join(command)}")
        result = subprocess.run([RIGCTL, "--socket", self.socket, *args], capture_output=True,
                                text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        if show:
            self.out(_indent(result.stdout.rstrip()))
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.rigctl(*args, "--json", show=False))

    def wait(self, what: str, condition: Callable[[], bool], timeout_s: float = 180,
             seen: Callable[[], object] | None = None) -> None:
        """Poll `condition`; on giving up, say what `seen` last showed."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                last = f"; last seen: {seen()}" if seen is not None else ""
                raise RuntimeError(f"gave up waiting for {what} after {timeout_s:.0f} s{last}")
            time.sleep(0.25)

    # -- the story -------------------------------------------------------------------------

    def tell(self, vtn: Any) -> Facts:
        facts = self.facts
        with self.step(1):
            inventory = self.json("inventory")
            self.rigctl("inventory")
            facts.devices = len(inventory["devices"])
            facts.gpus = [d["id"] for d in inventory["devices"] if d["kind"] == "gpu"]

        with self.step(2):
            self.wait("every GPU mining and shares accepted", self._mining)
            self.rigctl("telemetry")
            shares = facts.shares_accepted
            self.out(f"    mining {facts.mining_hs / 1e12:,.1f} TH/s in all; {shares} "
                     f"share{'' if shares == 1 else 's'} accepted by the pool so far")

        with self.step(3):
            facts.switch_state = "succeeded"
            try:
                self.rigctl("switch", "0", "1", "inference")
            except RuntimeError:
                facts.switch_state = "failed"
                raise
            self._ask_the_model()

        with self.step(4):
            self._grid_event(vtn)

        with self.step(5):
            vtn.cancel("grid-1")
            self.wait("the curtailment to lift and every device to be as before",
                      lambda: self._snapshot() == self._before, timeout_s=300)
            facts.restored_equal = True
            self.rigctl("curtail", "status")
            self.rigctl("telemetry")

        with self.step(6):
            self.rigctl("top", "--count", "1", "--plain")
        return facts

    def _mining(self) -> bool:
        readings = self.json("telemetry")
        gpus = [d for d in readings["devices"] if d["kind"] == "gpu"]
        asics = [d for d in readings["devices"] if d["kind"] == "asic"]
        mining = all(g["workload"] and g["workload"]["state"] == "running" for g in gpus) and \
            all(a["asic"] and a["asic"]["is_mining"] for a in asics)
        self.facts.shares_accepted = sum((d["workload"] or {}).get("shares_accepted") or 0
                                         for d in readings["devices"])
        self.facts.mining_hs = sum(d["hashrate_hs"] or 0 for d in readings["devices"])
        return bool(gpus) and mining and self.facts.shares_accepted > 0

    def _endpoint(self) -> str:
        reading = self.json("telemetry", "-d", "0")["devices"][0]
        return str(reading["workload"]["endpoint"])

    def _embed(self, endpoint: str, texts: tuple[str, ...]) -> list[list[float]]:
        reply = httpx.post(f"{endpoint}/v1/embeddings", json={"input": list(texts)},
                           timeout=60, trust_env=False)
        reply.raise_for_status()
        return [d["embedding"] for d in reply.json()["data"]]

    def _ask_the_model(self) -> None:
        facts = self.facts
        facts.endpoint = self._endpoint()
        self.out(f"$ curl {facts.endpoint}/v1/embeddings -d '{{\"input\": [3 sentences]}}'")
        vectors = self._embed(facts.endpoint, SENTENCES)
        facts.similarity_related = _cosine(vectors[0], vectors[1])
        facts.similarity_unrelated = _cosine(vectors[0], vectors[2])
        self.out(_indent(
            f"{len(vectors)} embeddings of {len(vectors[0])} numbers, e.g. "
            f"[{', '.join(f'{x:+.3f}' for x in vectors[0][:4])}, ...]\n"
            f"miners paid to switch off ~ miners curtailing: cosine "
            f"{facts.similarity_related:.2f}\n"
            f"miners paid to switch off ~ kneading dough:    cosine "
            f"{facts.similarity_unrelated:.2f}"))

    def _grid_event(self, vtn: Any) -> None:
        facts = self.facts
        self._before = self._snapshot()
        facts.rig_before_w = float(self.json("telemetry")["rig_power"]["total_w"])
        facts.target_w = round(facts.rig_before_w * GRID_FRACTION)
        self.out(f"utility: LOAD_DISPATCH setpoint {facts.target_w:,.0f} W for {EVENT_S} s "
                 f"(event grid-1); the rig draws {facts.rig_before_w:,.0f} W")
        vtn.add_event("grid-1", "LOAD_DISPATCH", "setpoint", float(facts.target_w),
                      duration_s=EVENT_S)

        def confirmed() -> bool:
            c = self.json("curtail", "status")["curtailment"]
            return bool(c) and c["state"] in ("confirmed", "target_not_met")

        self.wait("the rig to answer the event", confirmed,
                  seen=lambda: (self.json("curtail", "status"), vtn.responses))
        status = self.json("curtail", "status")
        facts.curtailment = status["curtailment"]
        facts.rig_curtailed_w = status["rig_power"]["total_w"]
        self.rigctl("curtail", "status")
        self.rigctl("telemetry")
        readings = self.json("telemetry")["devices"]
        facts.asics_mining_curtailed = [bool(d["asic"] and d["asic"]["is_mining"])
                                        for d in readings if d["kind"] == "asic"]
        self._embed(facts.endpoint, SENTENCES[:1])  # inference still serves
        facts.serving_while_curtailed = True
        answer = vtn.answer("grid-1")
        facts.opted = answer.get("opt_type", "") if answer else ""
        self.out(f"    the VEN answered the utility: {facts.opted or 'nothing yet'}; "
                 "inference still serves")

    def _snapshot(self) -> dict[str, tuple[Any, ...]]:
        """Each device's workload and settings: what the end of the event must bring back."""
        readings = self.json("telemetry")["devices"]
        inventory = {d["id"]: d for d in self.json("inventory")["devices"]}
        return {d["device_id"]: (
            (inventory[d["device_id"]]["workload"] or {}).get("kind"),
            (d["workload"] or {}).get("state"), (d["workload"] or {}).get("intensity"),
            d["power_limit_w"], (d["asic"] or {}).get("is_mining")) for d in readings}


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines())


# ---- running it --------------------------------------------------------------------------------


class Demo:
    """rigd on its demo rig with an OpenADR VEN, and the utility's VTN; all ended by stop()."""

    def __init__(self) -> None:
        from agent.demo.vtn import Vtn

        self.tmp = Path(tempfile.mkdtemp(prefix="rigd-demo-"))
        self.socket = str(self.tmp / "rigd.sock")
        self.log = self.tmp / "rigd.log"
        self.vtn = Vtn(_free_port(), vtn_id="DEMO-UTILITY", ven_id="ven-demo-rig")
        self.vtn.market_context = "oadr://demo.grid/emergency"
        config = self.tmp / "story.toml"
        config.write_text(
            f'[openadr]\nvtn_url = "{self.vtn.url}"\npoll_interval_s = 1.0\n'
            'report_interval_s = 5\ndeadline_s = 60.0\n')
        self.proc = subprocess.Popen(
            [RIGD, "--demo", "-c", str(config), "--unix-socket", self.socket,
             "--log-format", "console"], stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rigd exited during start-up:\n{self.log.read_text()}")
            if os.path.exists(self.socket) and subprocess.run(
                    [RIGCTL, "--socket", self.socket, "--timeout", "2", "health"],
                    capture_output=True).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("rigd did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.vtn.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rigd-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None,
                        help="keep rigd running this long after the story (default: until "
                             "Ctrl-C)")
    args = parser.parse_args(argv)
    from agent.core.logs import configure_logging

    configure_logging("warning", "console")
    print("rigd demo: a hybrid rig that mines, serves inference when demand comes, sheds load "
          "when the grid asks, and comes back.")
    demo = Demo()
    try:
        began = time.monotonic()
        demo.wait_ready()
        print(f"\nrigd is up on {demo.socket} ({time.monotonic() - began:.1f} s; its log: "
              f"{demo.log})")
        Story(demo.socket).tell(demo.vtn)
        print(f"\nrigd keeps running: try\n  {RIGCTL} --socket {demo.socket} top\n"
              f"  {RIGCTL} --socket {demo.socket} switch 2 inference")
        if args.seconds is not None:
            time.sleep(args.seconds)
        else:
            print("Press Ctrl-C to stop.")
            demo.proc.wait()
    except KeyboardInterrupt:
        print("\nstopping rigd ...")
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
