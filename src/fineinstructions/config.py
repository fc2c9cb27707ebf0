"""Configuration: one validated, frozen model per stage; presets are just config files.

A configuration is built in layers, later ones winning: a named preset
(``embedded`` or ``paper``, shipped in ``fineinstructions/presets/``), then each config
file the user gives (TOML or YAML), then ``section.field=value`` overrides from the
command line. Unknown keys are errors, with a suggestion when a key looks misspelt.
"""

from __future__ import annotations

import difflib
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fineinstructions.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_PRESET = "embedded"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(Section):
    """How input files are read."""

    text_field: str = Field("text", description="Field holding a query's or document's text.")
    id_field: str = Field("id", description="Field holding the row id; rows without one get a content hash.")
    source_field: str = Field("source", description="Field naming the row's source; defaults to the file name.")
    messages_field: str = Field("messages", description="Field holding a chat's list of {role, content} messages.")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="'raise' stops at the first bad row; 'skip' counts bad rows and goes on."
    )

    def field_mapping(self):
        from fineinstructions.io.readers import FieldMapping

        return FieldMapping(
            text=self.text_field, id=self.id_field, source=self.source_field, messages=self.messages_field
        )


class OutputConfig(Section):
    """How outputs are written."""

    format: Literal["parquet", "jsonl"] = Field("parquet", description="Shard file format.")
    rows_per_shard: int = Field(50_000, ge=1, description="Rows per output shard.")


class LLMConfig(Section):
    """Which LLM a stage uses, and how to reach it."""

    backend: Literal["llama_cpp", "openai", "vllm", "transformers", "fake"] = Field(
        "llama_cpp", description="Backend: llama_cpp (embedded default), openai (any OpenAI-compatible server), vllm, transformers."
    )
    model: str = Field("embedded", description="'embedded', a GGUF path, a hub id or local folder, or a served model name.")
    cache: bool = Field(True, description="Keep a request cache next to the run's output, so re-runs make no repeated calls.")
    n_ctx: int = Field(4096, ge=256, description="Context window (llama_cpp, vllm max_model_len).")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai: the server's base URL.")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="openai: environment variable holding the API key.")
    dialect: Literal["openai", "vllm", "vllm_legacy", "llama_cpp"] = Field(
        "openai", description="openai: how structured output is sent (see the backend's docs)."
    )
    max_concurrency: int = Field(16, ge=1, description="openai: requests in flight at once.")
    max_retries: int = Field(6, ge=0, description="openai: retries on connection errors, 429 and 5xx.")
    timeout: float = Field(300.0, gt=0, description="openai: seconds before a request times out.")
    batch_size: int = Field(8, ge=1, description="transformers: sequences generated together.")


class QueriesConfig(Section):
    """Which queries reach the templatizer (DESIGN §2.1): deduplication, decontamination
    against protected evaluation prompts, and a harmful-content filter."""

    exact_dedup: bool = Field(True, description="Drop queries equal after normalising case and whitespace.")
    near_dedup_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Drop queries whose estimated Jaccard similarity (MinHash) to a kept one is at least this; null turns it off."
    )
    minhash_permutations: int = Field(128, ge=8, le=1024, description="MinHash signature length.")
    shingle_size: int = Field(5, ge=1, description="Characters per shingle for near-duplicate detection.")
    protected: tuple[str, ...] = Field(
        (), description="Files of protected evaluation prompts; a query overlapping one is dropped."
    )
    protected_text_field: str = Field("text", description="Field holding a protected prompt's text.")
    decontamination_ngram: int = Field(13, ge=1, description="Tokens in the n-grams compared with protected prompts.")
    moderation: Literal["offline", "openai", "off"] = Field(
        "offline", description="Harmful-content filter: offline lexicon (no network), an OpenAI-compatible moderation endpoint, or off."
    )
    moderation_base_url: str = Field("https://api.openai.com/v1", description="openai moderation: the server's base URL.")
    moderation_model: str = Field("omni-moderation-latest", description="openai moderation: the model name.")
    moderation_api_key_env: str | None = Field("OPENAI_API_KEY", description="openai moderation: environment variable holding the API key.")


class TemplatizeConfig(Section):
    """Query → template + compatible document description (DESIGN §2.2)."""

    mode: Literal["prompted", "fineinstructions"] = Field(
        "prompted", description="'prompted' for any instruct LLM; 'fineinstructions' for the released templatizer."
    )
    llm: LLMConfig = LLMConfig()
    prompt: str = Field("templatize-v1", description="prompted: a packaged prompt name or a prompt .toml file.")
    constraint: Literal["auto", "query", "pattern", "none"] = Field(
        "auto",
        description="prompted: how decoding is held to the format — 'query' (the template is the query with words replaced by tags; llama.cpp), 'pattern' (at least one <fi> tag), 'none', or 'auto'.",
    )
    max_tokens: int | None = Field(None, ge=16, description="Tokens a model may write per query (default: by the query's length).")
    batch_size: int = Field(16, ge=1, description="Queries sent to the model together (and between progress updates).")


class EmbedConfig(Section):
    """Document and template embedding with Gaussian pooling (DESIGN §2.3)."""

    model: str = Field("embedded", description="'embedded' (all-MiniLM-L6-v2) or a sentence-transformers name/path.")
    num_chunks: int = Field(5, ge=0, description="K, the number of Gaussian-pooled local vectors per document.")
    sigma: float = Field(0.05, gt=0, description="Kernel width as a fraction of the document's length.")
    alpha: float = Field(1.0, ge=0, le=1, description="Blend of local (1.0) and global (0.0) vectors.")
    batch_size: int = Field(32, ge=1, description="Windows of text run through the model at once.")
    window_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive windows of a long document.")
    max_tokens: int | None = Field(
        None, ge=1, description="Embed at most this many tokens of a document (None: the whole document)."
    )
    device: str | None = Field(None, description="Torch device ('cpu', 'cuda', ...); None picks a GPU when there is one.")


class IndexConfig(Section):
    """The FAISS index of template descriptions (DESIGN §2.3)."""

    kind: Literal["auto", "flat", "ivf", "ivfsq", "ivfpq", "hnsw"] = Field(
        "auto",
        description="'flat' (exact), 'ivf', 'ivfsq' (8-bit), 'ivfpq' (product-quantised) or 'hnsw'; 'auto' picks flat up to flat_limit templates, hnsw up to hnsw_limit, ivfsq up to ivfpq_above, ivfpq beyond.",
    )
    flat_limit: int = Field(100_000, ge=1, description="auto: largest bank indexed exactly.")
    hnsw_limit: int = Field(2_000_000, ge=1, description="auto: largest bank given an HNSW graph (about 4·d + 270 bytes a template).")
    ivfpq_above: int = Field(
        10_000_000, ge=1, description="auto: banks larger than this are compressed with product quantisation."
    )
    nlist: int | None = Field(None, ge=1, description="IVF cells (None: about 4·sqrt(templates)).")
    nprobe: int | None = Field(
        None, ge=1, description="IVF cells visited per search (None: 64 when building; when matching, the index's own)."
    )
    pq_bytes: int | None = Field(
        None, ge=1, description="IVF-PQ: bytes per compressed vector (None: dimension / 4, rounded to a divisor)."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per vector.")
    hnsw_ef_search: int = Field(256, ge=1, description="HNSW: candidate list size at search time.")
    train_size: int = Field(
        100_000, ge=1_000, description="Templates sampled (by id hash) to train IVF/PQ quantisers."
    )
    batch_size: int = Field(4096, ge=1, description="Templates embedded and added to the index at once.")


class MatchConfig(Section):
    """Document → candidate templates (DESIGN §2.3)."""

    threshold: float | None = Field(
        None, ge=-1, le=1, description="Minimum cosine; None takes the embedder's calibrated value."
    )
    candidates: int = Field(
        64, ge=1, description="Nearest templates fetched per document vector before the threshold is applied."
    )
    complexity_distribution: str = Field(
        "bank",
        description="Target complexity distribution of chosen templates: 'bank' (the bank's own), 'uniform', or a JSON file {complexity: weight}.",
    )
    seed: int = Field(0, description="Seed of the weighted template sampling.")
    batch_size: int = Field(64, ge=1, description="Documents embedded and searched together.")


class InstantiateConfig(Section):
    """Template + document → instruction + grounded answer (DESIGN §2.4)."""

    mode: Literal["prompted", "fineinstructions"] = Field(
        "prompted", description="'prompted' for any instruct LLM; 'fineinstructions' for the released instantiator."
    )
    llm: LLMConfig = LLMConfig()
    prompt: str = Field("instantiate-v1", description="prompted: a packaged prompt name or a prompt .toml file.")
    constraint: Literal["auto", "document", "schema", "none"] = Field(
        "auto",
        description="How decoding is held to the format — 'document' (a per-document grammar: every excerpt marker is real text of the document, the instruction is the template filled in; GBNF backends), 'schema' (JSON: null or {instruction, answer}), 'none', or 'auto' (document on llama.cpp, schema on other constraining backends).",
    )
    min_excerpt_ratio: float = Field(0.8, ge=0, le=1, description="Least share of the answer that must be excerpts.")
    max_excerpts: int = Field(3, ge=1, description="document constraint: most excerpt markers in one answer.")
    max_tokens: int = Field(320, ge=16, description="Tokens a model may write per pair (excerpt markers are compact).")
    shard_size: int = Field(32, ge=1, description="Documents per resumable shard (one completion marker each).")
    seed: int = Field(0, description="Seed sent with every request.")


class JudgeConfig(Section):
    """1–5 Likert judgement of each pair (DESIGN §2.5)."""

    llm: LLMConfig = LLMConfig()
    format: Literal["auto", "flow", "prompted"] = Field(
        "auto", description="'flow' (the Flow-Judge format), 'prompted' (a versioned prompt, JSON score) or 'auto' (flow for models named *flow-judge*)."
    )
    prompt: str | None = Field(None, description="A packaged prompt name or .toml file (None: judge-v1, or judge-flow-v1 for the flow format).")
    min_score: int = Field(4, ge=1, le=5, description="Keep pairs scored at least this.")
    max_tokens: int | None = Field(None, ge=1, description="Tokens a judge may write (None: 16 for a JSON score, 600 for flow feedback).")
    batch_size: int = Field(64, ge=1, description="Pairs sent to the model together.")


class PackConfig(Section):
    """Packing under the documents' token budget (DESIGN §2.6)."""

    tokenizer: str = Field(
        "embedded", description="'embedded', a .gguf path, or a Hugging Face tokenizer name/path."
    )
    seed: int = Field(0, description="Seed of the random order pairs are drawn in.")


class StageResources(Section):
    """How one stage runs on Ray: its worker pool and batches."""

    actors: int = Field(1, ge=1, description="Workers (Ray actors) the stage runs on; each loads its model or index once.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs Ray reserves for each worker (1 for a vLLM engine per GPU).")
    batch_size: int | None = Field(None, ge=1, description="Rows sent to a worker at once (None: the stage's own batch size).")


class RayConfig(Section):
    """The Ray executor (``--executor ray``): where the cluster is, and each stage's workers.

    Nothing here changes what a run produces, only where and how fast it runs, so a run
    may be resumed with other settings (or with the local executor)."""

    address: str | None = Field(None, description="Cluster to join ('auto', 'ray://host:10001'; None: start a local one).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local instance Ray starts when there is no address.")
    preserve_order: bool = Field(True, description="Results in input order, as the local executor gives them (False: faster, same rows).")
    read_cpus: float = Field(0.25, gt=0, description="CPUs Ray reserves for each file-reading task (beside the stages' workers).")
    templatize: StageResources = StageResources()
    index: StageResources = StageResources()
    match: StageResources = StageResources()
    instantiate: StageResources = StageResources()
    judge: StageResources = StageResources()
    pack: StageResources = StageResources()


class Config(Section):
    """The whole pipeline's configuration."""

    input: InputConfig = InputConfig()
    output: OutputConfig = OutputConfig()
    queries: QueriesConfig = QueriesConfig()
    templatize: TemplatizeConfig = TemplatizeConfig()
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    match: MatchConfig = MatchConfig()
    instantiate: InstantiateConfig = InstantiateConfig()
    judge: JudgeConfig = JudgeConfig()
    pack: PackConfig = PackConfig()
    ray: RayConfig = RayConfig()


def preset_names() -> list[str]:
    folder = resources.files("fineinstructions") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_preset(name: str) -> dict[str, Any]:
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    text = (resources.files("fineinstructions") / "presets" / f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a TOML or YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text("utf-8"))
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text("utf-8")) or {}
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


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(override: str) -> dict[str, Any]:
    """``"match.threshold=0.8"`` → ``{"match": {"threshold": 0.8}}`` (values read as YAML)."""
    import yaml

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} must look like section.field=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: Any = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(
    preset: str | None = DEFAULT_PRESET,
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
) -> Config:
    """Build and validate a :class:`Config` from a preset, files and overrides."""
    data: dict[str, Any] = _read_preset(preset) if preset else {}
    for path in files:
        data = _merge(data, read_config_file(path))
    for override in overrides:
        data = _merge(data, parse_override(override))
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_explain(error)) from None


def _explain(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field" + _suggestion(item["loc"])
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def _suggestion(location: tuple) -> str:
    model: type[BaseModel] = Config
    for part in location[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(model.model_fields)})"


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
