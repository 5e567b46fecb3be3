"""Every decision and action, as JSON lines: what `rigsite status` and `rigsite explain DEVICE`
read, and what an auditor reads.

Each replica writes its own file, `journal-<replica>.jsonl` in the journal directory (rotated to
`.1` past `max_bytes`); the readers merge every replica's file by time. A record is one JSON
object with `t` (unix seconds), `replica` and `type`:

- `leader`: `event` elected | deposed | stepped_down | quorum_lost, with the etcd lease and why;
- `round`: one decision round (`round`, the price used and why it was or was not usable, the
  hashprices, the grid cap, counts of devices per desired workload, changes, notes);
- `reason`: a device's decision, written when its desired state or its rule changes (`device`,
  `rig`, `current`, `desired`, `profile`, `why`, `text`: the policy's explanation);
- `action`: a change sent to a rig and what became of it (`action` switch | sleep | wake |
  curtail | cancel_curtailment, `state` sent | succeeded | failed | rolled_back | refused |
  deferred | adopted | lost, `request_id`, `operation_id`, `fencing_token`, `error`,
  `duration_s`).

A line is written whole with one write() on a file opened for appending, so a replica killed
mid-write leaves at most one torn last line, which the readers skip.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.model import WORKLOADS, Decision, Snapshot

PREFIX = "journal-"
SUFFIX = ".jsonl"


def _clean(value: Any) -> Any:
    """JSON without NaN: unknown numbers as null."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Journal:
    def __init__(self, directory: Path, replica: str, max_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.replica = replica
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{PREFIX}{replica}{SUFFIX}"
        self._fd = self._open()
        # device -> (desired, profile, why) last written, so a reason is written when it changes
        self._last: dict[str, tuple[str, str, int]] = {}

    def _open(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.write(fd, b"\n")  # a line torn by a crash ends here, not in the next record
        return fd

    def close(self) -> None:
        os.close(self._fd)

    def write(self, type_: str, **fields: Any) -> dict[str, Any]:
        record = {"t": round(time.time(), 6), "replica": self.replica, "type": type_,
                  **_clean(fields)}
        line = (json.dumps(record, separators=(",", ":"), sort_keys=False) + "\n").encode()
        if os.fstat(self._fd).st_size + len(line) > self.max_bytes:
            os.close(self._fd)
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._fd = self._open()
        os.write(self._fd, line)
        return record

    def forget_reasons(self) -> None:
        """After a gap in leading: write every device's reason again at the next round."""
        self._last.clear()

    def round(self, number: int, snapshot: Snapshot, decision: Decision,
              extra: Mapping[str, Any]) -> None:
        counts = {str(w): n for w, n in decision.counts().items() if n}
        price = snapshot.price
        self.write(
            "round", round=number, time_s=snapshot.time_s, policy=decision.policy,
            price_usd_per_mwh=price.usd_per_mwh, price_age_s=price.age_s,
            price_source=price.source,
            price_note=str(decision.site_numbers.get("price_note", "")),
            hashprices={h.algorithm: h.usd_per_th_day for h in snapshot.hashprices},
            grid_cap_w=snapshot.grid_cap.cap_w if snapshot.grid_cap else None,
            grid_cap_source=snapshot.grid_cap.source if snapshot.grid_cap else None,
            devices=len(snapshot.fleet), desired=counts, changes=len(decision.changed()),
            curtail=[{"rig": c.rig_id, "target_w": c.target_w} for c in decision.curtail],
            notes=list(decision.notes), **extra)
        fleet = decision.fleet
        for i, device_id in enumerate(fleet.device_ids):
            key = (_workload_name(int(decision.desired[i])), decision.profile_name(i),
                   int(decision.reason[i]))
            if self._last.get(device_id) == key:
                continue
            self._last[device_id] = key
            self.write("reason", round=number, device=device_id, rig=fleet.rig_of(i),
                       current=_workload_name(int(fleet.workload[i])), desired=key[0],
                       profile=key[1], why=key[2], text=decision.explain(i))


def _workload_name(code: int) -> str:
    return str(WORKLOADS[code])


# ---------------------------------------------------------------------------------------------
# Reading


def records(directory: Path) -> Iterator[dict[str, Any]]:
    """Every replica's records, merged by time (torn or foreign lines skipped)."""
    files = sorted(directory.glob(f"{PREFIX}*{SUFFIX}.1")) + \
        sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))
    out = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("t"), (int, float)):
                out.append(record)
    out.sort(key=lambda r: r["t"])
    return iter(out)


def clock(t: float, now: float | None = None) -> str:
    """14:05, or 2026-12-07 14:05 when not today (local time)."""
    now = time.time() if now is None else now
    same_day = time.localtime(t)[:3] == time.localtime(now)[:3]
    return time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", time.localtime(t))


@dataclass
class DeviceStory:
    device: str
    since: dict[str, Any] | None = None  # the reason record where the current desire began
    latest: dict[str, Any] | None = None
    action: dict[str, Any] | None = None


def story(directory: Path, device: str) -> DeviceStory:
    found = DeviceStory(device)
    for r in records(directory):
        if r.get("device") != device:
            continue
        if r["type"] == "reason":
            if found.latest is None or (r.get("desired"), r.get("profile")) != (
                    found.latest.get("desired"), found.latest.get("profile")):
                found.since = r
            found.latest = r
        elif r["type"] == "action":
            found.action = r
    return found


def explain(directory: Path, device: str, now: float | None = None) -> str:
    """"asleep since 14:05: price 212 $/MWh above this Antminer S19j Pro's strike 96 $/MWh
    (...) for 2 windows (shed after 2)" and what the latest round said, and the last action."""
    s = story(directory, device)
    if s.latest is None or s.since is None:
        raise LookupError(f"no decision about {device} in the journal at {directory}")
    desired = str(s.since["desired"]) + (f" ({s.since['profile']})"
                                         if s.since.get("desired") == "inference" else "")
    text = str(s.since["text"])
    for prefix in (f"{s.since['desired']}: ", f"{s.since['desired']} at once: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    lines = [f"{desired} since {clock(float(s.since['t']), now)}: {text}"]
    if s.latest is not s.since:
        lines.append(f"now ({clock(float(s.latest['t']), now)}): {s.latest['text']}")
    if s.action is not None:
        a = s.action
        what = f"last action {clock(float(a['t']), now)}: {a.get('action')} -> " \
               f"{a.get('target', '')} {a.get('state')}"
        if a.get("error"):
            what += f" ({a['error']})"
        lines.append(what)
    return "\n".join(lines)


def status(directory: Path, now: float | None = None) -> str:
    """The leader, the last round and what is in flight, from the journals."""
    leader: dict[str, Any] | None = None
    last_round: dict[str, Any] | None = None
    in_flight: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    for r in records(directory):
        kind = r["type"]
        if kind == "leader":
            leader = r
        elif kind == "round":
            last_round = r
        elif kind == "action" and r.get("action") in ("switch", "sleep", "wake"):
            key = str(r.get("device"))
            if r.get("state") in ("sent", "adopted"):
                in_flight[key] = r
            else:
                in_flight.pop(key, None)
                if r.get("state") in ("failed", "refused", "rolled_back", "lost"):
                    failures.append(r)
    if last_round is None:
        raise LookupError(f"no round in the journal at {directory}")
    lines = []
    if leader is not None:
        lines.append(f"leader: {leader['replica']} {leader.get('event')} at "
                     f"{clock(float(leader['t']), now)}"
                     + (f" ({leader['why']})" if leader.get("why") else ""))
    r = last_round
    price = r.get("price_usd_per_mwh")
    lines.append(f"round {r['round']} at {clock(float(r['t']), now)} by {r['replica']}: price "
                 + ("unknown" if price is None else f"{price:.0f} $/MWh")
                 + (f" ({r['price_note']})" if r.get("price_note") else "")
                 + f", {r['devices']} devices, {r['changes']} changes")
    lines.append("desired: " + ", ".join(f"{k} {v}" for k, v in sorted(r["desired"].items())))
    if r.get("grid_cap_w") is not None:
        lines.append(f"grid cap: {r['grid_cap_w']:,.0f} W ({r.get('grid_cap_source')})")
    if r.get("site_power_w") is not None:
        lines.append(f"site power: {r['site_power_w']:,.0f} W")
    for note in r.get("notes") or []:
        lines.append(f"note: {note}")
    lines.append(f"in flight: {len(in_flight)}")
    for a in in_flight.values():
        lines.append(f"  {a.get('device')}: {a.get('action')} -> {a.get('target')} "
                     f"(op {a.get('operation_id')}, since {clock(float(a['t']), now)})")
    for a in failures[-5:]:
        lines.append(f"failed {clock(float(a['t']), now)}: {a.get('device') or a.get('rig')} "
                     f"{a.get('action')} -> {a.get('target')}: {a.get('state')} "
                     f"{a.get('error', '')}")
    return "\n".join(lines)
