"""Faults: a lost GPU, XID events, a driver reload, an agent restart."""

from __future__ import annotations

from typing import Any

SimRig = Any  # tests/nvml/conftest.py


def test_lost_gpu_is_unhealthy_others_keep_streaming_then_it_recovers(rig: SimRig) -> None:
    result = rig.run("""
        devices = discover()
        lost_gpu = devices[0]
        SIM.set_lost(0, True)
        during = [d.telemetry() for d in devices]
        control_error = error_of(lost_gpu.set_power_limit, 300)
        health_during = lost_gpu.health()
        SIM.set_lost(0, False)
        wait_for(lambda: lost_gpu.last_xid == 79)  # the XID the loss raised has arrived
        after = lost_gpu.telemetry()
        emit({"during": during, "control_error": control_error,
              "health_during": health_during, "after": after,
              "health_after": lost_gpu.health(), "last_xid": lost_gpu.last_xid})
    """)
    lost, *others = result["during"]
    assert lost["health"]["state"] == "unhealthy"
    assert "lost" in lost["health"]["reason"]
    assert lost["power_w"] is None and lost["temp_c"] is None  # no stale numbers
    for t in others:
        assert t["health"]["state"] == "healthy"
        assert t["power_w"] is not None and t["gpu"]["mem_total_bytes"] is not None
    assert result["control_error"]["type"] == "DeviceLost"
    assert result["health_during"]["state"] == "unhealthy"
    # same Device object, no restart: healthy again once NVML answers
    assert result["after"]["health"]["state"] == "healthy"
    assert result["after"]["power_w"] is not None
    assert result["health_after"]["state"] == "healthy"
    assert result["last_xid"] == 79


def test_xid_events_set_health_and_are_delivered_once(rig: SimRig) -> None:
    result = rig.run("""
        devices = discover()
        gpu = devices[1]
        SIM.inject_xid(1, 13)   # application error: not a hardware fault
        wait_for(lambda: gpu.last_xid == 13)
        after_app = gpu.health()
        SIM.inject_xid(1, 48)   # double-bit ECC error
        wait_for(lambda: gpu.last_xid == 48)
        time.sleep(0.2)         # time for any duplicate delivery to show up
        emit({"after_app": after_app, "after_hw": gpu.health(),
              "history": [xid for _, xid in gpu.xid_history],
              "telemetry": gpu.telemetry(), "others": [d.health() for d in devices[::2]]})
    """)
    assert result["after_app"]["state"] == "healthy"
    assert result["after_hw"]["state"] == "unhealthy"
    assert "XID 48" in result["after_hw"]["reason"]
    assert result["history"] == [13, 48]
    assert result["telemetry"]["gpu"]["last_xid"] == 48
    assert result["telemetry"]["health"]["state"] == "unhealthy"
    assert all(h["state"] == "healthy" for h in result["others"])


def test_xid_events_are_logged(rig: SimRig) -> None:
    rig.run("""
        gpu = discover()[0]
        SIM.inject_xid(0, 31)
        emit(wait_for(lambda: gpu.last_xid == 31))
    """)
    log_lines = [line for line in rig.last_stderr.splitlines() if "nvml.xid" in line]
    assert len(log_lines) == 1
    assert "xid=31" in log_lines[0] and "application=True" in log_lines[0]


def test_driver_reload_is_detected_and_desired_state_reapplied(rig: SimRig) -> None:
    result = rig.run("""
        gpu = discover()[0]
        gpu.set_power_limit(500)
        gpu.lock_clocks(900, 1400)
        gpu.set_persistence_mode(True)
        SIM.inject_xid(0, 48)
        wait_for(lambda: gpu.last_xid == 48)
        unhealthy = gpu.health()
        SIM.driver_reload()
        reset = SIM.read().gpus[0]
        after = gpu.telemetry()
        emit({"unhealthy": unhealthy, "reset": reset, "after": after,
              "sim": SIM.read().gpus[0]})
    """)
    assert result["unhealthy"]["state"] == "unhealthy"
    reset = result["reset"]
    assert reset["power_limit_mw"] == 0 and reset["sm_lock_mhz"] == [0, 0]
    assert reset["persistence"] is False
    after = result["after"]
    assert after["power_limit_w"] == 500.0
    assert after["gpu"]["persistence_mode"] is True
    assert after["health"]["state"] == "healthy"  # the reset cleared the XID fault
    sim = result["sim"]
    assert sim["power_limit_mw"] == 500_000 and sim["sm_lock_mhz"] == [900, 1400]


def test_limit_reset_behind_our_back_is_reapplied(rig: SimRig) -> None:
    """No energy-counter restart (e.g. someone ran nvidia-smi -pl): the read-back differs."""
    result = rig.run("""
        import pynvml
        gpu = discover()[2]
        gpu.set_power_limit(350)
        pynvml.nvmlDeviceSetPowerManagementLimit(pynvml.nvmlDeviceGetHandleByIndex(2), 450000)
        emit(gpu.telemetry().power_limit_w)
    """)
    assert result == 350.0


def test_agent_restart_reapplies_desired_state(rig: SimRig) -> None:
    rig.run("""
        gpu = discover()[1]
        gpu.set_power_limit(250)
        gpu.lock_memory_clocks(1000, 1200)
        emit(True)
    """)
    rig.control.driver_reload()
    assert rig.control.read().gpus[1].power_limit_mw == 0
    result = rig.run("emit(discover()[1].telemetry().power_limit_w)")  # a fresh agent
    assert result == 250.0
    gpu = rig.control.read().gpus[1]
    assert gpu.power_limit_mw == 250_000 and gpu.mem_lock_mhz == (1000, 1200)


def test_reapply_without_permission_degrades_health(rig: SimRig) -> None:
    rig.run("discover()[0].set_power_limit(400); emit(True)")
    rig.control.driver_reload()
    rig.control.set_no_permission(True)
    result = rig.run("""
        gpu = discover()[0]
        emit({"health": gpu.health(), "limit": gpu.telemetry().power_limit_w})
    """)
    assert result["health"]["state"] == "degraded"
    assert "CAP_SYS_ADMIN" in result["health"]["reason"]
    assert result["limit"] == 700.0
