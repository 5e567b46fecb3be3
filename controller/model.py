"""The policy's input, its output and its memory: immutable values.

One `Snapshot` holds everything a policy may look at: the time, the energy price with its age and
source, the hashprice per algorithm, inference demand per runtime profile with the configured value
of serving it, the site's grid cap, and the fleet as the rigs report it. A policy returns a
`Decision` (a desired state per device, each with its reason and the numbers behind it, and
per-rig Curtail targets when a grid cap applies) and its next `PolicyMemory` (hysteresis window
counters, dwell start times, borrowed GPUs, last measured efficiencies), so a policy is a pure
function and a standby replica resumes from the journaled memory.

Units live in field names. None means unknown and is never treated as zero; in the fleet's
per-device arrays unknown is NaN, and every consumer tests for it.

The fleet is held column-wise (one numpy array per field) because one decision round covers tens
of thousands of devices: `Fleet.from_rigs` builds it from per-device `DeviceState` values (what
rigd reports), `Fleet.device(i)` gives one back. A `Decision` keeps the numbers and formats a
device's reason only when asked (`Decision.explain`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]
CodeArray = npt.NDArray[np.int8]
BoolArray = npt.NDArray[np.bool_]


class DeviceKind(enum.StrEnum):
    ASIC = "asic"  # hashing only; sleeps and wakes
    GPU = "gpu"  # hashing or an inference runtime


class Workload(enum.StrEnum):
    """What a device does (as rigd reports it) or should do (as a policy decides)."""

    HASHING = "hashing"
    INFERENCE = "inference"  # with a runtime profile
    IDLE = "idle"  # no workload, not asleep (a GPU between workloads)
    ASLEEP = "asleep"  # a miner asleep; a GPU idle at its lowest power
    STANDBY = "standby"  # a GPU not hashing whose inference runtime is kept warm (sleep mode)


KINDS: tuple[DeviceKind, ...] = tuple(DeviceKind)
WORKLOADS: tuple[Workload, ...] = tuple(Workload)
KIND_ASIC, KIND_GPU = (KINDS.index(k) for k in (DeviceKind.ASIC, DeviceKind.GPU))
W_HASHING, W_INFERENCE, W_IDLE, W_ASLEEP, W_STANDBY = (
    WORKLOADS.index(w) for w in (Workload.HASHING, Workload.INFERENCE, Workload.IDLE,
                                 Workload.ASLEEP, Workload.STANDBY))
NO_PROFILE = -1


def _ro(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The array made read-only: the dataclasses holding arrays are frozen, so are their arrays."""
    if array.flags.writeable:
        array.flags.writeable = False
    return array


def _opt(value: float) -> float | None:
    """NaN (unknown, in an array) back to None."""
    return None if math.isnan(value) else float(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# The fleet


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One device as its rig reports it."""

    device_id: str
    kind: DeviceKind
    model: str  # "Antminer S19j Pro", "NVIDIA H100 80GB HBM3"
    workload: Workload
    profile: str = ""  # inference: its runtime profile; else the profile kept warm, if any
    power_w: float | None = None  # measured now
    hashrate_hs: float | None = None  # measured now, in hashes of `algorithm` per second
    algorithm: str = "sha256d"
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None
    rated_power_w: float | None = None  # nameplate at stock settings
    rated_hashrate_hs: float | None = None  # the firmware's expected hashrate
    warm_standby: bool = False  # an inference runtime is kept warm (asleep) for this device
    switch_cold_s: float | None = None  # measured: hashing -> inference, cold start
    switch_warm_s: float | None = None  # measured: -> inference from warm standby
    switch_to_hashing_s: float | None = None  # measured: -> hashing (a miner's wake and ramp)
    requests_per_s: float | None = None  # its inference runtime's, measured
    tokens_per_s: float | None = None
    healthy: bool = True
    health_reason: str = ""

    def __post_init__(self) -> None:
        if not self.device_id:
            raise ValueError("a device needs an id")
        DeviceKind(self.kind)
        Workload(self.workload)
        for name in ("power_w", "hashrate_hs", "power_limit_min_w", "power_limit_max_w",
                     "rated_power_w", "rated_hashrate_hs", "switch_cold_s", "switch_warm_s",
                     "switch_to_hashing_s", "requests_per_s", "tokens_per_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.device_id}: {name} = {value!r} is not a finite number "
                                 "≥ 0 (None means unknown)")


@dataclass(frozen=True, slots=True)
class RigState:
    """One rig: its devices, whether the controller reached it, and its draw beside them."""

    rig_id: str
    devices: tuple[DeviceState, ...]
    reachable: bool = True
    error: str = ""  # why it is unreachable
    base_power_w: float | None = None  # host, fans: the rig's power that no device accounts for


_DEVICE_FLOATS = ("power_w", "hashrate_hs", "power_limit_min_w", "power_limit_max_w",
                  "rated_power_w", "rated_hashrate_hs", "switch_cold_s", "switch_warm_s",
                  "switch_to_hashing_s", "requests_per_s", "tokens_per_s")


@dataclass(frozen=True, eq=False, kw_only=True)
class Fleet:
    """Every device of the site, one array per field (index i is the same device everywhere).

    Codes: `kind` indexes KINDS, `workload` WORKLOADS, `model`/`profile`/`algorithm` the name
    tuples beside them (`profile` NO_PROFILE = none). Unknown numbers are NaN."""

    rig_ids: tuple[str, ...]
    rig_reachable: BoolArray
    rig_base_power_w: FloatArray
    rig_errors: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    device_ids: tuple[str, ...]
    rig: IntArray
    kind: CodeArray
    models: tuple[str, ...]
    model: IntArray
    workload: CodeArray
    profiles: tuple[str, ...]
    profile: IntArray
    algorithms: tuple[str, ...]
    algorithm: IntArray
    power_w: FloatArray
    hashrate_hs: FloatArray
    power_limit_min_w: FloatArray
    power_limit_max_w: FloatArray
    rated_power_w: FloatArray
    rated_hashrate_hs: FloatArray
    switch_cold_s: FloatArray
    switch_warm_s: FloatArray
    switch_to_hashing_s: FloatArray
    requests_per_s: FloatArray
    tokens_per_s: FloatArray
    warm_standby: BoolArray
    healthy: BoolArray
    health_reasons: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        r = len(self.rig_ids)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                expected = r if f.name.startswith("rig_") else n
                if value.shape != (expected,):
                    raise ValueError(f"fleet.{f.name} has shape {value.shape}, expected "
                                     f"({expected},)")
                _ro(value)
        if n and (int(self.rig.min()) < 0 or int(self.rig.max()) >= r):
            raise ValueError("fleet.rig indexes past rig_ids")

    def __len__(self) -> int:
        return len(self.device_ids)

    def replace(self, **changes: Any) -> Fleet:
        return replace(self, **changes)

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Device id -> its index in the arrays."""
        return {device_id: i for i, device_id in enumerate(self.device_ids)}

    @staticmethod
    def from_rigs(rigs: Sequence[RigState]) -> Fleet:
        """The fleet from what the rigs report. Device ids must be unique across the site."""
        rig_ids = tuple(rig.rig_id for rig in rigs)
        if len(set(rig_ids)) != len(rig_ids):
            raise ValueError("two rigs have the same id")
        devices = [d for rig in rigs for d in rig.devices]
        device_ids = tuple(d.device_id for d in devices)
        if len(set(device_ids)) != len(device_ids):
            seen: set[str] = set()
            for device_id in device_ids:
                if device_id in seen:
                    raise ValueError(f"device {device_id} appears twice in the fleet")
                seen.add(device_id)
        rig_index = np.repeat(np.arange(len(rigs), dtype=np.int32),
                              [len(rig.devices) for rig in rigs])

        def names(values: list[str]) -> tuple[tuple[str, ...], IntArray]:
            table = tuple(dict.fromkeys(v for v in values if v))
            lookup = {name: i for i, name in enumerate(table)}
            return table, np.array([lookup.get(v, NO_PROFILE) for v in values], dtype=np.int32)

        models, model = names([d.model for d in devices])
        profiles, profile = names([d.profile for d in devices])
        algorithms, algorithm = names([d.algorithm for d in devices])
        floats = {name: np.array([_nan(getattr(d, name)) for d in devices], dtype=np.float64)
                  for name in _DEVICE_FLOATS}
        return Fleet(
            rig_ids=rig_ids,
            rig_reachable=np.array([rig.reachable for rig in rigs], dtype=np.bool_),
            rig_base_power_w=np.array([_nan(rig.base_power_w) for rig in rigs], dtype=np.float64),
            rig_errors=MappingProxyType({i: rig.error for i, rig in enumerate(rigs) if rig.error}),
            device_ids=device_ids,
            rig=rig_index,
            kind=np.array([KINDS.index(d.kind) for d in devices], dtype=np.int8),
            models=models, model=model,
            workload=np.array([WORKLOADS.index(d.workload) for d in devices], dtype=np.int8),
            profiles=profiles, profile=profile,
            algorithms=algorithms, algorithm=algorithm,
            warm_standby=np.array([d.warm_standby for d in devices], dtype=np.bool_),
            healthy=np.array([d.healthy for d in devices], dtype=np.bool_),
            health_reasons=MappingProxyType({i: d.health_reason for i, d in enumerate(devices)
                                             if d.health_reason}),
            **floats,
        )

    def device(self, i: int) -> DeviceState:
        """One device back as a value."""
        profile = int(self.profile[i])
        model = int(self.model[i])
        algorithm = int(self.algorithm[i])
        floats = {name: _opt(float(getattr(self, name)[i])) for name in _DEVICE_FLOATS}
        return DeviceState(
            device_id=self.device_ids[i], kind=KINDS[int(self.kind[i])],
            model=self.models[model] if model >= 0 else "",
            workload=WORKLOADS[int(self.workload[i])],
            profile=self.profiles[profile] if profile >= 0 else "",
            algorithm=self.algorithms[algorithm] if algorithm >= 0 else "",
            warm_standby=bool(self.warm_standby[i]), healthy=bool(self.healthy[i]),
            health_reason=self.health_reasons.get(i, ""), **floats)

    def rig_of(self, i: int) -> str:
        return self.rig_ids[int(self.rig[i])]

    def devices(self) -> Iterator[DeviceState]:
        return (self.device(i) for i in range(len(self)))


# ---------------------------------------------------------------------------------------------
# The other inputs


@dataclass(frozen=True, slots=True)
class Price:
    """The energy price as last published: a value, how old it is, where it came from."""

    usd_per_mwh: float | None
    age_s: float | None  # now minus when the value was published; None: unknown
    source: str = ""

    def published_s(self, now_s: float) -> float | None:
        return None if self.age_s is None else now_s - self.age_s


@dataclass(frozen=True, slots=True)
class Hashprice:
    """What a TH/s of `algorithm` earns per day, in dollars, as last published."""

    algorithm: str
    usd_per_th_day: float | None
    age_s: float | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class InferenceValue:
    """What serving inference is worth, as configured: per GPU-hour serving, per million
    tokens served, or both (added)."""

    usd_per_gpu_hour: float | None = None
    usd_per_million_tokens: float | None = None
    tokens_per_request: float | None = None  # to value requests by the token

    def usd_per_request(self) -> float:
        if self.usd_per_million_tokens is None or self.tokens_per_request is None:
            return 0.0
        return self.usd_per_million_tokens * self.tokens_per_request / 1e6


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """Inference demand for one runtime profile, from the runtimes' own metrics (vLLM's
    `vllm:num_requests_waiting` / `vllm:num_requests_running`, summed over its replicas) and
    the arrival rate from their request counters; with the configured facts about serving it."""

    profile: str
    requests_waiting: float | None
    requests_running: float | None
    arrival_rate_rps: float | None  # None: unknown (no counter history yet)
    capacity_rps_per_gpu: float | None  # what one GPU serves at most, measured by a load test
    wait_bound_s: float  # the queue-wait bound the site promises
    value: InferenceValue = InferenceValue()
    model: str = ""  # the model it serves, for people


@dataclass(frozen=True, slots=True)
class GridCap:
    """The site's grid cap: an operator's, or an OpenADR event received by the site's VEN."""

    cap_w: float
    deadline_s: float  # the site must be below cap_w from this time
    ends_s: float | None = None  # None: until lifted
    source: str = "operator"  # "operator" or "openadr:<event id>"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cap_w) and self.cap_w >= 0):
            raise ValueError(f"grid cap {self.cap_w!r} W is not a finite number ≥ 0")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one decision round looks at."""

    time_s: float
    price: Price
    hashprices: tuple[Hashprice, ...]
    demand: tuple[ModelDemand, ...]
    grid_cap: GridCap | None
    fleet: Fleet

    def hashprice(self, algorithm: str) -> Hashprice | None:
        return next((h for h in self.hashprices if h.algorithm == algorithm), None)


# ---------------------------------------------------------------------------------------------
# The output


@dataclass(frozen=True, slots=True)
class RigCurtail:
    """A Curtail for one rig: rigd keeps the rig below target_w from the deadline on."""

    rig_id: str
    target_w: float
    deadline_s: float
    expires_s: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceDecision:
    """One device's decision, as a value (built on demand from a `Decision`)."""

    device_id: str
    rig_id: str
    current: Workload
    current_profile: str
    desired: Workload
    profile: str
    power_cap_w: float | None
    reason: str
    numbers: Mapping[str, float]

    @property
    def changes(self) -> bool:
        return (self.desired, self.profile) != (self.current, self.current_profile)


@dataclass(frozen=True, eq=False, kw_only=True)
class Decision:
    """A desired state per device (arrays beside the snapshot's fleet), why, and the numbers.

    `reason[i]` indexes `templates`; a template is formatted with the device's numbers (the
    arrays in `numbers`), the site's (`site_numbers`), its profile's (`model_numbers`) and its
    names (`device_id`, `model`, `current`, `desired`, `profile`, `rig_id`) and its `words`
    (a per-device code into a vocabulary, such as where its efficiency figure came from)."""

    policy: str
    time_s: float
    fleet: Fleet
    desired: CodeArray
    profiles: tuple[str, ...]
    desired_profile: IntArray
    power_cap_w: FloatArray
    reason: IntArray
    templates: tuple[str, ...]
    numbers: Mapping[str, FloatArray]
    site_numbers: Mapping[str, float | str] = field(default_factory=lambda: MappingProxyType({}))
    model_numbers: Mapping[str, Mapping[str, float | str]] = field(
        default_factory=lambda: MappingProxyType({}))
    words: Mapping[str, tuple[tuple[str, ...], IntArray]] = field(
        default_factory=lambda: MappingProxyType({}))  # name -> (vocabulary, code per device)
    curtail: tuple[RigCurtail, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.fleet)
        for name in ("desired", "desired_profile", "power_cap_w", "reason"):
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"decision.{name} has shape {value.shape}, expected ({n},)")
            _ro(value)
        for name, value in self.numbers.items():
            if value.shape != (n,):
                raise ValueError(f"decision number {name} has shape {value.shape}")
            _ro(value)

    def _i(self, device: int | str) -> int:
        return self.fleet.index[device] if isinstance(device, str) else int(device)

    def profile_name(self, i: int) -> str:
        p = int(self.desired_profile[i])
        return self.profiles[p] if p >= 0 else ""

    def _context(self, i: int) -> dict[str, Any]:
        f = self.fleet
        current_profile = int(f.profile[i])
        context: dict[str, Any] = dict(self.site_numbers)
        profile = self.profile_name(i) or (f.profiles[current_profile]
                                           if current_profile >= 0 else "")
        context.update(self.model_numbers.get(profile, {}))
        context.update({name: float(values[i]) for name, values in self.numbers.items()})
        context.update({name: vocabulary[int(codes[i])]
                        for name, (vocabulary, codes) in self.words.items()})
        model = int(f.model[i])
        context.update(device_id=f.device_ids[i], rig_id=f.rig_of(i),
                       model=f.models[model] if model >= 0 else "unknown model",
                       current=str(WORKLOADS[int(f.workload[i])]),
                       desired=str(WORKLOADS[int(self.desired[i])]), profile=profile)
        return context

    def explain(self, device: int | str) -> str:
        """The device's reason, formatted from the numbers kept."""
        i = self._i(device)
        return self.templates[int(self.reason[i])].format(**self._context(i))

    def device(self, device: int | str) -> DeviceDecision:
        i = self._i(device)
        f = self.fleet
        current_profile = int(f.profile[i])
        cap = float(self.power_cap_w[i])
        return DeviceDecision(
            device_id=f.device_ids[i], rig_id=f.rig_of(i),
            current=WORKLOADS[int(f.workload[i])],
            current_profile=f.profiles[current_profile] if current_profile >= 0 else "",
            desired=WORKLOADS[int(self.desired[i])], profile=self.profile_name(i),
            power_cap_w=_opt(cap), reason=self.explain(i),
            numbers=MappingProxyType({name: float(v[i]) for name, v in self.numbers.items()}))

    def changed(self) -> npt.NDArray[np.intp]:
        """Indexes of the devices whose desired state differs from what they do now (a profile
        change counts only where the desired workload has a profile)."""
        f = self.fleet
        differs = self.desired != f.workload
        with_profile = (self.desired == W_INFERENCE) | (self.desired == W_STANDBY)
        if with_profile.any():
            current = np.array([self._profile_code(int(p), f) for p in f.profile[with_profile]],
                               dtype=np.int32)
            differs[with_profile] |= current != self.desired_profile[with_profile]
        return np.flatnonzero(differs)

    def _profile_code(self, fleet_code: int, fleet: Fleet) -> int:
        if fleet_code < 0:
            return NO_PROFILE
        name = fleet.profiles[fleet_code]
        return self.profiles.index(name) if name in self.profiles else -2

    def counts(self) -> dict[Workload, int]:
        """How many devices should do each workload."""
        counts = np.bincount(self.desired.astype(np.intp), minlength=len(WORKLOADS))
        return {w: int(counts[i]) for i, w in enumerate(WORKLOADS)}


# ---------------------------------------------------------------------------------------------
# The policy's memory


@dataclass(frozen=True, eq=False, kw_only=True)
class PolicyMemory:
    """What a policy carries from one round to the next, per device and per profile.

    `since_s` is when the policy last ordered the device to switch (NaN: never, so no dwell
    holds it); `j_per_th` its last measured efficiency while hashing (NaN: never measured);
    `borrowed` marks GPUs taken from hashing for inference; the window counters count price
    windows (one per published price, however many rounds see it). `low_windows` counts, per
    profile, consecutive demand windows (one per `window_s`, from `demand_window_s`) in which
    fewer GPUs were needed than served."""

    device_ids: tuple[str, ...]
    windows_above: IntArray
    windows_below: IntArray
    since_s: FloatArray
    j_per_th: FloatArray
    borrowed: BoolArray
    low_windows: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    last_price_published_s: float | None = None
    demand_window_s: float | None = None

    _ARRAYS = ("windows_above", "windows_below", "since_s", "j_per_th", "borrowed")

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value.shape != (n,):
                raise ValueError(f"memory.{name} has shape {value.shape}, expected ({n},)")
            _ro(value)

    @staticmethod
    def empty(device_ids: tuple[str, ...] = ()) -> PolicyMemory:
        n = len(device_ids)
        return PolicyMemory(
            device_ids=device_ids, windows_above=np.zeros(n, dtype=np.int32),
            windows_below=np.zeros(n, dtype=np.int32), since_s=np.full(n, np.nan),
            j_per_th=np.full(n, np.nan), borrowed=np.zeros(n, dtype=np.bool_))

    def aligned(self, device_ids: tuple[str, ...]) -> PolicyMemory:
        """This memory for a fleet of these devices: kept where the device is known, fresh
        where it is new, dropped where it left."""
        if device_ids is self.device_ids:
            return self
        if device_ids == self.device_ids:
            return replace(self, device_ids=device_ids)
        fresh = PolicyMemory.empty(device_ids)
        old = {d: i for i, d in enumerate(self.device_ids)}
        pairs = [(i, old[d]) for i, d in enumerate(device_ids) if d in old]
        if not pairs:
            return replace(fresh, low_windows=self.low_windows,
                           last_price_published_s=self.last_price_published_s,
                           demand_window_s=self.demand_window_s)
        new_i, old_i = (np.array(x, dtype=np.intp) for x in zip(*pairs, strict=True))
        arrays = {}
        for name in self._ARRAYS:
            values = getattr(fresh, name).copy()
            values[new_i] = getattr(self, name)[old_i]
            arrays[name] = values
        return PolicyMemory(device_ids=device_ids, low_windows=self.low_windows,
                            last_price_published_s=self.last_price_published_s,
                            demand_window_s=self.demand_window_s, **arrays)

    def to_json(self) -> dict[str, Any]:
        """For the journal: plain JSON (NaN written as null)."""
        def floats(a: FloatArray) -> list[float | None]:
            return [None if math.isnan(x) else x for x in a.tolist()]
        return {
            "device_ids": list(self.device_ids),
            "windows_above": self.windows_above.tolist(),
            "windows_below": self.windows_below.tolist(),
            "since_s": floats(self.since_s),
            "j_per_th": floats(self.j_per_th),
            "borrowed": self.borrowed.tolist(),
            "low_windows": dict(self.low_windows),
            "last_price_published_s": self.last_price_published_s,
            "demand_window_s": self.demand_window_s,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PolicyMemory:
        def floats(values: list[float | None]) -> FloatArray:
            return np.array([math.nan if v is None else float(v) for v in values],
                            dtype=np.float64)
        try:
            return PolicyMemory(
                device_ids=tuple(str(d) for d in data["device_ids"]),
                windows_above=np.array(data["windows_above"], dtype=np.int32),
                windows_below=np.array(data["windows_below"], dtype=np.int32),
                since_s=floats(data["since_s"]), j_per_th=floats(data["j_per_th"]),
                borrowed=np.array(data["borrowed"], dtype=np.bool_),
                low_windows=MappingProxyType({str(k): int(v)
                                              for k, v in data["low_windows"].items()}),
                last_price_published_s=_opt_float(data["last_price_published_s"]),
                demand_window_s=_opt_float(data["demand_window_s"]))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a policy memory: {e!r}") from e
