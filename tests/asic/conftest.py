"""Fixtures for the ASIC backend tests: capture paths and simulated fleets on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.sim.asic import SimFleet

CAPTURES = Path(__file__).with_name("data") / "captures"
# Warm-up after wake, kept short so round trips stay fast.
WARMUP_S = 0.3


@pytest.fixture
def fleet_factory() -> Iterator[object]:
    """Start fleets of given families; every fleet is stopped at teardown."""
    started: list[SimFleet] = []

    def start(families: list[str], **kwargs: object) -> SimFleet:
        fleet = SimFleet.of(families, **{"warmup_s": WARMUP_S, **kwargs}).start()
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()
