"""The client for scripts: the same calls, blocking, on an event loop of its own thread.

    with BlockingRig(Endpoint(socket="/run/rigd/rigd.sock")) as rig:
        print(rig.inventory().rig_id)
        for update in rig.stream_telemetry(interval_s=1.0):
            ...

The loop runs between calls too, so a held lease keeps being renewed while the script does
something else, and its `on_lost` runs on that loop's thread the moment it is lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from client.endpoint import Endpoint
from client.fleet import Fleet, Results
from client.lease import Lease
from client.model import Inventory, LeaseInfo, PowerLimit, Snapshot, StreamUpdate
from client.rig import Rig
from rigapi.model import DiagnosticOutcome, Operation

T = TypeVar("T")


class Loop:
    """An asyncio loop running on a daemon thread; run() blocks the caller until a coroutine
    ends there (Ctrl-C in the caller cancels it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rig-client",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(items)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and self.loop.is_running():
                self.run(aclose())

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class BlockingRig:
    """Rig's calls, blocking. `rig` is the asyncio Rig underneath."""

    def __init__(self, endpoint: Endpoint | str | None = None, **kwargs: Any) -> None:
        self.rig = Rig(endpoint, **kwargs)  # a bad endpoint raises here, before any thread
        self._loop = Loop()

    @property
    def name(self) -> str:
        return self.rig.name

    @property
    def lease(self) -> Lease | None:
        return self.rig.lease

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def close(self) -> None:
        try:
            self._run(self.rig.close())
        finally:
            self._loop.close()

    def __enter__(self) -> BlockingRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inventory(self, **kw: Any) -> Inventory:
        return self._run(self.rig.inventory(**kw))

    def telemetry(self, device_ids: Sequence[str] = (), **kw: Any) -> Snapshot:
        return self._run(self.rig.telemetry(device_ids, **kw))

    def stream_telemetry(self, device_ids: Sequence[str] = (), **kw: Any
                         ) -> Iterator[StreamUpdate]:
        return self._loop.iterate(aiter(self.rig.stream_telemetry(device_ids, **kw)))

    def health(self, *args: Any, **kw: Any) -> dict[str, str]:
        return self._run(self.rig.health(*args, **kw))

    def operation(self, operation_id: str, **kw: Any) -> Operation:
        return self._run(self.rig.operation(operation_id, **kw))

    def operations(self, **kw: Any) -> list[Operation]:
        return self._run(self.rig.operations(**kw))

    def follow(self, operation: Operation | str, **kw: Any) -> Iterator[Operation]:
        return self._loop.iterate(self.rig.follow(operation, **kw))

    def wait(self, operation: Operation | str, **kw: Any) -> Operation:
        return self._run(self.rig.wait(operation, **kw))

    def acquire_lease(self, holder: str, ttl_s: int, **kw: Any) -> Lease:
        return self._run(self.rig.acquire_lease(holder, ttl_s, **kw))

    def renew_lease(self, lease_id: str, ttl_s: int, **kw: Any) -> LeaseInfo:
        return self._run(self.rig.renew_lease(lease_id, ttl_s, **kw))

    def release_lease(self, lease_id: str, **kw: Any) -> None:
        self._run(self.rig.release_lease(lease_id, **kw))

    def start_switch(self, device_ids: Sequence[str], workload: Any, **kw: Any) -> Operation:
        return self._run(self.rig.start_switch(device_ids, workload, **kw))

    def switch(self, device_ids: Sequence[str], workload: Any, **kw: Any) -> Operation:
        return self._run(self.rig.switch(device_ids, workload, **kw))

    def set_power_limit(self, device_id: str, watts: float, **kw: Any) -> PowerLimit:
        return self._run(self.rig.set_power_limit(device_id, watts, **kw))

    def start_curtailment(self, target_w: float, **kw: Any) -> Operation:
        return self._run(self.rig.start_curtailment(target_w, **kw))

    def curtail(self, target_w: float, **kw: Any) -> Operation:
        return self._run(self.rig.curtail(target_w, **kw))

    def start_cancel_curtailment(self, **kw: Any) -> Operation:
        return self._run(self.rig.start_cancel_curtailment(**kw))

    def cancel_curtailment(self, **kw: Any) -> Operation:
        return self._run(self.rig.cancel_curtailment(**kw))

    def device_action(self, device_id: str, action: str, **kw: Any) -> str:
        return self._run(self.rig.device_action(device_id, action, **kw))

    def diagnostics(self, level: int = 1, device_ids: Sequence[str] = ()
                    ) -> Iterator[DiagnosticOutcome]:
        return self._loop.iterate(self.rig.diagnostics(level, device_ids))

    def run_diagnostics(self, level: int = 1, device_ids: Sequence[str] = (), **kw: Any
                        ) -> list[DiagnosticOutcome]:
        return self._run(self.rig.run_diagnostics(level, device_ids, **kw))


class BlockingFleet:
    """Fleet's calls, blocking."""

    def __init__(self, fleet: Callable[[], Fleet] | Iterable[Any], **kwargs: Any) -> None:
        """`fleet`: what Fleet() takes (members), or a function making the Fleet (e.g.
        `lambda: Fleet.from_file(path, ...)`)."""
        self.fleet = fleet() if callable(fleet) else Fleet(fleet, **kwargs)
        self._loop = Loop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def close(self) -> None:
        try:
            self._run(self.fleet.close())
        finally:
            self._loop.close()

    def __enter__(self) -> BlockingFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, fn: Callable[[Rig], Coroutine[Any, Any, T]], **kw: Any) -> Results[T]:
        return self._run(self.fleet.map(fn, **kw))

    def connect(self, **kw: Any) -> Results[dict[str, str]]:
        return self._run(self.fleet.connect(**kw))

    def inventory(self, **kw: Any) -> Results[Inventory]:
        return self._run(self.fleet.inventory(**kw))

    def telemetry(self, **kw: Any) -> Results[Snapshot]:
        return self._run(self.fleet.telemetry(**kw))

    def set_power_limit(self, watts: Any, **kw: Any) -> Results[tuple[PowerLimit, ...]]:
        return self._run(self.fleet.set_power_limit(watts, **kw))

    def switch(self, workload: Any, **kw: Any) -> Results[Operation]:
        return self._run(self.fleet.switch(workload, **kw))

    def curtail(self, target_w: Any, **kw: Any) -> Results[Operation]:
        return self._run(self.fleet.curtail(target_w, **kw))

    def cancel_curtailment(self, **kw: Any) -> Results[Operation]:
        return self._run(self.fleet.cancel_curtailment(**kw))
