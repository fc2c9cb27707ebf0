"""``--set section.field=VALUE``: a value typed on the command line, read as its field's type.

The rule (the ``--set`` help says it too):

- A field that holds text, a string or one of named choices, takes VALUE as written:
  ``queries.moderation=off``, ``templatize.prompt=yes``, ``input.text_field=null`` (a
  column named "null"). Where the field may be unset, ``null`` unsets it
  (``judge.prompt=null``); quoted VALUE is YAML's quoted text (``judge.prompt='"null"'``).
- A field that holds a list of text takes a YAML list whose items stay text
  (``queries.protected=[a.jsonl, off.jsonl]``), or a single item.
- Any other field reads VALUE as YAML: numbers, true/false, null, [lists], {tables};
  unknown fields too (validation then names them).

YAML here and in config files follows YAML 1.2 on booleans: only true and false are
booleans, so ``off``, ``no`` and ``yes`` stay text (a boolean field still reads them).
"""

from __future__ import annotations

import re
import types
from functools import cache
from typing import Any, Literal, Sequence, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fineinstructions.config.base import models_in
from fineinstructions.errors import ConfigError

NULLS = ("null", "Null", "NULL", "~")


def parse_override(override: str) -> dict[str, Any]:
    """``"match.threshold=0.8"`` → ``{"match": {"threshold": 0.8}}``, the value read as
    the type of the field it sets (see the module's rule)."""
    from fineinstructions.config.sections import Config

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.field=value")
    path = key.strip().split(".")
    nested: Any = typed_value(field_at(Config, path), raw)
    for part in reversed(path):
        nested = {part: nested}
    return nested


def field_at(root: type[BaseModel], path: Sequence[str]) -> FieldInfo | None:
    """The field a dotted path names under ``root`` (through shorthands and every LLM
    backend), or None when it names none."""
    models, field = [root], None
    parts = list(path)
    while parts:
        name = parts.pop(0)
        targets = next((m.shorthands[name] for m in models if name in getattr(m, "shorthands", {})), None)
        if targets:
            parts[:0] = targets[0].split(".")
            continue
        field = next((m.model_fields[name] for m in models if name in m.model_fields), None)
        if field is None:
            return None
        models = models_in(field.annotation)
        if parts and not models:
            return None
    return field


def typed_value(field: FieldInfo | None, raw: str) -> Any:
    """``raw``, the text after ``=``, read as ``field`` holds values."""
    kind, nullable = value_kind(field.annotation) if field is not None else ("yaml", True)
    text = raw.strip()
    if kind == "yaml":
        return _yaml_or_text(raw)
    if nullable and text in NULLS:
        return None
    if kind == "text":
        return _unquoted(text)
    return _text_list(text)


def value_kind(annotation: Any) -> tuple[Literal["text", "texts", "yaml"], bool]:
    """What a field holds: text, a list of text, or anything else; and whether it may be None."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    nullable = type(None) in options
    rest = [option for option in options if option is not type(None)]
    if len(rest) == 1:
        (only,) = rest
        if _holds_text(only):
            return "text", nullable
        if get_origin(only) in (tuple, list) and all(_holds_text(a) for a in get_args(only) if a is not Ellipsis):
            return "texts", nullable
    return "yaml", nullable


def _holds_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    return get_origin(annotation) is Literal and all(isinstance(v, str) for v in get_args(annotation))


def _unquoted(text: str) -> str:
    import yaml

    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            value = load_yaml(text)
        except yaml.YAMLError:  # not valid quoted YAML: the text as written
            return text
        if isinstance(value, str):
            return value
    return text


def _text_list(text: str) -> Any:
    import yaml

    if not text:
        return []
    try:
        items = yaml.load(text, Loader=yaml.BaseLoader)  # every scalar stays text
    except yaml.YAMLError:
        return [text]
    return items if isinstance(items, (list, dict)) else [items]


def _yaml_or_text(raw: str) -> Any:
    import yaml

    if not raw.strip():
        return ""
    try:
        return load_yaml(raw)
    except yaml.YAMLError:
        return raw


def load_yaml(text: str) -> Any:
    """YAML read safely, with YAML 1.2's booleans (only true and false)."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())


@cache
def _yaml12_loader() -> type:
    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        """PyYAML's safe loader, but ``on``/``off``/``yes``/``no`` are text."""

    bool_tag = "tag:yaml.org,2002:bool"
    Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Yaml12Loader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Yaml12Loader
