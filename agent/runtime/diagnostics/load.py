"""Level 3: known answers from real work, each in a child process rigd can end.

- hashing_kernel: the SHA-256d kernel, built afresh on the device's OpenCL facet, must find the
  genesis block's nonce (agent/runtime/workloads/hashing/probe.py, run without its cache).
- inference: a runtime must return embeddings of the right dimension, in which two sentences
  that mean the same are closer than an unrelated one. A device already serving is asked at its
  own endpoint (one small request, as any client makes); any other device gets the builtin
  runtime in its own process group, on that device, ended afterwards.
- hashrate_sustained: a miner read a few times over seconds keeps mining near its expected
  hashrate (rigd runs no kernel on a miner: its firmware hashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from agent.config.profiles import RuntimeProfile
from agent.core.job import GENESIS_NONCE
from agent.runtime.diagnostics.checks import HASHRATE_FAIL, HASHRATE_WARN, Result, Verdict, si
from agent.runtime.workloads import WorkloadError
from agent.runtime.workloads.hashing.probe import probe
from agent.runtime.workloads.inference.runtime import RuntimeProcess
from hal.device import Device
from rigapi.model import InferenceSpec, Reading

# Two sentences that mean the same, and one that does not: any embedding model worth serving
# puts the first two closer together.
RELATED = ("The GPU mines bitcoin when inference demand is low.",
           "When few inference requests arrive, the graphics card switches to crypto mining.")
UNRELATED = "Preheat the oven to 200 degrees and bake the bread for forty minutes."
MIN_MARGIN = 0.1  # cosine(related) - cosine(unrelated)
DIMENSIONS = {"all-MiniLM-L6-v2": 384}  # known models: the dimension they must return
EMBED_TIMEOUT_S = 60.0
SUSTAIN_READS = 3
SUSTAIN_SPACING_S = 1.0


async def hashing_kernel(facet: Device) -> Verdict:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rigd-diag-") as empty_cache:
        reason = await probe(facet, Path(empty_cache))
    if reason:
        return Result.FAIL, f"on {facet.id}: {reason}"
    return Result.PASS, (f"built on {facet.id} and found the genesis nonce {GENESIS_NONCE} "
                         f"in {time.monotonic() - started:.1f} s")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def embeddings(endpoint: str, model: str = "") -> Verdict:
    """POST /v1/embeddings (OpenAI's API) and judge the vectors."""
    body: dict[str, object] = {"input": [*RELATED, UNRELATED]}
    if model:
        body["model"] = model
    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            reply = await client.post(f"{endpoint}/v1/embeddings", json=body,
                                      timeout=EMBED_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return Result.FAIL, f"{endpoint}/v1/embeddings: {exc or type(exc).__name__}"
    if reply.status_code in (404, 405, 501) or (
            reply.status_code == 400 and "not support" in reply.text.lower()):
        # A generative model's server: embeddings are not what it serves.
        return Result.SKIP, (f"{endpoint} serves no embeddings (HTTP {reply.status_code}); "
                             f"its readiness probe is what rigd watches")
    if reply.status_code != 200:
        return Result.FAIL, f"/v1/embeddings answered {reply.status_code}: {reply.text[:200]}"
    try:
        data = sorted(reply.json()["data"], key=lambda d: d["index"])
        vectors = [[float(x) for x in d["embedding"]] for d in data]
    except (ValueError, KeyError, TypeError):
        return Result.FAIL, "/v1/embeddings did not answer OpenAI's embeddings response"
    dims = {len(v) for v in vectors}
    if len(vectors) != 3 or len(dims) != 1 or 0 in dims:
        return Result.FAIL, f"{len(vectors)} vectors of dimensions {sorted(dims)} for 3 inputs"
    (dim,) = dims
    expected = DIMENSIONS.get(model or str(reply.json().get("model", "")))
    if expected is not None and dim != expected:
        return Result.FAIL, f"{dim}-dimensional embeddings where the model gives {expected}"
    if not all(math.isfinite(x) for v in vectors for x in v):
        return Result.FAIL, "embeddings hold NaN or infinity"
    related, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    text = f"{dim}-dim embeddings; similar sentences {related:.2f}, unrelated {unrelated:.2f}"
    if related - unrelated < MIN_MARGIN:
        return Result.FAIL, f"{text}: the model does not tell them apart"
    return Result.PASS, text


async def builtin_runtime(device_id: str, profile: RuntimeProfile, env: dict[str, str]
                          ) -> Verdict:
    """The builtin runtime started on the device in its own process group, asked, ended."""
    runtime = RuntimeProcess(device_id, InferenceSpec("builtin"), profile, env)
    started = time.monotonic()
    try:
        await runtime.start()
        await runtime.wait_ready()
        ready_s = time.monotonic() - started
        result, detail = await embeddings(runtime.endpoint, runtime.model)
        pid = runtime.process.pid if runtime.process else "?"
        return result, f"{detail} (builtin runtime pid {pid}, ready in {ready_s:.1f} s)"
    except WorkloadError as exc:
        return Result.FAIL, f"builtin runtime: {exc}"
    finally:
        # Even when the run is cancelled (the caller went away): shielded, the group ends.
        with contextlib.suppress(asyncio.CancelledError, WorkloadError):
            await asyncio.shield(runtime.stop())


async def sustained_hashrate(read: Callable[[], Awaitable[Reading]]) -> Verdict:
    rates: list[float] = []
    expected = None
    for n in range(SUSTAIN_READS):
        if n:
            await asyncio.sleep(SUSTAIN_SPACING_S)
        reading = await read()
        t = reading.telemetry
        if reading.error:
            return Result.FAIL, f"read {n + 1}: {reading.error}"
        if t.asic is None or t.asic.is_mining is False or t.hashrate_hs is None:
            return Result.FAIL, f"read {n + 1}: not mining"
        rates.append(t.hashrate_hs)
        expected = t.asic.expected_hashrate_hs or expected
    mean = sum(rates) / len(rates)
    text = (f"{si(mean, 'H/s')} mean of {SUSTAIN_READS} reads over "
            f"{SUSTAIN_SPACING_S * (SUSTAIN_READS - 1):g} s")
    if not expected:
        return Result.PASS, text
    ratio = mean / expected
    text += f", {ratio:.0%} of expected"
    if ratio < HASHRATE_FAIL:
        return Result.FAIL, text
    return (Result.WARN if ratio < HASHRATE_WARN else Result.PASS), text
