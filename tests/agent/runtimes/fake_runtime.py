"""A misbehaving inference runtime for the switch tests: a real process speaking HTTP, whose
faults are the ones real runtimes have.

    python fake_runtime.py --port P [--never-ready] [--ignore-term] [--orphan-holds S]
                           [--term-takes S --done-file PATH]

--never-ready    /health answers 503 forever (a model that never loads)
--ignore-term    SIGTERM is ignored, by this process and by a child it starts (a wedged engine)
--orphan-holds S a grandchild leaves the process group (double fork + setsid), holds simulated
                 GPU memory and exits S seconds after this process dies (vLLM's engine
                 processes outliving their server)
--gpu-load PCT   hold 8 GiB of simulated GPU memory and keep the GPU PCT % busy (it draws power)
--term-takes S   after SIGTERM, S seconds to finish what is in flight, then write "finished" to
                 --done-file and exit 0 (a server draining its requests)
Writes the pids it starts to $FAKE_RUNTIME_PIDS (one per line) so the test can check them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def record_pid(pid: int) -> None:
    path = os.environ.get("FAKE_RUNTIME_PIDS")
    if path:
        with open(path, "a") as f:
            f.write(f"{pid}\n")


def orphan(hold_s: float) -> None:
    """Double fork: the grandchild is in its own session, reparented away from us. Returns
    once it holds its GPU memory."""
    ready_r, ready_w = os.pipe()
    if os.fork():
        os.close(ready_w)
        os.read(ready_r, 1)
        return
    os.setsid()
    if os.fork():
        os._exit(0)
    from hal.sim.nvml import attach_from_env

    attach_from_env(2 << 30, 50)
    record_pid(os.getpid())
    os.write(ready_w, b"x")
    parent = int(os.environ["FAKE_RUNTIME_PARENT"])
    while os.path.exists(f"/proc/{parent}"):  # hold the memory while the server lives...
        time.sleep(0.05)
    time.sleep(hold_s)  # ...and a while after it died
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--orphan-holds", type=float)
    parser.add_argument("--gpu-load", type=int)
    parser.add_argument("--term-takes", type=float)
    parser.add_argument("--done-file")
    args = parser.parse_args()
    record_pid(os.getpid())
    if args.gpu_load is not None:
        from hal.sim.nvml import attach_from_env

        attach_from_env(8 << 30, args.gpu_load)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:  # a child in the same group, as stubborn as its parent
            record_pid(os.getpid())
            while True:
                time.sleep(1)
    if args.term_takes is not None:
        def drain_then_exit() -> None:
            time.sleep(args.term_takes)
            if args.done_file:
                with open(args.done_file, "w") as f:
                    f.write("finished")
            os._exit(0)

        signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(
            target=drain_then_exit, daemon=True).start())
    if args.orphan_holds is not None:
        os.environ["FAKE_RUNTIME_PARENT"] = str(os.getpid())
        orphan(args.orphan_holds)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            status = 503 if args.never_ready else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
