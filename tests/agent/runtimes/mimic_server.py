"""Stands in for a real inference server on a machine without a GPU: it takes that server's
own command line and answers its readiness endpoint as the server does while it loads a model.

    python mimic_server.py vllm serve MODEL --host H --port P [...]
    python mimic_server.py llama-server -m MODEL --host H --port P
    python mimic_server.py tritonserver --model-repository M --http-address H --http-port P ...

The port opens at once; the model "loads" for $MIMIC_LOAD_S seconds (default 1), then the time
it finished (time.time()) is written to $MIMIC_LOADED_FILE. Meanwhile, as the real servers do:
vLLM answers /v1/models 200 with an empty list, llama.cpp answers /health 503, Triton answers
/v2/health/ready 400.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED = threading.Event()


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def main() -> None:
    server_kind, argv = sys.argv[1], sys.argv[2:]
    if server_kind == "vllm":
        model, host, port = argv[1], option(argv, "--host"), option(argv, "--port")
    elif server_kind == "llama-server":
        model, host, port = option(argv, "-m"), option(argv, "--host"), option(argv, "--port")
    else:
        model = option(argv, "--model-repository")
        host, port = option(argv, "--http-address"), option(argv, "--http-port")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            loaded = LOADED.is_set()
            if server_kind == "vllm" and self.path == "/v1/models":
                models = [{"id": model, "object": "model"}] if loaded else []
                self.answer(200, {"object": "list", "data": models})
            elif server_kind == "llama-server" and self.path == "/health":
                self.answer(200, {"status": "ok"}) if loaded else \
                    self.answer(503, {"error": {"message": "Loading model"}})
            elif server_kind == "tritonserver" and self.path == "/v2/health/ready":
                self.answer(200 if loaded else 400, {})
            else:
                self.answer(404, {})

        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(float(os.environ.get("MIMIC_LOAD_S", "1")))
    with open(os.environ["MIMIC_LOADED_FILE"], "w") as f:
        f.write(repr(time.time()))
    LOADED.set()
    threading.Event().wait()  # until the process group is signalled


if __name__ == "__main__":
    main()
