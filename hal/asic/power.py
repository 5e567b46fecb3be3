"""Power where the firmware measures none: a nameplate model, scaled by the reported hashrate.

Stock Antminer firmware reports no watts, yet rig power accounting (curtailment) needs every
device's share. The estimate is the model's nameplate efficiency (W per unit of hashrate) times
what the miner hashes right now, or a standby figure when it hashes nothing (control board and
fans idling). Telemetry marks it `PowerSource.ESTIMATED` so nobody mistakes it for a sensor.

Figures: Bitmain's published nameplate specifications (power at the wall and hashrate at 25 °C,
from the product spec sheets on shop.bitmain.com and the model's user manual). Hashrates are in
hashes per second of the model's own algorithm (Equihash: solutions per second), never as
SHA-256d: an E3's 190 MH/s of Ethash is 190e6, not a SHA-256d figure.
"""

from __future__ import annotations

from dataclasses import dataclass

STANDBY_W = 15.0  # control board + fans at minimum, miner asleep (sleep mode: hash boards off)


@dataclass(frozen=True, slots=True)
class Nameplate:
    algorithm: str
    hashrate_hs: float  # nameplate hashrate
    power_w: float  # nameplate wall power at that hashrate

    @property
    def w_per_hs(self) -> float:
        return self.power_w / self.hashrate_hs


TH, GH, MH = 1e12, 1e9, 1e6
KSOL = 1e3  # Equihash: a thousand solutions per second

# Model name as the firmware's `Type` says it, upper-case -> nameplate (Bitmain spec sheets).
NAMEPLATES: dict[str, Nameplate] = {
    "ANTMINER S9": Nameplate("sha256d", 13.5 * TH, 1323.0),
    "ANTMINER S17": Nameplate("sha256d", 56 * TH, 2520.0),
    "ANTMINER T17": Nameplate("sha256d", 40 * TH, 2200.0),
    "ANTMINER S19": Nameplate("sha256d", 95 * TH, 3250.0),
    "ANTMINER S19 PRO": Nameplate("sha256d", 110 * TH, 3250.0),
    "ANTMINER S19J": Nameplate("sha256d", 90 * TH, 3100.0),
    "ANTMINER S19J PRO": Nameplate("sha256d", 100 * TH, 3050.0),
    "ANTMINER S19 XP": Nameplate("sha256d", 140 * TH, 3010.0),
    "ANTMINER S19K PRO": Nameplate("sha256d", 120 * TH, 2760.0),
    "ANTMINER T19": Nameplate("sha256d", 84 * TH, 3150.0),
    "ANTMINER S21": Nameplate("sha256d", 200 * TH, 3500.0),
    "ANTMINER S21 PRO": Nameplate("sha256d", 234 * TH, 3510.0),
    "ANTMINER T21": Nameplate("sha256d", 190 * TH, 3610.0),
    "ANTMINER L3": Nameplate("scrypt", 250 * MH, 400.0),
    "ANTMINER L3+": Nameplate("scrypt", 504 * MH, 800.0),
    "ANTMINER L7": Nameplate("scrypt", 9500 * MH, 3425.0),
    "ANTMINER D3": Nameplate("x11", 19.3 * GH, 1350.0),
    "ANTMINER E3": Nameplate("ethash", 190 * MH, 760.0),
    "ANTMINER Z11": Nameplate("equihash", 135 * KSOL, 1418.0),
}


def model_key(model: str) -> str:
    """`Antminer S19 Pro (88)` or `Antminer S19j Pro-A` -> the table's key form."""
    key = model.split(" (")[0].strip().upper()
    return key.removesuffix("-A").removesuffix("_I").strip()


def nameplate(model: str) -> Nameplate | None:
    return NAMEPLATES.get(model_key(model))


# Model-name prefixes of miners that do not hash SHA-256d (bmminer's "GHS" keys then count
# another unit: RATE_UNIT_HS).
ALGORITHM_PREFIXES = (("ANTMINER L", "scrypt"), ("ANTMINER D", "x11"), ("HAMMER D", "scrypt"),
                      ("ANTMINER E", "ethash"), ("ANTMINER Z", "equihash"))

# What one unit of bmminer's "GHS 5s", "GHS av" and chain_rateN counts, per algorithm, in that
# algorithm's hashes (solutions) per second: GH/s on SHA-256d miners; the same keys carry MH/s
# on scrypt (L3+, L7), X11 (D3) and Ethash (E3) miners and kSol/s on Equihash ones (Z11).
RATE_UNIT_HS = {"sha256d": GH, "scrypt": MH, "x11": MH, "ethash": MH, "equihash": KSOL}


def algorithm_of(model: str) -> str:
    """The algorithm a model hashes: Antminer L* and Hammer D* scrypt, Antminer D* X11,
    Antminer E* Ethash, Antminer Z* Equihash, the rest SHA-256d."""
    plate = nameplate(model)
    if plate is not None:
        return plate.algorithm
    key = model_key(model)
    return next((algo for prefix, algo in ALGORITHM_PREFIXES if key.startswith(prefix)),
                "sha256d")


def estimate_power_w(model: str, hashrate_hs: float | None) -> float | None:
    """Nameplate W per H/s x the reported hashrate; standby when it hashes nothing; None when
    the model or the hashrate is unknown (an unknown is not zero)."""
    plate = nameplate(model)
    if plate is None or hashrate_hs is None:
        return None
    if hashrate_hs <= 0:
        return STANDBY_W
    return round(plate.w_per_hs * hashrate_hs, 1)
