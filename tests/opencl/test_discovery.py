"""Discovery of real PoCL platforms through pyopencl, as hal Devices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyopencl as cl
import pytest

import hal
from hal import opencl
from hal.device import Capability, DeviceKind
from hal.errors import InvalidArgument

REPO = Path(__file__).resolve().parents[2]


def cards() -> list[opencl.FpgaCard]:
    devices = opencl.discover({"fpga_device_types": ["cpu"]})
    return [d for d in devices if isinstance(d, opencl.FpgaCard)]


def _all_cl_devices() -> list[tuple[str, str]]:
    """What the ICD loader itself lists: (platform version, device name) pairs."""
    return [(p.version, d.name) for p in cl.get_platforms() for d in p.get_devices()]


def test_every_opencl_device_becomes_one_hal_device() -> None:
    devices = opencl.discover({})
    listed = _all_cl_devices()
    assert listed, "PoCL is expected on the test machines"
    assert len(devices) == len(listed)
    found = sorted((d.cl_device.platform.version, d.cl_device.name) for d in devices)
    assert found == sorted(listed)
    for device in devices:
        assert isinstance(device, opencl.OpenClDevice)
        assert not isinstance(device, opencl.FpgaCard)  # PoCL has no accelerator
        assert device.kind is DeviceKind.OPENCL
        assert device.id.startswith("opencl/")
        assert device.compute_facet is device  # it runs kernels itself
        # Whether the hashing kernel builds there is the agent's to find out (a probe):
        # the HAL advertises nothing it has not seen work.
        assert Capability.HASHING not in device.capabilities


def test_side_by_side_pocl_platforms_get_distinct_ids() -> None:
    devices = opencl.discover({})
    ids = [d.id for d in devices]
    assert len(set(ids)) == len(ids)
    slugs = {d.info().attributes["platform_slug"] for d in devices}
    assert len(slugs) == len({p.version for p in cl.get_platforms()})
    for device in devices:
        slug = device.info().attributes["platform_slug"]
        assert device.id == f"opencl/{slug}/{device.info().attributes['device_index']}"


def test_platform_slug_names_the_runtime_and_its_version() -> None:
    debian = "OpenCL 3.0 PoCL 3.1+debian  Linux, None+Asserts, RELOC, SPIR, LLVM 15.0.6, SLEEF"
    pypi = "OpenCL 3.0 PoCL 3.0-rc2  Linux, Release, RELOC, LLVM 14.0.6, SLEEF, DISTRO"
    assert opencl.platform_slug("Portable Computing Language", debian) == "pocl-3-1-debian"
    assert opencl.platform_slug("Portable Computing Language", pypi) == "pocl-3-0-rc2"
    assert opencl.platform_slug("NVIDIA CUDA", "OpenCL 3.0 CUDA 12.4.131") == "cuda-12-4-131"
    assert opencl.platform_slug("Odd Vendor", "OpenCL 1.2") == "odd-vendor"


def test_device_info_carries_what_a_miner_needs() -> None:
    for device in opencl.discover({}):
        dev = device.cl_device
        assert isinstance(dev, cl.Device)
        info = device.info()
        attrs = info.attributes
        assert info.id == device.id and info.kind is DeviceKind.OPENCL
        assert info.name == dev.name.strip() and info.vendor == dev.vendor.strip()
        assert info.driver_version == dev.driver_version != ""
        assert attrs["device_type"] == "cpu"
        assert int(attrs["compute_units"]) == dev.max_compute_units >= 1
        assert int(attrs["max_clock_mhz"]) == dev.max_clock_frequency
        assert int(attrs["global_mem_bytes"]) == dev.global_mem_size > 0
        assert int(attrs["local_mem_bytes"]) == dev.local_mem_size > 0
        assert int(attrs["preferred_vector_width_int"]) == dev.preferred_vector_width_int >= 1
        assert attrs["opencl_version"].startswith("OpenCL ")
        assert attrs["opencl_c_version"].startswith("OpenCL C ")
        assert attrs["platform_version"] == dev.platform.version
        assert info.pci_bus_id == ""  # PoCL's CPU device has no PCI address
        telemetry = device.telemetry()
        assert telemetry.device_id == device.id and telemetry.health.ok
        assert telemetry.power_w is None and telemetry.temp_c is None  # absent, not zero


def test_ids_are_stable_across_discoveries() -> None:
    first = {d.id: (d.cl_device.platform.version, d.cl_device.name) for d in opencl.discover({})}
    second = {d.id: (d.cl_device.platform.version, d.cl_device.name) for d in opencl.discover({})}
    assert first == second


def test_ids_are_stable_across_processes() -> None:
    code = "from hal import opencl; print(' '.join(sorted(d.id for d in opencl.discover({}))))"
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True, timeout=60).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == runs[1] == sorted(d.id for d in opencl.discover({}))


def test_fpga_device_types_cpu_turns_pocl_into_fpga_cards() -> None:
    found = cards()
    assert len(found) == len(_all_cl_devices())
    for card in found:
        assert card.kind is DeviceKind.FPGA
        assert card.id.startswith("fpga/") and card.id.count("/") == 2
        assert Capability.PROGRAM_BITSTREAM in card.capabilities
        assert card.compute_facet is None  # a card runs its bitstream, not the OpenCL kernel
        info = card.info()
        assert info.kind is DeviceKind.FPGA
        assert info.simulated  # a CPU standing in for a card says so
        assert info.attributes["bitstream_name"] == ""
        assert card.loaded is None
    # Same physical device, same suffix, whichever role it plays.
    plain = sorted(d.id.removeprefix("opencl/") for d in opencl.discover({}))
    assert sorted(c.id.removeprefix("fpga/") for c in found) == plain


def test_default_fpga_device_types_is_accelerator() -> None:
    assert opencl.parse_options({}).fpga_device_types == ("accelerator",)
    assert not [d for d in opencl.discover({}) if d.kind is DeviceKind.FPGA]


def test_platform_filter_selects_platforms() -> None:
    devices = opencl.discover({})
    slug = devices[0].info().attributes["platform_slug"]
    filtered = opencl.discover({"platforms": [slug]})
    assert filtered and all(d.info().attributes["platform_slug"] == slug for d in filtered)
    assert opencl.discover({"platforms": ["no-such-platform"]}) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fpga_types": ["cpu"]}, "unknown option"),
        ({"fpga_device_types": "cpu"}, "must be a list"),
        ({"fpga_device_types": ["fpga"]}, "not in"),
        ({"platforms": "pocl"}, "platforms must be"),
        ({"bitstream_dir": 42}, "must be a path"),
        ({"state_dir": __file__}, "not a directory"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        opencl.discover(options)


def test_registry_runs_the_backend_and_propagates_bad_options() -> None:
    result = hal.discover(["opencl"], {"opencl": {"fpga_device_types": ["cpu"]}})
    (status,) = result.backends
    assert status.available and status.device_count == len(_all_cl_devices())
    assert all(d.kind is DeviceKind.FPGA for d in result.devices)
    with pytest.raises(InvalidArgument):
        hal.discover(["opencl"], {"opencl": {"bogus": 1}})


def _run_discover_in_child(env: dict[str, str], prelude: str = "") -> str:
    code = (
        f"{prelude}\nimport hal\nresult = hal.discover(['opencl'])\n"
        "print(result.backends[0].available, result.backends[0].reason)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return proc.stdout.strip()


def test_missing_icd_reports_unavailable(tmp_path: os.PathLike[str]) -> None:
    no_vendors = str(Path(tmp_path) / "no-vendors")
    out = _run_discover_in_child({**os.environ, "OCL_ICD_VENDORS": no_vendors})
    assert out.startswith("False no OpenCL platform")


def test_missing_pyopencl_reports_unavailable() -> None:
    out = _run_discover_in_child(dict(os.environ), "import sys; sys.modules['pyopencl'] = None")
    assert out.startswith("False pyopencl is not installed")


def test_pci_bus_id_helpers_match_nvml_and_lspci_forms() -> None:
    assert opencl.normalize_pci_bus_id("00000000:01:00.0") == "0000:01:00.0"
    assert opencl.normalize_pci_bus_id("0000:3B:00.1") == "0000:3b:00.1"
    assert opencl.normalize_pci_bus_id("65:00.0") == "0000:65:00.0"
    assert opencl.format_bdf(1, 0xB3, 0, 1) == "0001:b3:00.1"
    # CL_DEVICE_PCI_SLOT_ID_NV packs the device number above the function bits.
    assert opencl.bdf_from_nv_slot(0, 0x41, (3 << 3) | 2) == "0000:41:03.2"
    with pytest.raises(InvalidArgument):
        opencl.normalize_pci_bus_id("gpu0")


def test_raw_pci_query_goes_to_the_driver_and_pocl_declines() -> None:
    device = opencl.discover({})[0]
    # The real clGetDeviceInfo through the ICD loader: PoCL has no cl_khr_pci_bus_info.
    assert opencl._raw_device_info(device.cl_device, 0x410F, 16) is None
    # A query every driver answers comes back through the same path (CL_DEVICE_VENDOR_ID).
    raw = opencl._raw_device_info(device.cl_device, 0x1001, 4)
    assert raw is not None and int.from_bytes(raw, "little") == device.cl_device.vendor_id
