"""How a setting is declared and read, for rigd's configuration and the site controller's alike:
one declaration per setting drives parsing, type and range checks, the did-you-mean for typos
and the documentation (`rigd --print-config`).

A setting is a dataclass field made by `setting(...)`, carrying its TOML section, help text and
allowed range; `declarations(cls)` lists a dataclass's declarations, `table(cls, raw, where)` reads
one TOML table into it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """The configuration is unusable; the message is one line an operator can act on."""

def setting(
    default: Any = dataclasses.MISSING,
    *,
    section: str,
    help: str,
    key: str = "",
    factory: Callable[[], Any] | None = None,
    bounds: tuple[float, float] | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[Any, str], Any] | None = None,
) -> Any:
    """Declare one setting: where it lives in the file, what it means, what it may be."""
    metadata = {"section": section, "key": key, "help": help, "bounds": bounds,
                "choices": choices, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)

def octal(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be octal text like \"0660\", got {value!r}")
    try:
        mode = int(value, 8)
    except ValueError:
        raise ConfigError(f"{where} must be octal text like \"0660\", got {value!r}") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"{where} must be a file mode within 0000 .. 0777")
    return mode

@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the dataclass field
    section: str  # "" = top level
    key: str  # the TOML key
    hint: Any
    default: Any
    help: str
    bounds: tuple[float, float] | None
    choices: tuple[str, ...] | None
    parse: Callable[[Any, str], Any] | None

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}" if self.section else self.key


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A configuration file's TOML; ConfigError saying why it cannot be read."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def declarations(cls: type) -> Iterator[Setting]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "section" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        yield Setting(f.name, f.metadata["section"], f.metadata["key"] or f.name, hints[f.name],
                      default, f.metadata["help"], f.metadata["bounds"], f.metadata["choices"],
                      f.metadata["parse"])

def unknown_key(key: str, where: str, known: Iterator[str] | list[str] | set[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown key {key!r} in {where}{suggestion}")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        hint, str(hint))


def coerce(value: Any, hint: Any, where: str) -> Any:
    """The TOML value as the field's type, or a ConfigError saying what was expected."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (element, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        if isinstance(element, type) and dataclasses.is_dataclass(element):
            return tuple(table(element, item, f"{where}[{i}]") for i, item in enumerate(value))
        return tuple(coerce(item, element, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__} {value!r}")
        (_, element) = typing.get_args(hint)
        if element is Any:
            return dict(value)
        return {str(k): coerce(v, element, f"{where}.{k}") for k, v in value.items()}
    ok = {
        str: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
    }[hint]
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(hint)}, got {type(value).__name__} "
                          f"{value!r}")
    return float(value) if hint is float else value


def table(cls: type, raw: Any, where: str) -> Any:
    """One entry of an array of tables ([[hashing]], [[auth.tokens]]) as its dataclass."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    known = {s.key: s for s in declarations(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise unknown_key(key, where, set(known))
        values[known[key].name] = coerce(value, known[key].hint, f"{where}.{key}")
    required = [s.key for s in known.values() if s.default is None and s.name not in values]
    if required:
        raise ConfigError(f"{where} lacks {', '.join(required)}")
    item = cls(**values)
    for s in known.values():
        check_value(s, getattr(item, s.name), f"{where}.{s.key}")
    return item

def check_value(s: Setting, value: Any, where: str) -> None:
    if s.bounds is not None:
        low, high = s.bounds
        number = float(value)
        if not math.isfinite(number) or not low <= number <= high:
            raise ConfigError(f"{where} must be within {low:g} .. {high:g}, got {value!r}")
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{where} must be one of {', '.join(s.choices)}, got {value!r}")


def document(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """A whole TOML document's values for `cls`'s declarations (field name -> value): top-level
    keys, and one [section] table per section; every key known (did-you-mean otherwise), every
    value of its declared type. Ranges are checked on the built object (`check_all`)."""
    known: dict[str, dict[str, Setting]] = {}
    for s in declarations(cls):
        known.setdefault(s.section, {})[s.key] = s
    sections = {name for name in known if name}
    values: dict[str, Any] = {}

    def take(s: Setting, value: Any) -> None:
        where = f"{source}: {s.path}"
        values[s.name] = s.parse(value, where) if s.parse else coerce(value, s.hint, where)

    for key, value in data.items():
        if key in known.get("", {}):
            take(known[""][key], value)
        elif key not in sections:
            raise unknown_key(key, source, [*known.get("", {}), *sections])
    for section in sorted(sections):
        if section not in data:
            continue
        raw = data[section]
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in raw.items():
            if key not in known[section]:
                raise unknown_key(key, f"{source} [{section}]", set(known[section]))
            take(known[section][key], value)
    return values


def check_all(item: Any, source: str) -> None:
    """Every declared setting of `item` within its bounds and choices."""
    for s in declarations(type(item)):
        check_value(s, getattr(item, s.name), f"{source}: {s.path}")


def toml_default(s: Setting, placeholders: dict[str, str] | None = None) -> str:
    """A setting's default as TOML text (`placeholders`: field name -> text, for defaults made
    at run time such as a hostname)."""
    if placeholders and s.name in placeholders:
        return placeholders[s.name]
    value = s.default
    if s.parse is octal:
        return f'"{value:04o}"'
    if value is None:
        return "<required>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {v!r}' for k, v in value.items()) + " }" \
            if value else "{}"
    return repr(value)


def describe(tables: list[tuple[type, str]], *, skip: set[str] | frozenset[str] = frozenset(),
             placeholders: dict[str, str] | None = None) -> str:
    """Every setting as commented TOML with its default and meaning. `tables`: the document's
    class with prefix "", then each array-of-tables entry class with its header ("[[x]]");
    `skip`: fields that are tables of their own (described by their entries)."""
    lines: list[str] = []
    current = None
    for cls, prefix in tables:
        for s in declarations(cls):
            if s.name in skip:
                continue
            header = prefix or (f"[{s.section}]" if s.section else "")
            if header != current:
                # An array-of-tables header is commented out too: one with its required keys
                # commented would be an entry lacking them, and the output a config that fails.
                lines += ["", f"# {header}" if prefix else header] if header else []
                current = header
            lines.append(f"# {s.key} = {toml_default(s, placeholders)}  # {s.help}")
    return "\n".join(lines).strip() + "\n"
