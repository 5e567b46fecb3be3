"""The committed generated code matches protos/, and the API follows its own conventions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from rigapi import pb

REPO = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate", REPO / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_up_to_date(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    assert written, "generator produced nothing"
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        committed = REPO / "rigapi" / rel
        assert committed.exists(), f"{rel} is generated but not committed: run make protos"
        assert committed.read_text() == fresh.read_text(), f"{rel} is stale: run make protos"


def test_every_enum_starts_with_unspecified_zero() -> None:
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        zero = enum.values_by_number[0].name
        assert zero == f"{_upper_snake(enum.name)}_UNSPECIFIED", enum.name


def test_every_rpc_has_its_own_request_and_response() -> None:
    service = pb.DESCRIPTOR.services_by_name["RigAgent"]
    seen: set[str] = set()
    for method in service.methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
        seen |= {method.input_type.name, method.output_type.name}
    assert len(seen) == 2 * len(service.methods)


def _upper_snake(name: str) -> str:
    out = "".join(f"_{c}" if c.isupper() else c.upper() for c in name)
    return out.lstrip("_")
