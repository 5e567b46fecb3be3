"""The story `make demo` tells, as one test: the demo rig mines, two GPUs switch to the builtin
runtime and answer a real embedding request, a utility's OpenADR event curtails the rig below
its target while inference keeps serving, and the end of the event brings every device back.
Every step is asserted; nothing is left running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from agent.demo.story import GRID_FRACTION, STEPS, Demo, Story
from tests.agent.test_readme import readme_timeline


def _shape(line: str) -> str:
    """A timeline line without what changes from run to run: numbers and alignment."""
    return " ".join(re.sub(r"\d+", "#", line).split())


def test_the_hybrid_rig_story() -> None:
    lines: list[str] = []
    demo = Demo()
    try:
        demo.wait_ready()
        try:
            facts = Story(demo.socket, out=lines.append).tell(demo.vtn)
        except RuntimeError as error:
            log = demo.log.read_text().splitlines()[-80:]
            raise AssertionError("\n".join([str(error), "the story so far:", *lines,
                                             "rigd's log, last lines:", *log])) from error
        rigd_pid = demo.proc.pid
        workers = [p for p in psutil.Process(rigd_pid).children(recursive=True)]
    finally:
        demo.stop()

    # 1. the rig: the host, four simulated GPUs, four simulated miners at least
    assert facts.devices >= 9 and len(facts.gpus) == 4
    # 2. everything mines, for the local pool
    assert facts.mining_hs > 1e14 and facts.shares_accepted > 0
    # 3. two GPUs switched; their runtime embeds related sentences closer than unrelated ones
    assert facts.switch_state == "succeeded" and facts.endpoint.startswith("http://127.0.0.1:")
    assert facts.similarity_related > facts.similarity_unrelated + 0.3
    # 4. the grid event: confirmed below target before its deadline, by the VEN, opted in;
    #    miners shed, inference still serving
    c = facts.curtailment
    assert c["source"] == "openadr:grid-1" and c["state"] == "confirmed"
    assert c["below_target_after_s"] < 60
    assert facts.target_w == round(facts.rig_before_w * GRID_FRACTION)
    assert facts.rig_curtailed_w <= facts.target_w
    assert not all(facts.asics_mining_curtailed), "miners asleep or turned down"
    assert facts.serving_while_curtailed and facts.opted == "optIn"
    # 5. the event's end: every device exactly as before
    assert facts.restored_equal
    # the timeline said each step with its latency, and README.md's capture of it is true:
    # its step headers and commands are the ones printed, in order (numbers aside)
    assert [title for title, _ in facts.steps] == list(STEPS)
    assert sum("... " in line and line.strip().endswith(" s") for line in lines) == len(STEPS)
    printed = [_shape(line) for text in lines for line in text.splitlines()]
    miners = [line for line in printed if " asic " in line and "Antminer" in line]
    assert miners and all(" firmware healthy" in line for line in miners), \
        "the inventory says a miner runs its own firmware, not that it is idle"
    shown = [_shape(line) for line in readme_timeline() if line.startswith(("[t+", "$ "))]
    position = 0
    for line in shown:
        assert line in printed[position:], f"README's timeline shows what the demo does not: {line}"
        position = printed.index(line, position) + 1
    # nothing outlives the demo
    assert workers and not any(psutil.pid_exists(p.pid) and p.status() != psutil.STATUS_ZOMBIE
                               for p in workers)
    assert not demo.tmp.exists()


def test_ctrl_c_in_the_middle_of_a_switch_leaves_nothing_behind() -> None:
    """Ctrl-C reaches the demo's whole process group, as a terminal sends it."""
    tmp_path = Path(tempfile.mkdtemp(prefix="e2e-"))  # short: socket paths have a limit
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "agent.demo.story"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "$ rigctl switch 0 1 inference" in line:
                break  # the switch has begun: its runtimes are starting
        assert seen and "rigctl switch" in seen[-1], "".join(seen)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert any("agent.runtime.workloads" in " ".join(p.cmdline()) for p in descendants
                   if p.is_running())
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, "".join(seen) + rest
    assert "stopping rigd" in rest
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [p.cmdline() for p in alive]
    assert not list(tmp_path.iterdir()), "the demo's temporary directories are gone"
    tmp_path.rmdir()
