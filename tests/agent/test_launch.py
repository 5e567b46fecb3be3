"""The workload launcher, run as rigd runs under its systemd unit: with CAP_SYS_ADMIN as an
ambient capability (for NVML's setters), which a non-root rigd's children would inherit."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from agent.runtime.workloads.launch import EXIT_PARENT_GONE

SHOW_CAPS = ("import re; "
             "print(re.findall(r'Cap(?:Eff|Amb):\\s*(\\w+)', open('/proc/self/status').read()))")
CAP_SYS_ADMIN = 1 << 21


def with_ambient_cap(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """argv with CAP_SYS_ADMIN in its ambient set, as deploy/rigd.service starts rigd."""
    setpriv = ["setpriv", "--inh-caps", "+sys_admin", "--ambient-caps", "+sys_admin"]
    return subprocess.run([*setpriv, *argv], capture_output=True, text=True, timeout=60)


def caps(stdout: str) -> tuple[int, int]:
    effective, ambient = (int(v, 16) for v in re.findall(r"'(\w+)'", stdout))
    return effective, ambient


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="setpriv needs CAP_SETPCAP to give a "
                                "process an ambient capability")


@needs_root
def test_a_workload_does_not_inherit_rigds_ambient_capabilities() -> None:
    rigd_like = with_ambient_cap([sys.executable, "-c", SHOW_CAPS])
    assert rigd_like.returncode == 0, rigd_like.stderr
    assert caps(rigd_like.stdout)[1] == CAP_SYS_ADMIN, "the set-up gives rigd the capability"

    # rigd's stand-in (the process setpriv execs into) starts the launcher as its child, as the
    # supervisor does, so that the launcher's parent-pid check holds.
    wrapper = ("import os, sys; pid = os.fork()\n"
               "if pid == 0:\n"
               "    os.execv(sys.executable, [sys.executable, '-m', "
               "'agent.runtime.workloads.launch', "
               "str(os.getppid()), '--', sys.executable, '-c', sys.argv[1]])\n"
               "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
    workload = with_ambient_cap([sys.executable, "-c", wrapper, SHOW_CAPS])
    assert workload.returncode == 0, workload.stderr
    # Ambient capabilities are what a non-root process passes on through exec; with none, a
    # workload of user rigd runs with no capability at all.
    assert caps(workload.stdout)[1] == 0, workload.stdout


def test_a_launch_whose_rigd_is_already_gone_does_not_run_the_program() -> None:
    # A parent pid that is not ours stands for a rigd that died before the launcher armed the
    # parent-death signal: the program must not start, orphaned.
    proc = subprocess.run([sys.executable, "-m", "agent.runtime.workloads.launch", "1", "--",
                           sys.executable, "-c", "print('ran')"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_PARENT_GONE and "ran" not in proc.stdout


def test_a_bad_command_line_is_refused() -> None:
    proc = subprocess.run([sys.executable, "-m", "agent.runtime.workloads.launch", "123", "python"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
