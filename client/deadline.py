"""The fleet's per-rig deadline: every call made inside `deadline(seconds)`, on any rig, ends by
then. A context variable, so that concurrent rigs each keep their own."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import Context, ContextVar, copy_context

_DEADLINE: ContextVar[float | None] = ContextVar("rig_call_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every call made in this block, on any rig, ends within `seconds` from now (the fleet's
    per-rig deadline); nested blocks keep the earlier end."""
    at = time.monotonic() + seconds
    current = _DEADLINE.get()
    token = _DEADLINE.set(at if current is None else min(at, current))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> float | None:
    """Monotonic time the calling block's calls must end by; None: no deadline."""
    return _DEADLINE.get()


def without_deadline() -> Context:
    """The current context with no deadline: for a task that outlives the call that starts it
    (a lease's renewals), which would otherwise inherit that call's deadline."""
    context = copy_context()
    context.run(_DEADLINE.set, None)
    return context
