"""Configuration: one validated, frozen model per stage; presets are just config files.

A configuration is built in layers, later ones winning: a named preset (``embedded`` or
``paper``, shipped in ``fineinstructions/presets/``), then each config file the user
gives (TOML or YAML), then ``section.field=value`` overrides from the command line, then
a command's own options. Unknown keys are errors, with a suggestion when a key looks
misspelt.

- :mod:`.sections`: the sections, one per stage, and :class:`Config`.
- :mod:`.llm`: one model per LLM backend (:class:`LLMConfig` and its subclasses) and
  :data:`AnyLLMConfig`, the union of them that a section's ``llm`` holds.
- :mod:`.base`: what sections share, and :func:`output_fingerprint`, the values of the
  fields marked as changing output rows.
- :mod:`.overrides`: how a ``--set`` value is read (as its field's type).
- :mod:`.loading`: presets, files, layering, error messages, TOML output.
"""

from fineinstructions.config.base import AFFECTS_OUTPUT, Section, affects_output, output_fingerprint
from fineinstructions.config.llm import (
    LLM_BACKENDS,
    AnyLLMConfig,
    FakeConfig,
    LlamaCppConfig,
    LLMConfig,
    OpenAIConfig,
    TransformersConfig,
    VLLMConfig,
)
from fineinstructions.config.loading import (
    DEFAULT_PRESET,
    config_as_toml,
    load_config,
    preset_names,
    read_config_file,
)
from fineinstructions.config.overrides import parse_override
from fineinstructions.config.sections import (
    Config,
    DocumentFields,
    EmbedConfig,
    EvaluateConfig,
    IndexConfig,
    InputConfig,
    InstantiateConfig,
    JudgeConfig,
    MatchConfig,
    OutputConfig,
    PackConfig,
    QueriesConfig,
    QueryFields,
    RayConfig,
    StageResources,
    TemplateFields,
    TemplatizeConfig,
)

__all__ = [
    "AFFECTS_OUTPUT",
    "DEFAULT_PRESET",
    "LLM_BACKENDS",
    "AnyLLMConfig",
    "Config",
    "DocumentFields",
    "EmbedConfig",
    "EvaluateConfig",
    "FakeConfig",
    "IndexConfig",
    "InputConfig",
    "InstantiateConfig",
    "JudgeConfig",
    "LLMConfig",
    "LlamaCppConfig",
    "MatchConfig",
    "OpenAIConfig",
    "OutputConfig",
    "PackConfig",
    "QueriesConfig",
    "QueryFields",
    "RayConfig",
    "Section",
    "StageResources",
    "TemplateFields",
    "TemplatizeConfig",
    "TransformersConfig",
    "VLLMConfig",
    "affects_output",
    "config_as_toml",
    "load_config",
    "output_fingerprint",
    "parse_override",
    "preset_names",
    "read_config_file",
]
