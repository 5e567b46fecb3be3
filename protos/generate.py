"""Regenerate rigapi/rig/v1 from protos/rig/v1 with grpcio-tools.

The generated code is committed so that rigd installs on a rig without grpcio-tools (a build
tool, not a runtime need) and API changes show up in review as code; tests/agent/test_api.py
fails when the committed code is stale. Run: python protos/generate.py
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
PROTO_FILES = ("rig/v1/rig_agent.proto",)
OUT_PACKAGE = "rigapi"
DEFAULT_OUT = REPO / "rigapi"


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules for every proto under out_dir/rig/v1; return their paths."""
    from grpc_tools import protoc  # test/build dependency only

    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(PROTO_ROOT / p) for p in PROTO_FILES),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            text = src.read_text()
            # protoc writes `from rig.v1 import ...`; our package lives under rigapi.
            text = text.replace("from rig.v1 import", f"from {OUT_PACKAGE}.rig.v1 import")
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            written.append(dest)
    for pkg in (out_dir / "rig", out_dir / "rig" / "v1"):
        (pkg / "__init__.py").write_text("")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.out == DEFAULT_OUT:
        shutil.rmtree(DEFAULT_OUT / "rig", ignore_errors=True)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
