"""Unit conversions, one helper per unit: drivers speak milliwatts and millijoules, the HAL's
fields speak watts and joules (units in their names). None stays None: unknown is not zero."""

from __future__ import annotations

from typing import overload


@overload
def w_from_mw(milliwatts: int | float) -> float: ...
@overload
def w_from_mw(milliwatts: None) -> None: ...
def w_from_mw(milliwatts: int | float | None) -> float | None:
    return milliwatts / 1000.0 if milliwatts is not None else None


def mw_from_w(watts: float) -> int:
    """Whole milliwatts, as NVML's setters take them."""
    return round(watts * 1000)


@overload
def j_from_mj(millijoules: int | float) -> float: ...
@overload
def j_from_mj(millijoules: None) -> None: ...
def j_from_mj(millijoules: int | float | None) -> float | None:
    return millijoules / 1000.0 if millijoules is not None else None


def mj_from_j(joules: float | None) -> float | None:
    return joules * 1000.0 if joules is not None else None
