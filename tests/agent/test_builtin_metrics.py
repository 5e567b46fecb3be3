"""The builtin runtime's /metrics: vLLM's names for requests waiting, running and served, read
with Prometheus' own parser while real requests queue for the real model."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ports import free_port

MODEL = "all-MiniLM-L6-v2"


def samples(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model_name") == MODEL:
                out[s.name] = s.value
    return out


@pytest.fixture(scope="module")
def runtime() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent.runtime.workloads.inference.builtin",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "the runtime exited"
            try:
                if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the runtime did not load its model"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_requests_queue_run_and_count_under_vllm_names(runtime: str) -> None:
    before = samples(runtime)
    assert before["vllm:num_requests_waiting"] == 0 and before["vllm:num_requests_running"] == 0
    served_before = before["vllm:request_success_total"]
    text = " ".join(["a sentence long enough for the encoder to take a while"] * 40)
    clients = 12
    done: list[int] = []

    def one() -> None:
        reply = httpx.post(f"{runtime}/v1/embeddings", json={"input": [text] * 8}, timeout=120,
                           trust_env=False)
        done.append(reply.status_code)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    most_waiting = 0.0
    while any(t.is_alive() for t in threads):
        now = samples(runtime)
        assert now["vllm:num_requests_running"] <= 1, "one request on the model at a time"
        assert now["vllm:num_requests_waiting"] + now["vllm:num_requests_running"] <= clients
        most_waiting = max(most_waiting, now["vllm:num_requests_waiting"])
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert done == [200] * clients
    assert most_waiting >= 1, "concurrent requests wait for the model, and /metrics says so"
    after = samples(runtime)
    assert after["vllm:num_requests_waiting"] == 0 and after["vllm:num_requests_running"] == 0
    assert after["vllm:request_success_total"] == served_before + clients
    assert after["vllm:prompt_tokens_total"] > before["vllm:prompt_tokens_total"]


def test_a_refused_request_is_not_counted_as_served(runtime: str) -> None:
    served = samples(runtime)["vllm:request_success_total"]
    reply = httpx.post(f"{runtime}/v1/embeddings", json={"input": []}, timeout=30,
                       trust_env=False)
    assert reply.status_code == 400
    assert samples(runtime)["vllm:request_success_total"] == served
