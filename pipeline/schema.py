"""The typed configuration's building blocks and its one loader.

Each component keeps its settings beside its code (`pipeline/render/config.py`, `pipeline/rollout/config.py`,
...), and `pipeline/config.py` assembles them into the run's `Config`. Component config modules import from
here, never from `pipeline.config`, so that assembling them creates no import cycle. Every tool reads its YAML
and `a.b.c=value` overrides through `load_section`: unknown keys and wrong types fail with the key's path.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message names the offending key path."""


class Strict(BaseModel):
    # extra="forbid": a typo is an error, not a silently ignored key.
    # coerce_numbers_to_str: `run.name=123` on the command line is a name, not a type error.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_assignment=True)


def load_section(model: type[BaseModel], path: Union[str, Path, None] = None,
                 overrides: tuple[str, ...] | list[str] = (), merge_defaults: bool = True) -> Any:
    """A typed config from an optional YAML file and `a.b.c=value` overrides, merged onto the model's
    defaults (so a partial section keeps every default it does not mention; `merge_defaults=False` leaves
    that to pydantic, for a schema whose validators derive values from what the user left unset).
    Unknown keys and wrong types raise ConfigError naming the key's full path."""
    data = read_section_data(model, path, overrides)
    if merge_defaults:
        data = deep_merge(model().model_dump(mode="json"), data)
    return validate(model, data, source=str(path) if path is not None else "defaults")


def read_section_data(model: type[BaseModel], path: Union[str, Path, None],
                      overrides: tuple[str, ...] | list[str] = ()) -> dict:
    """The raw mapping of a YAML file with overrides applied, every key checked against `model`."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = read_yaml_mapping(path)
        check_keys(data, model, prefix="", source=str(path))
    return apply_overrides(data, model, overrides)


def apply_overrides(data: dict, model: type[BaseModel], overrides: tuple[str, ...] | list[str]) -> dict:
    """`a.b.c=value` items set into `data` (in place, and returned), each key path checked against `model`."""
    for item in overrides:
        key, value = parse_override(item)
        check_path(key, model)
        set_path(data, key, value)
    return data


def validate(model: type[BaseModel], data: dict, source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {path}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(f"invalid configuration ({source}):\n" + "\n".join(lines)) from None


def read_yaml_mapping(path: Path) -> dict:
    """The mapping a YAML config file holds (empty file: {}); ConfigError for bad YAML or another top level."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key path")
    try:  # YAML typing: 1 → int, true → bool, null → None, [a, b] → list; anything else stays a string
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`Model`, `Optional[Model]`), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is Union:
        for arg in get_args(annotation):
            sub = _submodel(arg)
            if sub is not None:
                return sub
    return None


def _unknown_key(path: str, name: str, model: type[BaseModel], source: str) -> ConfigError:
    fields = list(model.model_fields)
    hint = difflib.get_close_matches(name, fields, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(
        f"unknown config key '{path}' ({source}): {model.__name__} has no field {name!r}{did_you_mean}. "
        f"Valid keys there: {', '.join(fields)}"
    )


def check_path(key: str, model: type[BaseModel]) -> None:
    current: type[BaseModel] | None = model
    parts = key.split(".")
    for i, part in enumerate(parts):
        if current is None:  # descending into a leaf (int, str, dict...) is not allowed
            raise ConfigError(f"unknown config key '{key}' (command line): '{'.'.join(parts[:i])}' is a value")
        if part not in current.model_fields:
            raise _unknown_key(key, part, current, "command line")
        current = _submodel(current.model_fields[part].annotation)


def check_keys(data: dict, model: type[BaseModel], prefix: str, source: str) -> None:
    for name, value in data.items():
        path = f"{prefix}{name}"
        if name not in model.model_fields:
            raise _unknown_key(path, str(name), model, source)
        sub = _submodel(model.model_fields[name].annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(value, sub, prefix=f"{path}.", source=source)


def set_path(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
