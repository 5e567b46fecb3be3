"""Build a PoCL "bitstream" (program binary + manifest) from the FPGA-style search kernel.

    python fpga/opencl/build_bitstream.py --out DIR [--device ID] [--fpga-device-types cpu]
        [--source sha256d_search.cl] [--name sha256d-search] [--version 1.0.0]

On a real card this step is the vendor compiler (aoc, v++) producing .aocx / .xclbin; here
PoCL compiles the same kernel source for the device that stands in for the card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hal import opencl
from hal.bitstream import build_bitstream
from hal.errors import HalError

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--device", help="card id (default: the only card, or the first)")
    parser.add_argument("--fpga-device-types", default="cpu", help="comma-separated")
    parser.add_argument("--source", type=Path, default=HERE / "sha256d_search.cl")
    parser.add_argument("--name", default="sha256d-search")
    parser.add_argument("--version", default="1.0.0")
    args = parser.parse_args(argv)
    try:
        cards = [
            d for d in opencl.discover({"fpga_device_types": args.fpga_device_types.split(",")})
            if isinstance(d, opencl.FpgaCard)
        ]
        if args.device:
            cards = [c for c in cards if c.id == args.device]
        if not cards:
            print("build_bitstream: no matching card", file=sys.stderr)
            return 2
        path = build_bitstream(
            cards[0], args.out, source_path=args.source, name=args.name, version=args.version
        )
    except (HalError, OSError) as exc:
        print(f"build_bitstream: {exc}", file=sys.stderr)
        return 2
    print(f"{cards[0].id}: wrote {path} and {path.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
