"""Building a :class:`Config` from layers: a preset, config files, ``--set`` overrides and
a command's own options, later layers winning; and printing one as TOML."""

from __future__ import annotations

import difflib
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import BaseModel, ValidationError

from fineinstructions.config.base import expand_shorthands, models_in
from fineinstructions.config.llm import LLM_BACKENDS, LLMConfig, merge_llm_settings
from fineinstructions.config.overrides import load_yaml, parse_override
from fineinstructions.config.sections import Config
from fineinstructions.errors import ConfigError

DEFAULT_PRESET = "embedded"


def preset_names() -> list[str]:
    folder = resources.files("fineinstructions") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    text = (resources.files("fineinstructions") / "presets" / f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a TOML or YAML config file (YAML 1.2 booleans: ``off`` is text)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text("utf-8"))
        elif path.suffix in (".yaml", ".yml"):
            data = load_yaml(path.read_text("utf-8")) or {}
        else:
            raise ConfigError(f"{path}: a config file must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot parse: {error}") from None
    except Exception as error:
        if type(error).__module__.startswith("yaml"):
            raise ConfigError(f"{path}: cannot parse: {error}") from None
        raise
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(
    preset: str | None = DEFAULT_PRESET,
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
) -> Config:
    """Build and validate a :class:`Config` from a preset, files, ``--set`` overrides
    (``"section.field=value"``) and ``settings`` (typed values by dotted key, as a
    command's options give them), each layer over the ones before."""
    # Each layer with where it comes from, so that an invalid value names its file ("":
    # typed on the command line the user just wrote, which needs no naming).
    layers: list[tuple[str, Mapping[str, Any]]] = [(f"the {preset} preset", _read_preset(preset))] if preset else []
    layers += [(str(path), read_config_file(path)) for path in files]
    layers += [("", parse_override(override)) for override in overrides]
    if settings:
        options: dict[str, Any] = {}  # one layer: a specific option beats a shorthand beside it
        for key, value in settings.items():
            options = _merge(options, _nested(key, value), None)
        layers.append(("", options))
    expanded = [(source, expand_shorthands(Config, layer)) for source, layer in layers]
    data: dict[str, Any] = {}
    for _, layer in expanded:
        data = _merge(data, layer, Config)
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error, expanded)) from None


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _merge(base: dict[str, Any], update: Mapping[str, Any], model: type[BaseModel] | None) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        field = model.model_fields.get(key) if model is not None else None
        inner = models_in(field.annotation) if field is not None else []
        if not (isinstance(value, Mapping) and isinstance(merged.get(key), dict)):
            merged[key] = value
        elif len(inner) > 1:  # the LLM backends: a new backend drops the old one's own fields
            merged[key] = merge_llm_settings(merged[key], value)
        else:
            merged[key] = _merge(merged[key], value, inner[0] if inner else None)
    return merged


def _source(where: list[str], layers: Sequence[tuple[str, Mapping[str, Any]]]) -> str | None:
    """The source of the last layer that sets the key ``where``, or None."""
    for source, layer in reversed(layers):
        value: Any = layer
        for part in where:
            if not isinstance(value, Mapping) or part not in value:
                break
            value = value[part]
        else:
            return source
    return None


def _explain(error: ValidationError, layers: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        where, parent = _locate(item["loc"])
        source = _source(where, layers)
        if source is None:  # an unknown key of a table: the layer that set the table
            source = _source(where[:-1], layers)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field" + _unknown_field_hint(where, parent)
        elif item["type"] == "union_tag_invalid":
            where.append("backend")
            message = _unknown_backend(item["ctx"]["tag"])
        elif item["type"] == "union_tag_not_found":
            message = 'expected a table of LLM settings, such as {backend = "openai", model = "served-model"}'
        lines.append(f"  {'.'.join(where)}{f' (in {source})' if source else ''}: {message}")
    return "\n".join(lines)


def _locate(loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """An error's location as the user writes it (without pydantic's backend tags), and
    the model holding its last part."""
    where: list[str] = []
    model: type[BaseModel] | None = Config
    parent: type[BaseModel] | None = None
    parts = [str(part) for part in loc]
    while parts:
        part = parts.pop(0)
        where.append(part)
        parent = model
        field = model.model_fields.get(part) if model is not None else None
        inner = models_in(field.annotation) if field is not None else []
        if len(inner) > 1 and parts and parts[0] in LLM_BACKENDS:
            model = LLM_BACKENDS[parts.pop(0)]
        else:
            model = inner[0] if len(inner) == 1 else None
    return where, parent


def _unknown_field_hint(where: list[str], parent: type[BaseModel] | None) -> str:
    if parent is None:
        return ""
    name = where[-1]
    if issubclass(parent, LLMConfig):
        owners = [backend for backend, model in LLM_BACKENDS.items() if name in model.model_fields]
        if owners:
            backend = parent.model_fields["backend"].default
            section = ".".join(where[:-1])
            return (
                f" for the {backend} backend ({name} is a field of the {' and '.join(owners)} "
                f"backend{'s' if len(owners) > 1 else ''}; set {section}.backend={owners[0]})"
            )
    known = [*parent.model_fields, *getattr(parent, "shorthands", {})]
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


def _unknown_backend(tag: Any) -> str:
    close = difflib.get_close_matches(str(tag), list(LLM_BACKENDS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown backend {tag!r} ({hint}known: {', '.join(LLM_BACKENDS)})"


def config_as_toml(config: Config) -> str:
    """The configuration as TOML text (for ``fineinstructions config``)."""
    lines: list[str] = []

    def emit(prefix: str, model: BaseModel) -> None:
        scalars, sections = [], []
        for name in type(model).model_fields:
            value = getattr(model, name)
            (sections if isinstance(value, BaseModel) else scalars).append((name, value))
        if scalars:
            lines.append(f"[{prefix}]")
            for name, value in scalars:
                if value is not None:
                    lines.append(f"{name} = {_toml_value(value)}")
                else:
                    lines.append(f"# {name} = (unset)")
            lines.append("")
        for name, value in sections:
            emit(f"{prefix}.{name}" if prefix else name, value)

    emit("", config)
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)
