"""The sections of the pipeline's configuration: one frozen, documented model per stage.

A field marked ``json_schema_extra=AFFECTS_OUTPUT`` changes the rows a stage writes
(see :data:`fineinstructions.config.base.AFFECTS_OUTPUT`); the others change only how a
run goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from fineinstructions.config.base import AFFECTS_OUTPUT, Section
from fineinstructions.config.llm import AnyLLMConfig, LlamaCppConfig

if TYPE_CHECKING:
    from fineinstructions.io.readers import FieldMapping, TemplateFieldMapping


class DocumentFields(Section):
    """Which fields of an input row hold its text, id and source."""

    text_field: str = Field("text", description="Field holding the row's text.", json_schema_extra=AFFECTS_OUTPUT)
    id_field: str = Field("id", description="Field holding the row id; rows without one get a content hash.", json_schema_extra=AFFECTS_OUTPUT)
    source_field: str = Field("source", description="Field naming the row's source; defaults to the file name.", json_schema_extra=AFFECTS_OUTPUT)


class QueryFields(DocumentFields):
    """Which fields of a query row hold its text, id, source, or its chat."""

    messages_field: str = Field(
        "messages", description="Field holding a chat's list of {role, content} messages.", json_schema_extra=AFFECTS_OUTPUT
    )


class TemplateFields(Section):
    """Which fields of a template bank's rows hold what (``fineinstructions index`` reads
    any table of templates: this package's bank, the released one, a team's own)."""

    template_field: str = Field(
        "template", description="Field holding the template text (variables as <fi>...</fi>).", json_schema_extra=AFFECTS_OUTPUT
    )
    description_field: str = Field(
        "compatible_document_description", description="Field holding the description of documents that could answer it.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    id_field: str = Field(
        "id", description="Field holding the template id; rows without one get a hash of template and description.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    query_field: str = Field(
        "query", description="Field holding the query the template was made from, if the bank has one (its genericity is then checked against it).",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    query_id_field: str = Field("query_id", description="Field holding the id of that query, if any.", json_schema_extra=AFFECTS_OUTPUT)
    source_field: str = Field("source", description="Field naming the row's source; defaults to the file name.", json_schema_extra=AFFECTS_OUTPUT)


class InputConfig(Section):
    """How input files are read: queries and documents each with their own field names.

    ``text_field``, ``id_field`` and ``source_field`` given directly in ``[input]`` set
    both kinds; ``messages_field`` sets the queries'.
    """

    shorthands = {
        "text_field": ("queries.text_field", "documents.text_field"),
        "id_field": ("queries.id_field", "documents.id_field"),
        "source_field": ("queries.source_field", "documents.source_field"),
        "messages_field": ("queries.messages_field",),
    }

    on_error: Literal["raise", "skip"] = Field(
        "raise", description="'raise' stops at the first bad row; 'skip' counts bad rows and goes on.", json_schema_extra=AFFECTS_OUTPUT
    )
    queries: QueryFields = QueryFields()
    documents: DocumentFields = DocumentFields()
    templates: TemplateFields = TemplateFields()

    def query_fields(self) -> FieldMapping:
        from fineinstructions.io.readers import FieldMapping

        q = self.queries
        return FieldMapping(text=q.text_field, id=q.id_field, source=q.source_field, messages=q.messages_field)

    def document_fields(self) -> FieldMapping:
        from fineinstructions.io.readers import FieldMapping

        d = self.documents
        return FieldMapping(text=d.text_field, id=d.id_field, source=d.source_field)

    def template_fields(self) -> TemplateFieldMapping:
        from fineinstructions.io.readers import TemplateFieldMapping

        t = self.templates
        return TemplateFieldMapping(
            template=t.template_field, description=t.description_field, id=t.id_field, query=t.query_field,
            query_id=t.query_id_field, source=t.source_field,
        )

class OutputConfig(Section):
    """How outputs are written."""

    format: Literal["parquet", "jsonl"] = Field("parquet", description="Shard file format.", json_schema_extra=AFFECTS_OUTPUT)
    rows_per_shard: int = Field(50_000, ge=1, description="Rows per output shard.")


class QueriesConfig(Section):
    """Which queries reach the templatizer (DESIGN §2.1): deduplication, decontamination
    against protected evaluation prompts, and a harmful-content filter."""

    exact_dedup: bool = Field(True, description="Drop queries equal after normalising case and whitespace.", json_schema_extra=AFFECTS_OUTPUT)
    near_dedup_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Drop queries whose estimated Jaccard similarity (MinHash) to a kept one is at least this; null turns it off.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    minhash_permutations: int = Field(128, ge=8, le=1024, description="MinHash signature length.", json_schema_extra=AFFECTS_OUTPUT)
    shingle_size: int = Field(5, ge=1, description="Characters per shingle for near-duplicate detection.", json_schema_extra=AFFECTS_OUTPUT)
    protected: tuple[str, ...] = Field(
        (), description="Files of protected evaluation prompts; a query overlapping one is dropped.", json_schema_extra=AFFECTS_OUTPUT
    )
    protected_text_field: str = Field("text", description="Field holding a protected prompt's text.", json_schema_extra=AFFECTS_OUTPUT)
    decontamination_ngram: int = Field(13, ge=1, description="Tokens in the n-grams compared with protected prompts.", json_schema_extra=AFFECTS_OUTPUT)
    moderation: Literal["offline", "openai", "off"] = Field(
        "offline", description="Harmful-content filter: offline lexicon (no network), an OpenAI-compatible moderation endpoint, or off.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    moderation_base_url: str = Field("https://api.openai.com/v1", description="openai moderation: the server's base URL.")
    moderation_model: str = Field("omni-moderation-latest", description="openai moderation: the model name.", json_schema_extra=AFFECTS_OUTPUT)
    moderation_api_key_env: str | None = Field("OPENAI_API_KEY", description="openai moderation: environment variable holding the API key.")


class TemplatizeConfig(Section):
    """Query → template + compatible document description (DESIGN §2.2)."""

    mode: Literal["prompted", "fineinstructions"] = Field(
        "prompted", description="'prompted' for any instruct LLM; 'fineinstructions' for the released templatizer.", json_schema_extra=AFFECTS_OUTPUT
    )
    llm: AnyLLMConfig = LlamaCppConfig()
    prompt: str = Field("templatize-v1", description="prompted: a packaged prompt name or a prompt .toml file.", json_schema_extra=AFFECTS_OUTPUT)
    constraint: Literal["auto", "query", "pattern", "none"] = Field(
        "auto",
        description="prompted: how decoding is held to the format — 'query' (the template is the query with words replaced by tags; llama.cpp), 'pattern' (at least one <fi> tag), 'none', or 'auto'.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    max_tokens: int | None = Field(
        None, ge=16, description="Tokens a model may write per query (default: by the query's length).", json_schema_extra=AFFECTS_OUTPUT
    )
    batch_size: int = Field(16, ge=1, description="Queries sent to the model together (and between progress updates).")
    shard_size: int = Field(
        256, ge=1, description="Filtered queries per shard (the unit of work, retry and resume; a resumed run keeps its first plan)."
    )


class EmbedConfig(Section):
    """Document and template embedding with Gaussian pooling (DESIGN §2.3)."""

    model: str = Field(
        "embedded", description="'embedded' (all-MiniLM-L6-v2) or a sentence-transformers name/path.", json_schema_extra=AFFECTS_OUTPUT
    )
    num_chunks: int = Field(5, ge=0, description="K, the number of Gaussian-pooled local vectors per document.", json_schema_extra=AFFECTS_OUTPUT)
    sigma: float = Field(0.05, gt=0, description="Kernel width as a fraction of the document's length.", json_schema_extra=AFFECTS_OUTPUT)
    alpha: float = Field(1.0, ge=0, le=1, description="Blend of local (1.0) and global (0.0) vectors.", json_schema_extra=AFFECTS_OUTPUT)
    batch_size: int = Field(32, ge=1, description="Windows of text run through the model at once.")
    window_overlap: int = Field(32, ge=0, description="Tokens shared by consecutive windows of a long document.", json_schema_extra=AFFECTS_OUTPUT)
    max_tokens: int | None = Field(
        32768,
        ge=1,
        description="Embed at most this many tokens of a document, from its start (None: the whole document, however long). "
        "Bounds a document's time and memory in match (a 5 MB page is about a million tokens); a cut document is counted in "
        "match's truncated_documents. Nearly every web document fits 32768 tokens whole.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    device: str | None = Field(None, description="Torch device ('cpu', 'cuda', ...); None picks a GPU when there is one.")


class IndexConfig(Section):
    """The FAISS index of template descriptions (DESIGN §2.3)."""

    kind: Literal["auto", "flat", "ivf", "ivfsq", "ivfpq", "hnsw"] = Field(
        "auto",
        description="'flat' (exact), 'ivf', 'ivfsq' (8-bit), 'ivfpq' (product-quantised) or 'hnsw'; 'auto' picks flat up to flat_limit templates, hnsw up to hnsw_limit, ivfsq up to ivfpq_above, ivfpq beyond.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    flat_limit: int = Field(100_000, ge=1, description="auto: largest bank indexed exactly.", json_schema_extra=AFFECTS_OUTPUT)
    hnsw_limit: int = Field(
        2_000_000, ge=1, description="auto: largest bank given an HNSW graph (about 4·d + 270 bytes a template).", json_schema_extra=AFFECTS_OUTPUT
    )
    ivfpq_above: int = Field(
        10_000_000, ge=1, description="auto: banks larger than this are compressed with product quantisation.", json_schema_extra=AFFECTS_OUTPUT
    )
    nlist: int | None = Field(None, ge=1, description="IVF cells (None: about 4·sqrt(templates)).", json_schema_extra=AFFECTS_OUTPUT)
    nprobe: int | None = Field(
        None, ge=1, description="IVF cells visited per search (None: 64 when building; when matching, the index's own).", json_schema_extra=AFFECTS_OUTPUT
    )
    pq_bytes: int | None = Field(
        None, ge=1, description="IVF-PQ: bytes per compressed vector (None: dimension / 4, rounded to a divisor).", json_schema_extra=AFFECTS_OUTPUT
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per vector.", json_schema_extra=AFFECTS_OUTPUT)
    hnsw_ef_search: int = Field(256, ge=1, description="HNSW: candidate list size at search time.", json_schema_extra=AFFECTS_OUTPUT)
    train_size: int = Field(
        100_000, ge=1_000, description="Templates sampled (by id hash) to train IVF/PQ quantisers.", json_schema_extra=AFFECTS_OUTPUT
    )
    batch_size: int = Field(4096, ge=1, description="Templates embedded and added to the index at once.")
    shard_size: int = Field(
        10_000, ge=1, description="Templates per shard of the embedding step: a killed build resumes from its last finished shard."
    )


class MatchConfig(Section):
    """Document → candidate templates (DESIGN §2.3)."""

    threshold: float | None = Field(
        None, ge=-1, le=1, description="Minimum cosine; None takes the embedder's calibrated value.", json_schema_extra=AFFECTS_OUTPUT
    )
    candidates: int = Field(
        64, ge=1, description="Nearest templates fetched per document vector before the threshold is applied.", json_schema_extra=AFFECTS_OUTPUT
    )
    complexity_distribution: str = Field(
        "bank",
        description="Target complexity distribution of chosen templates: 'bank' (the bank's own), 'uniform', or a JSON file {complexity: weight}.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    seed: int = Field(0, description="Seed of the weighted template sampling.", json_schema_extra=AFFECTS_OUTPUT)
    batch_size: int = Field(64, ge=1, description="Documents embedded and searched together.")


class InstantiateConfig(Section):
    """Template + document → instruction + grounded answer (DESIGN §2.4)."""

    mode: Literal["prompted", "fineinstructions"] = Field(
        "prompted", description="'prompted' for any instruct LLM; 'fineinstructions' for the released instantiator.", json_schema_extra=AFFECTS_OUTPUT
    )
    llm: AnyLLMConfig = LlamaCppConfig()
    prompt: str = Field("instantiate-v1", description="prompted: a packaged prompt name or a prompt .toml file.", json_schema_extra=AFFECTS_OUTPUT)
    constraint: Literal["auto", "document", "schema", "none"] = Field(
        "auto",
        description="How decoding is held to the format — 'document' (a per-document grammar: every excerpt marker is real text of the document, the instruction is the template filled in; GBNF backends), 'schema' (JSON: null or {instruction, answer}), 'none', or 'auto' (document on llama.cpp, schema on other constraining backends).",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    min_excerpt_ratio: float = Field(0.8, ge=0, le=1, description="Least share of the answer that must be excerpts.", json_schema_extra=AFFECTS_OUTPUT)
    max_excerpts: int = Field(3, ge=1, description="document constraint: most excerpt markers in one answer.", json_schema_extra=AFFECTS_OUTPUT)
    max_tokens: int = Field(
        320, ge=16, description="Tokens a model may write per pair (excerpt markers are compact).", json_schema_extra=AFFECTS_OUTPUT
    )
    shard_size: int = Field(
        32, ge=1,
        description="Documents per shard: match cuts the corpus into pieces this size, and instantiate, judge and pack follow them (the unit of work, retry and resume; a resumed run keeps its first plan).",
    )
    seed: int = Field(0, description="Seed sent with every request.", json_schema_extra=AFFECTS_OUTPUT)
    region_window: float | None = Field(
        0.15, ge=0, le=1,
        description="Excerpts of a template retrieved by a local (Gaussian-pooled) vector start within this share of the document either side of that chunk's centre (at least the 3 nearest sentences; the global vector: anywhere). None: anywhere.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    relevance: bool = Field(
        True,
        description="Score each pair's relevance (the [embed] model's similarity of instruction to answer and to the passage around it), for judge.min_relevance and the audit.",
        json_schema_extra=AFFECTS_OUTPUT,
    )


class JudgeConfig(Section):
    """1–5 Likert judgement of each pair (DESIGN §2.5)."""

    llm: AnyLLMConfig = LlamaCppConfig()
    format: Literal["auto", "flow", "prompted"] = Field(
        "auto",
        description="'flow' (the Flow-Judge format), 'prompted' (a versioned prompt, JSON score) or 'auto' (flow for models named *flow-judge*).",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    prompt: str | None = Field(
        None,
        description="A packaged prompt name or .toml file (None: judge-v1, or judge-flow-v1 for the flow format).",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    min_score: float = Field(
        4, ge=1, le=5,
        description="Keep pairs scored at least this (the expected score where the backend reports log-probabilities, else the score written).",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    score: Literal["expected", "argmax"] = Field(
        "expected",
        description="'expected': the mean of 1–5 under the judge's probabilities of the score tokens (backends that report log-probabilities; others fall back to the written score); 'argmax': the score it writes.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    min_relevance: float | None = Field(
        None, ge=-1, le=1,
        description="Relevance gate: skip pairs whose instruction-answer similarity (set by instantiate.relevance) is below this, as irrelevant_answer, before the judge is asked (None: off). The value depends on the embedder; calibrate it with benchmarks/quality.py.",
        json_schema_extra=AFFECTS_OUTPUT,
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Tokens a judge may write (None: 16 for a JSON score, 600 for flow feedback).", json_schema_extra=AFFECTS_OUTPUT
    )
    batch_size: int = Field(64, ge=1, description="Pairs sent to the model together.")


class EvaluateConfig(Section):
    """Free-form evaluation of pre-trained models (``fineinstructions evaluate``); it
    changes evaluation figures, never the pipeline's rows."""

    llm: AnyLLMConfig = LlamaCppConfig()
    compare_prompt: str = Field(
        "compare-v1", description="Head-to-head judge prompt: a packaged name or a .toml file.", json_schema_extra=AFFECTS_OUTPUT
    )
    grade_prompt: str = Field(
        "grade-v1", description="Single-answer 1-10 grading prompt: a packaged name or a .toml file.", json_schema_extra=AFFECTS_OUTPUT
    )
    max_new_tokens: int = Field(
        256, ge=1, description="Most tokens a model under test generates per answer.", json_schema_extra=AFFECTS_OUTPUT
    )
    bootstrap: int = Field(
        1000, ge=10, description="Bootstrap resamples for the win rate's confidence interval.", json_schema_extra=AFFECTS_OUTPUT
    )
    seed: int = Field(0, description="Seed of the bootstrap.", json_schema_extra=AFFECTS_OUTPUT)


class PackConfig(Section):
    """Packing under the documents' token budget (DESIGN §2.6)."""

    tokenizer: str = Field(
        "embedded", description="'embedded', a .gguf path, or a Hugging Face tokenizer name/path.", json_schema_extra=AFFECTS_OUTPUT
    )
    seed: int = Field(0, description="Seed of the random order pairs are drawn in.", json_schema_extra=AFFECTS_OUTPUT)


class StageResources(Section):
    """How one stage runs on Ray: its worker pool and batches."""

    actors: int = Field(1, ge=1, description="Workers (Ray actors) the stage runs on; each loads its model or index once.")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves for each worker.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs Ray reserves for each worker (1 for a vLLM engine per GPU).")


class RayConfig(Section):
    """The Ray executor (``--executor ray``): where the cluster is, and each stage's workers.

    Nothing here changes what a run produces, only where and how fast it runs, so a run
    may be resumed with other settings (or with the local executor)."""

    address: str | None = Field(None, description="Cluster to join ('auto', 'ray://host:10001'; None: start a local one).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local instance Ray starts when there is no address.")
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
    evaluate: EvaluateConfig = EvaluateConfig()
    ray: RayConfig = RayConfig()
