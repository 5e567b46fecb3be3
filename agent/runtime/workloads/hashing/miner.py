"""The hashing workload: one OpenCL device scanning nonces for one JobSource in a background thread.

    workload = HashingWorkload(source, default_cl_device(), intensity=1.0)
    workload.start()          # builds the kernel here, so a bad device fails the caller
    workload.stats().hashrate_hs
    workload.stop(timeout_s=5.0)

Launches are sized to take about `launch_s` seconds (or fixed at 2^batch_log2 nonces), so the
thread notices a stop or a new job generation within one launch. Intensity below 1 yields the
device: after each launch the thread idles so that it computes only that fraction of the time.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

import pyopencl as cl
import structlog

from agent.core.job import Job, JobSource, Share, hash_value
from agent.runtime.workloads.hashing.kernel import NONCE_LIMIT, Sha256dKernel, describe_cl_device
from hal.errors import InvalidArgument

log = structlog.get_logger("rigd.hashing")

_MIN_BATCH = 1 << 16
_MAX_BATCH = 1 << 30
_FIRST_BATCH = 1 << 20  # before any rate is known: a few ms on a CPU, ~1 ms on a GPU


@dataclass(frozen=True, slots=True)
class MinerStats:
    running: bool
    device: str
    vector_width: int
    intensity: float
    hashrate_hs: float  # over the last `window_s` seconds, idle time included
    hashes_done: int
    jobs_started: int
    jobs_abandoned: int  # left unfinished because the source's generation moved on
    shares_found: int  # passed the full-target hashlib check
    shares_submitted: int
    shares_dropped_stale: int  # found, but the job went stale during the launch
    shares_accepted: int  # from source.stats()
    shares_rejected: int
    error: str | None  # why the thread stopped on its own, if it did


class _RateWindow:
    """Hashes over a sliding window of wall time, including idle time (so intensity shows)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._since = time.monotonic()

    def add(self, hashes: int, now: float) -> None:
        self._samples.append((now, hashes))

    def rate(self, now: float) -> float:
        horizon = now - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        span = now - max(horizon, self._since)
        if span <= 0 or not self._samples:
            return 0.0
        return sum(hashes for _, hashes in self._samples) / span

    def reset(self, now: float) -> None:
        self._samples.clear()
        self._since = now


def _check_intensity(intensity: float) -> float:
    if not 0.0 < intensity <= 1.0:
        raise InvalidArgument(f"intensity must be in (0, 1], got {intensity!r}")
    return float(intensity)


class HashingWorkload:
    """Mines `source`'s jobs on one OpenCL device until stopped."""

    def __init__(
        self,
        source: JobSource,
        cl_device: cl.Device,
        *,
        vector_width: int | None = None,
        intensity: float = 1.0,
        launch_s: float = 0.25,
        batch_log2: int | None = None,
        window_s: float = 10.0,
        job_wait_s: float = 0.5,
    ) -> None:
        if not 0.01 <= launch_s <= 10.0:
            raise InvalidArgument(f"launch_s must be in 0.01..10 s, got {launch_s!r}")
        if batch_log2 is not None and not 16 <= batch_log2 <= 30:
            raise InvalidArgument(f"batch_log2 must be in 16..30, got {batch_log2!r}")
        if not window_s > 0:
            raise InvalidArgument(f"window_s must be positive, got {window_s!r}")
        self.source = source
        self.cl_device = cl_device
        self._vector_width = vector_width
        self._intensity = _check_intensity(intensity)
        self._launch_s = launch_s
        self._batch_log2 = batch_log2
        self._job_wait_s = job_wait_s
        self._kernel: Sha256dKernel | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the counters below
        self._window = _RateWindow(window_s)
        self._hashes_done = 0
        self._jobs_started = 0
        self._jobs_abandoned = 0
        self._shares_found = 0
        self._shares_submitted = 0
        self._shares_dropped_stale = 0
        self._error: str | None = None

    # ---- control ----------------------------------------------------------------------------

    def start(self) -> None:
        """Build the kernel (errors raise here) and start mining in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            raise InvalidArgument("the hashing workload is already running")
        if self._kernel is None:
            self._kernel = Sha256dKernel(self.cl_device, vector_width=self._vector_width)
        self._stop.clear()
        self._error = None
        with self._lock:
            self._window.reset(time.monotonic())
        self._thread = threading.Thread(
            target=self._run, name=f"hashing:{self.cl_device.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the thread to stop and wait; True when it has ended. Stopping takes at most
        one launch (about launch_s) or one job wait."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_intensity(self, intensity: float) -> None:
        """Fraction of time the device computes, in (0, 1]; applies from the next launch."""
        self._intensity = _check_intensity(intensity)

    def stats(self) -> MinerStats:
        source_stats = self.source.stats()
        now = time.monotonic()
        with self._lock:
            return MinerStats(
                running=self.running,
                device=describe_cl_device(self.cl_device),
                vector_width=self._kernel.vector_width if self._kernel else 0,
                intensity=self._intensity,
                hashrate_hs=self._window.rate(now) if self.running else 0.0,
                hashes_done=self._hashes_done,
                jobs_started=self._jobs_started,
                jobs_abandoned=self._jobs_abandoned,
                shares_found=self._shares_found,
                shares_submitted=self._shares_submitted,
                shares_dropped_stale=self._shares_dropped_stale,
                shares_accepted=source_stats.accepted,
                shares_rejected=source_stats.rejected,
                error=self._error,
            )

    # ---- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                job = self.source.get_job(self._job_wait_s)
                if job is not None:
                    self._mine(job)
        except Exception as exc:  # a dead thread must say why in stats(), not vanish
            self._error = f"{type(exc).__name__}: {exc}"
            log.error("hashing thread failed", device=self.cl_device.name, error=self._error)

    def _mine(self, job: Job) -> None:
        """Scan the job's nonce space until it is exhausted, stale, or we are stopped."""
        kernel = self._kernel
        assert kernel is not None
        with self._lock:
            self._jobs_started += 1
        nonce = 0
        batch = self._initial_batch()
        while nonce < NONCE_LIMIT and not self._stop.is_set():
            if self.source.generation != job.generation:
                with self._lock:
                    self._jobs_abandoned += 1
                return
            count = min(batch, NONCE_LIMIT - nonce)
            started = time.monotonic()
            found = kernel.scan(job.header, nonce, count, job.target)
            finished = time.monotonic()
            with self._lock:
                self._hashes_done += count
                self._window.add(count, finished)
            nonce += count
            self._submit(job, found)
            batch = self._next_batch(count, finished - started)
            self._idle(finished - started)

    def _submit(self, job: Job, nonces: list[int]) -> None:
        stale = self.source.generation != job.generation
        for nonce in nonces:
            share = Share(job, nonce)
            # scan() already checked the full target; this guard keeps the rule local.
            if hash_value(share.header) > job.target:
                raise AssertionError(f"kernel returned a nonce above target: {nonce}")
            with self._lock:
                self._shares_found += 1
                if stale:
                    self._shares_dropped_stale += 1
                else:
                    self._shares_submitted += 1
            if not stale:
                self.source.submit(share)
                log.debug("share submitted", job_id=job.job_id, nonce=f"{nonce:08x}")

    def _initial_batch(self) -> int:
        if self._batch_log2 is not None:
            return 1 << self._batch_log2
        with self._lock:
            rate = self._window.rate(time.monotonic())
        return self._batch_for_rate(rate) if rate > 0 else _FIRST_BATCH

    def _next_batch(self, count: int, elapsed_s: float) -> int:
        if self._batch_log2 is not None:
            return 1 << self._batch_log2
        return self._batch_for_rate(count / max(elapsed_s, 1e-6))

    def _batch_for_rate(self, rate_hs: float) -> int:
        """The power of two closest below rate * launch_s, so launches stay aligned."""
        wanted = max(_MIN_BATCH, min(_MAX_BATCH, int(rate_hs * self._launch_s)))
        return 1 << (wanted.bit_length() - 1)

    def _idle(self, busy_s: float) -> None:
        intensity = self._intensity
        if intensity < 1.0:
            self._stop.wait(busy_s * (1.0 - intensity) / intensity)
