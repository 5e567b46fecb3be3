"""Start a workload program so that it dies with rigd and handles signals as programs expect.

    python -m agent.runtime.workloads.launch RIGD_PID -- PROGRAM [ARGS...]

The supervisor runs this in a new session (its own process group). It asks the kernel to send
SIGTERM when rigd's thread that started it exits (PR_SET_PDEATHSIG), checks that rigd did not
die before that took effect, restores the signal mask and dispositions rigd changed (SIGTERM and
SIGINT blocked, SIGPIPE ignored: both survive exec), drops the ambient capabilities rigd was
given for NVML's setters (deploy/rigd.service: CAP_SYS_ADMIN, which a workload has no use for),
then replaces itself with the program, which keeps the pid, the process group and the
parent-death signal.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
EXIT_PARENT_GONE = 70
EXIT_CANNOT_EXEC = 127


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m agent.runtime.workloads.launch RIGD_PID -- PROGRAM [ARGS...]",
              file=sys.stderr)
        return 2
    parent, program = int(argv[0]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        print(f"launch: prctl failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return EXIT_CANNOT_EXEC
    if os.getppid() != parent:  # rigd died before the parent-death signal was armed
        return EXIT_PARENT_GONE
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        print(f"launch: cannot drop ambient capabilities: {os.strerror(ctypes.get_errno())}",
              file=sys.stderr)
        return EXIT_CANNOT_EXEC
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        os.execvp(program[0], program)
    except OSError as exc:
        print(f"launch: cannot run {program[0]}: {exc.strerror}", file=sys.stderr)
    return EXIT_CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
