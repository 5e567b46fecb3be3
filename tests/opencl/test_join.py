"""One device per card: a GPU and its OpenCL view are joined into one device."""

from __future__ import annotations

from pathlib import Path

import pytest

from hal.device import Device, DeviceInfo, DeviceKind, Telemetry
from hal.opencl import discover as opencl_discover
from hal.registry import discover, join_compute_facets
from hal.sim.nvml import demo_setup


class Card(Device):
    """A device with a PCI address, as a backend would report it."""

    def __init__(self, device_id: str, kind: DeviceKind, bus_id: str) -> None:
        self.id, self.kind, self._bus = device_id, kind, bus_id
        if kind == DeviceKind.OPENCL:
            self.compute_facet = self

    def info(self) -> DeviceInfo:
        return DeviceInfo(self.id, self.kind, self.id, pci_bus_id=self._bus)

    def telemetry(self) -> Telemetry:
        return Telemetry(self.id, self.kind)


def test_the_same_pci_bus_id_is_one_card() -> None:
    gpu = Card("gpu/GPU-1", DeviceKind.GPU, "00000000:3B:00.0")  # NVML's form
    twin = Card("opencl/0000:3b:00.0", DeviceKind.OPENCL, "0000:3b:00.0")
    other = Card("opencl/0000:5e:00.0", DeviceKind.OPENCL, "0000:5e:00.0")
    joined = join_compute_facets([gpu, twin, other])
    assert [d.id for d in joined] == ["gpu/GPU-1", "opencl/0000:5e:00.0"]
    assert gpu.compute_facet is twin


def test_a_named_facet_joins_a_simulated_gpu_with_the_cpu_opencl_device(tmp_path: Path) -> None:
    cl_ids = [d.id for d in opencl_discover({})]
    assert cl_ids, "PoCL is expected on the test machines"
    options = demo_setup(tmp_path / "nvml", count=2)
    plain = discover(["nvml", "opencl"], {"nvml": options})
    gpus = [d for d in plain.devices if d.kind == DeviceKind.GPU]
    assert all(g.compute_facet is None for g in gpus), "no twin: nothing joined"
    plain.close()
    joined = discover(["nvml", "opencl"], {"nvml": options},
                      compute_facets={gpus[0].id: cl_ids[0]})
    try:
        by_id = joined.by_id()
        assert cl_ids[0] not in by_id, "the facet is part of the card now"
        assert by_id[gpus[0].id].compute_facet.id == cl_ids[0]  # type: ignore[union-attr]
        assert by_id[gpus[1].id].compute_facet is None
    finally:
        joined.close()


@pytest.mark.parametrize("missing", ["gpu/GPU-nope", "opencl/nope/0"])
def test_a_named_facet_that_is_not_there_joins_nothing(missing: str) -> None:
    gpu = Card("gpu/GPU-1", DeviceKind.GPU, "")
    cl = Card("opencl/pocl/0", DeviceKind.OPENCL, "")
    named = {missing: cl.id} if missing.startswith("gpu/") else {gpu.id: missing}
    assert [d.id for d in join_compute_facets([gpu, cl], named)] == [gpu.id, cl.id]
    assert gpu.compute_facet is None
