"""The journal: every round and each device's reason when it changes, read back by `rigsite
status` and `rigsite explain` across replicas; a torn last line is skipped, a full file
rotated."""

from __future__ import annotations

import re
from pathlib import Path

from controller.journal import Journal, clock, explain, records, status
from controller.model import PolicyMemory, Workload
from controller.policy import PolicyConfig, decide
from tests.controller.fleet import follow, miner, rig, snapshot

T0 = 1_800_000_000.0
CONFIG = PolicyConfig(shed_windows=2, min_dwell_s=0.0, high_strike_ratio=100.0)


def rounds(journal: Journal, prices: list[float], start: int = 1) -> None:
    """The policy over a price per 5-minute window, the rig doing what it is told."""
    rigs = [rig(miner("s19j", j_per_th=30.0, model="Antminer S19j"))]
    memory = PolicyMemory.empty()
    for k, price in enumerate(prices):
        snap = snapshot(T0 + 300.0 * k, price, rigs)
        decision, memory = decide(snap, memory, CONFIG)
        journal.round(start + k, snap, decision, {"site_power_w": 3000.0})
        rigs = follow(rigs, decision)


def test_explain_says_since_when_and_why_as_the_issue_asks(tmp_path: Path) -> None:
    j = Journal(tmp_path, "a")
    rounds(j, [50.0, 212.0, 212.0, 212.0])
    j.close()
    reasons = [r for r in records(tmp_path) if r["type"] == "reason"]
    # written when the rule changes: hashing, waiting (1 of 2), shed, stays asleep
    assert [r["desired"] for r in reasons] == ["hashing", "hashing", "asleep", "asleep"]
    text = explain(tmp_path, "asic/s19j", now=reasons[-1]["t"])
    first = text.splitlines()[0]
    since = clock(reasons[2]["t"], now=reasons[-1]["t"])
    assert re.fullmatch(rf"asleep since {since}: price 212 \$/MWh above this Antminer S19j's "
                        r"strike 71 \$/MWh \(29\.5 J/TH, measured\) for 2 windows \(shed after "
                        r"2\); .*", first), first
    assert "now (" in text and "stays asleep: price 212 $/MWh above" in text


def test_status_merges_replicas_and_names_the_leader(tmp_path: Path) -> None:
    a = Journal(tmp_path, "a")
    a.write("leader", event="elected")
    rounds(a, [50.0, 60.0])
    a.close()
    b = Journal(tmp_path, "b")
    b.write("leader", event="elected", why="a's lease expired")
    rounds(b, [212.0], start=3)
    b.write("action", device="asic/s19j", rig="r1", action="sleep", target="asleep",
            state="sent", operation_id="")
    b.close()
    text = status(tmp_path)
    assert text.splitlines()[0].startswith("leader: b elected at ")
    assert "round 3 at" in text and "by b: price 212 $/MWh" in text
    assert "in flight: 1" in text and "asic/s19j: sleep -> asleep" in text
    assert "site power: 3,000 W" in text


def test_a_torn_last_line_is_skipped_and_a_full_journal_rotates(tmp_path: Path) -> None:
    j = Journal(tmp_path, "a", max_bytes=1 << 16)
    rounds(j, [50.0] * 3)
    j.close()
    with open(tmp_path / "journal-a.jsonl", "a") as f:
        f.write('{"t": 18000000')  # killed mid-write
    assert all(isinstance(r["t"], float) for r in records(tmp_path))
    j = Journal(tmp_path, "a", max_bytes=1 << 16)
    for _ in range(400):
        j.write("action", device="asic/x", state="sent", error="x" * 200)
    j.close()
    assert (tmp_path / "journal-a.jsonl.1").exists()
    assert (tmp_path / "journal-a.jsonl").stat().st_size < 1 << 16
    assert len([r for r in records(tmp_path) if r["type"] == "action"]) == 400


def test_explain_of_an_unknown_device_is_an_error(tmp_path: Path) -> None:
    Journal(tmp_path, "a").close()
    try:
        explain(tmp_path, "asic/none")
    except LookupError as e:
        assert "no decision about asic/none" in str(e)
    else:
        raise AssertionError("explained a device never decided")
    assert Workload.ASLEEP == "asleep"
