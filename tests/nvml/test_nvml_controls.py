"""Controls: power limit, locked clocks, persistence mode; bad input changes nothing."""

from __future__ import annotations

from typing import Any

SimRig = Any  # tests/nvml/conftest.py
GIB = 1 << 30


def test_set_power_limit_reads_back_and_is_shared_and_remembered(rig: SimRig) -> None:
    uuid = rig.control.read().gpus[0].uuid
    result = rig.run("""
        gpu = discover()[0]
        gpu.set_power_limit(450)
        emit(gpu.telemetry().power_limit_w)
    """)
    assert result == 450.0
    # the setting lives in the driver (the state file), so another process sees it
    assert rig.control.read().gpus[0].power_limit_mw == 450_000
    # ...even one with no desired state of its own (so nothing was re-applied)
    other = rig.run("emit(discover()[0].telemetry().power_limit_w)",
                    state_dir=str(rig.directory / "other-agent"))
    assert other == 450.0
    assert rig.desired()[uuid]["power_limit_w"] == 450.0


def test_power_limit_outside_constraints_is_rejected_and_changes_nothing(rig: SimRig) -> None:
    result = rig.run("""
        h100, a100, rtx = discover()
        emit({
            "low": error_of(h100.set_power_limit, 150),
            "high": error_of(h100.set_power_limit, 800),
            "nan": error_of(h100.set_power_limit, float("nan")),
            "text": error_of(h100.set_power_limit, "300"),
            "rtx_high": error_of(rtx.set_power_limit, 650),
            "rtx_ok": error_of(rtx.set_power_limit, 600),
            "after": h100.telemetry().power_limit_w,
        })
    """)
    for key in ("low", "high", "nan", "text"):
        assert result[key]["type"] == "InvalidArgument", key
        assert "200-700 W" in result[key]["message"]
    assert result["rtx_high"]["type"] == "InvalidArgument"
    assert "150-600 W" in result["rtx_high"]["message"]
    assert result["rtx_ok"] is None  # the 4090 may go above its 450 W default
    assert result["after"] == 700.0
    state = rig.control.read()
    assert state.gpus[0].power_limit_mw == 0  # never written
    assert state.gpus[2].power_limit_mw == 600_000
    assert state.gpus[0].uuid not in rig.desired()


def test_lock_and_reset_gpu_clocks(rig: SimRig, workload: Any) -> None:
    proc = workload()
    rig.control.attach_load(0, pid=proc.pid, mem_bytes=GIB, util_pct=60)
    uuid = rig.control.read().gpus[0].uuid
    result = rig.run("""
        gpu = discover()[0]
        free = gpu.telemetry().gpu
        gpu.lock_clocks(1000, 1500)
        locked = gpu.telemetry()
        desired = json.loads(Path(OPTIONS["state_dir"], "nvml-desired.json").read_text())
        gpu.reset_clocks()
        emit({"free": free, "locked": locked, "desired": desired, "reset": gpu.telemetry()})
    """)
    assert result["free"]["clock_sm_mhz"] == 1980
    locked = result["locked"]
    assert 1000 <= locked["gpu"]["clock_sm_mhz"] <= 1500
    assert "applications_clocks_setting" in locked["gpu"]["throttle_reasons"]
    assert result["desired"][uuid]["gpu_clocks_mhz"] == [1000, 1500]
    assert result["reset"]["gpu"]["clock_sm_mhz"] == 1980
    assert rig.control.read().gpus[0].sm_lock_mhz == (0, 0)
    assert uuid not in rig.desired()  # nothing left to re-apply


def test_bad_clock_pairs_are_rejected_and_change_nothing(rig: SimRig) -> None:
    result = rig.run("""
        gpu = discover()[0]
        emit({
            "inverted": error_of(gpu.lock_clocks, 1500, 1000),
            "too_high": error_of(gpu.lock_clocks, 1000, 5000),
            "zero": error_of(gpu.lock_clocks, 0, 1000),
            "float": error_of(gpu.lock_clocks, 1000.5, 1200),
            "mem_inverted": error_of(gpu.lock_memory_clocks, 2000, 1000),
            "persistence": error_of(gpu.set_persistence_mode, "yes"),
        })
    """)
    for key, error in result.items():
        assert error is not None and error["type"] == "InvalidArgument", key
    assert "<= 1980 MHz" in result["inverted"]["message"]
    assert "<= 2619 MHz" in result["mem_inverted"]["message"]
    gpu = rig.control.read().gpus[0]
    assert gpu.sm_lock_mhz == (0, 0) and gpu.mem_lock_mhz == (0, 0) and not gpu.persistence
    assert rig.desired() == {}


def test_memory_clocks_and_persistence_mode(make_rig: Any, workload: Any) -> None:
    rig = make_rig(["rtx-4090"])
    proc = workload()
    rig.control.attach_load(0, pid=proc.pid, mem_bytes=GIB, util_pct=50)
    result = rig.run("""
        gpu = discover()[0]
        before = gpu.telemetry().gpu
        gpu.lock_memory_clocks(5000, 9000)
        gpu.set_persistence_mode(True)
        after = gpu.telemetry().gpu
        gpu.reset_memory_clocks()
        emit({"before": before, "after": after, "reset": gpu.telemetry().gpu})
    """)
    assert result["before"]["clock_mem_mhz"] == 10501
    assert result["before"]["persistence_mode"] is False
    assert result["after"]["clock_mem_mhz"] == 9000
    assert result["after"]["persistence_mode"] is True
    assert result["reset"]["clock_mem_mhz"] == 10501
    state = rig.control.read().gpus[0]
    assert state.persistence and state.mem_lock_mhz == (0, 0)


def test_no_permission_becomes_permission_denied_with_hint(rig: SimRig) -> None:
    rig.control.set_no_permission(True)
    result = rig.run("""
        gpu = discover()[0]
        emit({
            "power": error_of(gpu.set_power_limit, 300),
            "clocks": error_of(gpu.lock_clocks, 1000, 1500),
            "persistence": error_of(gpu.set_persistence_mode, True),
            "telemetry_ok": gpu.telemetry().power_limit_w,
        })
    """)
    for key in ("power", "clocks", "persistence"):
        assert result[key]["type"] == "PermissionDenied", key
        assert "root" in result[key]["message"] and "CAP_SYS_ADMIN" in result[key]["message"]
    assert result["telemetry_ok"] == 700.0
    assert rig.control.read().gpus[0].power_limit_mw == 0
    assert rig.desired() == {}


def test_a_power_cap_holds_the_gpu_below_its_desired_limit_and_never_replaces_it(
    rig: SimRig
) -> None:
    uuid = rig.control.read().gpus[0].uuid
    result = rig.run("""
        gpu = discover()[0]
        gpu.set_power_limit(600)
        gpu.set_power_cap(300)
        capped = gpu.telemetry().power_limit_w
        gpu.set_power_limit(500)                 # the operator changes it under the cap
        still = gpu.telemetry().power_limit_w
        bad = error_of(gpu.set_power_cap, 100)   # below the GPU's range: refused
        gpu.set_power_cap(None)
        emit({"capped": capped, "still": still, "bad": bad,
              "lifted": gpu.telemetry().power_limit_w})
    """)
    assert result["capped"] == 300.0 and result["still"] == 300.0
    assert result["bad"]["type"] == "InvalidArgument" and "200-700 W" in result["bad"]["message"]
    assert result["lifted"] == 500.0, "the operator's latest limit, not the cap, not 600"
    assert rig.desired()[uuid]["power_limit_w"] == 500.0, "the cap is never desired state"


def test_a_cap_is_applied_again_after_a_driver_reload_and_forgotten_by_a_restart(
    rig: SimRig
) -> None:
    result = rig.run("""
        gpu = discover()[0]
        gpu.set_power_limit(600)
        gpu.set_power_cap(250)
        SIM.driver_reload()          # the driver forgets every limit...
        emit(gpu.telemetry().power_limit_w)   # ...and the reading re-applies the lower one
    """)
    assert result == 250.0
    # A new process (an agent restart) knows only the desired state; its owner caps again.
    assert rig.run("emit(discover()[0].telemetry().power_limit_w)") == 600.0
