"""Discovery: loading the library, options, the missing-library path, watcher lifetime."""

from __future__ import annotations

from typing import Any

SimRig = Any  # tests/nvml/conftest.py


def test_missing_library_is_unavailable(rig: SimRig) -> None:
    result = rig.run("""
        from hal import discover as hal_discover
        missing = error_of(nvml.discover, {"library_path": "/nonexistent/libnvidia-ml.so.1"})
        # no library_path and no driver on this machine: pynvml's own dlopen fails
        default = error_of(nvml.discover, {})
        status = hal_discover(["nvml"]).backends[0]
        emit({"missing": missing, "default": default,
              "status": [status.available, status.reason]})
    """, env={"LD_LIBRARY_PATH": ""})
    assert result["missing"]["type"] == "Unavailable"
    assert result["missing"]["message"].startswith("libnvidia-ml.so.1 not found:")
    assert "/nonexistent/libnvidia-ml.so.1" in result["missing"]["message"]
    assert result["default"]["type"] == "Unavailable"
    assert "libnvidia-ml.so.1 not found" in result["default"]["message"]
    assert result["status"][0] is False and "libnvidia-ml.so.1" in result["status"][1]


def test_driver_without_state_is_unavailable(rig: SimRig) -> None:
    result = rig.run("""
        emit(error_of(nvml.discover, {"library_path": OPTIONS["library_path"],
                                      "sim_state_path": "/nonexistent/state"}))
    """)
    assert result["type"] == "Unavailable"
    assert "Driver Not Loaded" in result["message"]


def test_library_found_through_ld_library_path(rig: SimRig) -> None:
    """The ordinary deployment: pynvml dlopens libnvidia-ml.so.1 by name."""
    result = rig.run("""
        devices = nvml.discover({"sim_state_path": OPTIONS["sim_state_path"]})
        emit([d.info().name for d in devices])
    """, env={"LD_LIBRARY_PATH": str(rig.library.parent)})
    assert result == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4090"]


def test_bad_options_and_unknown_gpu_ids_are_invalid(rig: SimRig) -> None:
    uuids = [gpu.uuid for gpu in rig.control.read().gpus]
    result = rig.run(f"""
        emit({{
            "unknown_option": error_of(discover, **{{"colour": "green"}}),
            "bad_poll": error_of(discover, **{{"xid_poll_ms": 0}}),
            "bad_devices": error_of(discover, **{{"devices": "gpu/x"}}),
            "unknown_gpu": error_of(discover, **{{"devices": ["gpu/GPU-nope"]}}),
            "chosen": [d.id for d in discover(devices=["gpu/{uuids[2]}", "{uuids[0]}"])],
        }})
    """)
    for key in ("unknown_option", "bad_poll", "bad_devices", "unknown_gpu"):
        assert result[key]["type"] == "InvalidArgument", key
    assert "colour" in result["unknown_option"]["message"]
    assert "gpu/GPU-nope" in result["unknown_gpu"]["message"]
    assert f"gpu/{uuids[1]}" in result["unknown_gpu"]["message"]  # lists what is present
    assert result["chosen"] == [f"gpu/{uuids[0]}", f"gpu/{uuids[2]}"]


def test_close_stops_the_xid_watcher(rig: SimRig) -> None:
    result = rig.run("""
        import threading
        def watchers():
            return [t.name for t in threading.enumerate() if t.name == "nvml-xid-watcher"]
        devices = discover()
        running = watchers()
        devices[0].close()
        devices[0].close()  # twice is fine
        still = watchers()
        for d in devices[1:]:
            d.close()
        emit({"running": running, "still": still, "after": watchers()})
    """)
    assert result["running"] == ["nvml-xid-watcher"]
    assert result["still"] == ["nvml-xid-watcher"]  # other GPUs are still watched
    assert result["after"] == []


def test_gpu_lost_at_startup_is_skipped_not_invented(rig: SimRig) -> None:
    rig.control.set_lost(1, True)
    result = rig.run("emit([d.info().name for d in discover()])")
    assert result == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"]
