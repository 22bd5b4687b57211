"""Settings as frozen dataclasses ↔ JSON files ↔ command-line flags, one implementation.

A program's settings are one frozen `@dataclass` deriving from `Settings`, one field
per setting with a one-line comment after it:

    batch_size: int = 32  # GLOBAL batch, split over all replicas

`add_arguments` turns every field into a flag (`--batch-size`) whose help is that
comment plus the default; tuples are several values (`--stages 0 1`, in JSON a list);
booleans are `--cache` / `--no-cache`. Flags default to "unset" so that presets and
`--config` files can fill what the command line does not say. `read_json` returns only
the settings a file names, so a file of `{"beta": 4}` changes β and nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import typing
from dataclasses import fields
from pathlib import Path

from common.files import write_json


class ConfigError(ValueError):
    """An invalid setting; the message names the flag or file and what to do."""


STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def flag(name: str) -> str:
    """The command-line flag of a field: batch_size → --batch-size."""
    return "--" + name.replace("_", "-")


def need(ok: bool, name: str, message: str) -> None:
    """Raise ConfigError("--flag: message") unless `ok`; `name` is a field name or a flag."""
    if not ok:
        raise ConfigError(f"{flag(name.lstrip('-'))}: {message}")


class Settings:
    """Mixin for a frozen dataclass of settings: JSON round trip, replace, validate."""

    def validate(self):
        """Raise ConfigError naming the flag of the first invalid setting; return self."""
        return self

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    def save(self, path) -> None:
        """Write the settings as JSON, atomically."""
        write_json(path, self.to_dict())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config"):
        """The settings with `values` over the defaults (values coerced to the field types)."""
        return cls(**coerce_values(cls, values, source))

    @classmethod
    def load(cls, path, name: str = "--config"):
        """The settings of a JSON file, missing ones at their defaults."""
        return cls.from_dict(read_json(cls, path, name), source=str(path))


def _types(cls) -> dict:
    return typing.get_type_hints(cls)


def coerce_values(cls, values: dict, source: str) -> dict:
    """`values` checked against the fields of `cls` and converted to their types."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    types = _types(cls)
    return {name: _coerce(types[name], name, value, source) for name, value in values.items()}


def _coerce(kind, name: str, value, source: str):
    try:
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            items = [value] if isinstance(value, (str, int, float)) else list(value)
            return tuple(item(v) for v in items)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name}={value!r} is not a valid "
                          f"{getattr(kind, '__name__', kind)}") from None


def read_json(cls, path, name: str = "--config") -> dict:
    """The settings a JSON file names (and only those), coerced; errors name `name` and the file."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{name}: {path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{name}: {path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: {path}: expected a JSON object")
    return coerce_values(cls, values, str(path))


def field_comments(cls) -> dict[str, str]:
    """The one-line comment after each field in the class source."""
    names = {f.name for f in fields(cls)}
    comments = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            head, _, comment = line.partition("  # ")
            name = head.strip().split(":")[0]
            if name in names and comment:
                comments[name] = comment.strip()
    return comments


def add_arguments(parser: argparse.ArgumentParser, cls, title: str = "settings") -> None:
    """One flag per field of `cls`, help from the field's comment, default unset (None)."""
    group = parser.add_argument_group(title)
    types, comments = _types(cls), field_comments(cls)
    for f in fields(cls):
        kind = types[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        if shown == "":
            shown = '""'
        help_text = f"{comments.get(f.name, '')} (default: {shown})".strip().replace("%", "%%")
        metavar = f.name.split("_")[-1].upper()
        if kind is bool:
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag(f.name), dest=f.name, nargs="+", default=None, metavar=metavar,
                               help=help_text)
        else:
            group.add_argument(flag(f.name), dest=f.name, default=None, metavar=metavar, help=help_text)


def given(cls, args: argparse.Namespace) -> dict:
    """The settings given as flags on the command line (unset ones left out)."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def resolve(cls, *layers: dict, source: str = "flags"):
    """Defaults < each of `layers` in turn (dicts of settings); validated."""
    values: dict = {}
    for layer in layers:
        values.update(layer)
    return cls.from_dict(values, source=source).validate()
