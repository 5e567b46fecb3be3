"""Fixtures for the OpenCL backend: real PoCL devices, real program binaries as bitstreams.

PoCL's CPU device cannot enumerate as an accelerator, so `fpga_device_types=["cpu"]` makes it
count as an FPGA card. Bitstreams are built once per session on the first PoCL platform that
can compile the kernel (on some CPUs the PyPI PoCL 3.0 cannot: "unknown target CPU 'generic'"),
then copied into each test's own bitstream directory so a test may damage its copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hal import opencl
from hal.bitstream import DEFAULT_KERNEL_SOURCE, build_bitstream
from hal.errors import HalError

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Built:
    card_id: str  # the card the bitstreams were built for
    other_card_ids: tuple[str, ...]  # cards on other PoCL platforms (other "boards")
    directory: Path  # sha256d-search.bin/.json, null-search.*, lying-search.*


def cards(**options: object) -> list[opencl.FpgaCard]:
    devices = opencl.discover({"fpga_device_types": ["cpu"], **options})
    return [d for d in devices if isinstance(d, opencl.FpgaCard)]


@pytest.fixture(scope="session")
def fpga_cards() -> Callable[..., list[opencl.FpgaCard]]:
    """discover() with fpga_device_types=["cpu"] plus the given options; returns the cards."""
    return cards


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("bitstreams")
    failures = []
    all_cards = cards()
    for card in all_cards:
        try:
            build_bitstream(card, out, source_path=DEFAULT_KERNEL_SOURCE, name="sha256d-search")
        except HalError as exc:
            failures.append(f"{card.id}: {exc}")
            continue
        except Exception as exc:  # pyopencl build failure on this platform
            failures.append(f"{card.id}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        build_bitstream(card, out, source_path=DATA / "null_search.cl", name="null-search")
        build_bitstream(card, out, source_path=DATA / "lying_search.cl", name="lying-search")
        others = tuple(c.id for c in all_cards if c.id != card.id)
        return Built(card.id, others, out)
    pytest.fail(f"no PoCL device could build the search kernel: {failures}")


@dataclass
class Rig:
    """One test's bitstream directory and card state directory."""

    bitstream_dir: Path
    state_dir: Path
    card_id: str

    def card(self, card_id: str | None = None) -> opencl.FpgaCard:
        """A freshly discovered card, as a new process would see it."""
        wanted = card_id or self.card_id
        found = [
            c for c in cards(bitstream_dir=self.bitstream_dir, state_dir=self.state_dir)
            if c.id == wanted
        ]
        assert found, f"card {wanted} not discovered"
        return found[0]


@pytest.fixture
def rig(built: Built, tmp_path: Path) -> Rig:
    bitstream_dir = tmp_path / "bitstreams"
    shutil.copytree(built.directory, bitstream_dir)
    return Rig(bitstream_dir, tmp_path / "state", built.card_id)
