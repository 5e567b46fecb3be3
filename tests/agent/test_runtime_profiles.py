"""The shipped vllm, llama.cpp and triton profiles, run as written (their argv, their readiness
rule) against stand-ins that take the real servers' command lines and answer as they do while a
model loads: rigd must not call a runtime ready before its model is loaded."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent.config.profiles import resolve
from agent.runtime.workloads.inference.runtime import RuntimeProcess
from rigapi.model import InferenceSpec

MIMIC = Path(__file__).with_name("runtimes") / "mimic_server.py"
LOAD_S = 1.5


@pytest.mark.parametrize(("profile_name", "program", "model", "loading"), [
    ("vllm", "vllm", "Qwen/Qwen3-0.6B", "/v1/models does not list 'Qwen/Qwen3-0.6B' yet"),
    ("llama.cpp", "llama-server", "/models/q4.gguf", "/health answers 503"),
    ("triton", "tritonserver", "/models/repository", "/v2/health/ready answers 400"),
])
def test_a_shipped_profile_is_ready_only_once_its_model_has_loaded(
        tmp_path: Path, profile_name: str, program: str, model: str, loading: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / program
    stand_in.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{MIMIC}" {program} "$@"\n')
    stand_in.chmod(0o755)
    loaded_file = tmp_path / "loaded"
    profile = resolve({profile_name: {"model": model}})[profile_name]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MIMIC_LOAD_S": str(LOAD_S),
           "MIMIC_LOADED_FILE": str(loaded_file)}

    async def run() -> tuple[list[str], float]:
        runtime = RuntimeProcess("gpu/test", InferenceSpec(profile=profile_name), profile, env)
        await runtime.start()
        try:
            seen: list[str] = []
            async with httpx.AsyncClient(trust_env=False) as client:
                while not loaded_file.exists():  # what the probe sees while the model loads
                    seen.append(await runtime._probe(client))
                    await asyncio.sleep(0.05)
            await runtime.wait_ready(timeout_s=60)
            return seen, time.time()
        finally:
            await runtime.stop()

    seen, ready_at = asyncio.run(run())
    assert loading in seen, seen  # the port was open and the rule still said "not yet"
    assert ready_at >= float(loaded_file.read_text())
