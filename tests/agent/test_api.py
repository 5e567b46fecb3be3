"""The committed generated code matches protos/, and the API follows its own conventions."""

from __future__ import annotations

import ast
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


def _operation_kinds_rigd_makes() -> set[str]:
    """Every Operation kind in rigd's code: the literal first argument of each
    `operations.create(...)` call, and the default `kind` of a function that passes it on."""
    kinds: set[str] = set()
    for path in (REPO / "agent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "create" and node.args \
                    and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                kinds.add(node.args[0].value)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "create" and call.args
                    and isinstance(call.args[0], ast.Name) and call.args[0].id == "kind"
                    for call in ast.walk(node)):
                args = node.args.args[len(node.args.args) - len(node.args.defaults):]
                for arg, default in zip(args, node.args.defaults, strict=True):
                    if arg.arg == "kind" and isinstance(default, ast.Constant):
                        kinds.add(str(default.value))
    return kinds


def test_the_proto_lists_every_operation_kind_rigd_returns() -> None:
    proto = (REPO / "protos" / "rig" / "v1" / "rig_agent.proto").read_text()
    message = proto[proto.index("\nmessage Operation {"):]
    lines = message[:message.index("string kind = 8;")].splitlines()
    comment = " ".join(line for line in lines[-4:] if line.strip().startswith("//"))
    kinds = _operation_kinds_rigd_makes()
    assert {"set_workload", "curtail", "restore"} <= kinds, "the scan finds rigd's kinds"
    missing = sorted(k for k in kinds if f'"{k}"' not in comment)
    assert not missing, f"Operation.kind's comment omits {missing}"
