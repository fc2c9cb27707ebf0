"""What every config section shares: frozen, no unknown keys, shorthand keys, and the
mark on the fields whose value changes the rows a run writes."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, get_args

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

AFFECTS_OUTPUT: dict[str, Any] = {"affects_output": True}
"""The mark of a field whose value changes the rows a stage writes: declare it as
``Field(..., json_schema_extra=AFFECTS_OUTPUT)``. The model, the prompt, a threshold, a
seed, an input field name are marked; a timeout, a concurrency, a server's address, a
batch or shard size, a device are not, since they change only how a run goes, so a run
may be resumed with other values. :func:`output_fingerprint` collects the marked values."""


def affects_output(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, Mapping) and bool(extra.get("affects_output"))


def output_fingerprint(model: BaseModel) -> dict[str, Any]:
    """The values of ``model``'s fields marked :data:`AFFECTS_OUTPUT`, as plain JSON
    values, recursing into every nested section (a section with no marked field is left
    out). Two configs with equal fingerprints make the same rows."""
    found: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            nested = output_fingerprint(value)
            if nested:
                found[name] = nested
        elif affects_output(field):
            found[name] = to_jsonable_python(value)
    return found


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field's annotation holds: one for a section, several for a
    union of them (the LLM backends), none for a value."""
    if isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [model for argument in get_args(annotation) for model in models_in(argument)]


class Section(BaseModel):
    """A frozen config section that refuses unknown keys.

    ``shorthands`` names keys a config file or ``--set`` may use that stand for several
    fields at once (``text_field`` for ``queries.text_field`` and ``documents.text_field``);
    a field given by its own name beside a shorthand keeps its own value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    shorthands: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthands(cls, data: Any) -> Any:
        # Only this section's own shorthands: nested sections expand theirs when validated.
        return _expand_own(cls, data) if cls.shorthands and isinstance(data, Mapping) else data


def expand_shorthands(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (for ``model``, at any depth) with every shorthand key replaced by the
    fields it stands for. Applied to each layer of a config before layers are merged, so
    a later layer wins whichever name it uses."""
    expanded = _expand_own(model, data)
    for name, field in model.model_fields.items():
        inner_models = models_in(field.annotation)
        if len(inner_models) == 1 and isinstance(expanded.get(name), Mapping):
            expanded[name] = expand_shorthands(inner_models[0], expanded[name])
    return expanded


def _expand_own(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    expanded = dict(data)
    for shorthand, targets in getattr(model, "shorthands", {}).items():
        if shorthand not in expanded:
            continue
        value = expanded.pop(shorthand)
        for target in targets:
            *parents, leaf = target.split(".")
            node = expanded
            for parent in parents:
                inner = node.get(parent, {})
                if not isinstance(inner, Mapping):
                    break  # a wrong value, left for validation to report
                node[parent] = dict(inner)
                node = node[parent]
            else:
                node.setdefault(leaf, value)
    return expanded
