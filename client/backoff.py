"""Waiting between attempts: exponential with jitter, so that a fleet of clients that lost the
same rig (or a rig that lost its network) does not come back in lockstep."""

from __future__ import annotations

from collections.abc import Callable


class Backoff:
    """first_s, 2x, 4x ... up to max_s; each wait drawn from [cap/2, cap] ("equal jitter": never
    near zero, so a flapping peer is not hammered)."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0, factor: float = 2.0,
                 rng: Callable[[], float] | None = None) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s, got {first_s}, {max_s}")
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        if rng is None:
            import random  # here: a one-call command never waits between attempts

            rng = random.random
        self._rng = rng
        self.attempts = 0

    def next(self) -> float:
        cap = min(self.max_s, self.first_s * self.factor ** self.attempts)
        self.attempts += 1
        return cap / 2 + self._rng() * cap / 2

    def reset(self) -> None:
        self.attempts = 0
