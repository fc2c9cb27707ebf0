"""The three stages that call an LLM, on the one :class:`~.base.Stage` contract.

Each wraps the rules of its stage (:class:`~.templatize.Templatizer`,
:class:`~.instantiate.Instantiator`, :class:`~.judge.Judge`): ``open`` builds the
configured backend behind the worker's request cache, ``process`` turns a batch into a
:class:`~.base.StageBatch`. A ready backend may be given instead (tests pass a scripted
one); it is used in this process only and never shipped to a cluster worker.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from fineinstructions.config import Config
from fineinstructions.records import DocumentRow, MatchRow, PairRow, QueryRow, TemplateRow
from fineinstructions.stages.base import Stage, StageBatch, Worker


class LLMStage(Stage):
    """A stage holding one LLM (and so one request cache) per worker, and, where the
    stage scores relevance (:meth:`scores_relevance`), the run's embedder."""

    section_name: str
    relevance: Any = None  # the worker's RelevanceScorer, when the stage scores relevance

    def scores_relevance(self) -> bool:
        return False

    def __init__(self, config: Config, *, llm: Any = None, prompt: Any = None) -> None:
        self.config = config
        self.ready = llm
        self.llm: Any = None
        self.rules: Any = None
        self.owns_llm = False
        # The prompt file is read by whoever builds the stage (the runner), once, and the
        # loaded prompt travels with the stage to its workers: a stage reads no file.
        self.prompt = prompt

    @property
    def section(self) -> Any:
        return getattr(self.config, self.section_name)

    def build(self, llm: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> Any:
        """The stage's rules on the configured model, without loading it (to log what runs)."""
        if self.ready is not None:
            return self.build(self.ready)
        from fineinstructions.models.factory import make_llm

        return self.build(make_llm(self.section.llm))

    def check(self) -> None:
        if self.ready is None:
            from fineinstructions.models.factory import check_llm

            check_llm(self.section.llm)

    def open(self, worker: Worker) -> None:
        if self.ready is not None:
            self.llm, self.owns_llm = self.ready, False
        else:
            from fineinstructions.models.factory import make_llm

            self.llm = make_llm(self.section.llm, cache_path=worker.cache, shared_cache=worker.shared_cache)
            self.owns_llm = True
        self.rules = self.build(self.llm)
        if self.scores_relevance():
            from fineinstructions.models.embedder import make_embedder
            from fineinstructions.stages.relevance import RelevanceScorer

            self.relevance = RelevanceScorer(make_embedder(self.config.embed))

    def close(self) -> None:
        if self.owns_llm and self.llm is not None:
            self.llm.close()
        self.llm = self.rules = self.relevance = None

    def __getstate__(self) -> dict:
        # What a cluster worker receives: the configuration, never a loaded model.
        return {**self.__dict__, "ready": None, "llm": None, "rules": None, "owns_llm": False, "relevance": None}

    def settings(self) -> dict[str, Any]:
        from fineinstructions.config import output_fingerprint

        settings = output_fingerprint(self.section)
        if self.scores_relevance():
            settings["relevance_embedder"] = self.config.embed.model
        return settings

    def _call(self, work: Any, kept: str, skipped: str | None = None) -> tuple[StageBatch, Any]:
        """Run the rules on ``work``; the batch's outcomes (``kept``: the result's field of
        kept rows; ``skipped``: its counter of skip reasons, the rest of the rejects being
        failures), tokens, model calls and cache hits, and the rules' own result."""
        hits, misses = getattr(self.llm, "hits", 0), getattr(self.llm, "misses", 0)
        tick = time.monotonic()
        result = self.rules(work)
        out = StageBatch()
        for row in getattr(result, kept):
            out.keep(row)
        skip_reasons = getattr(result, skipped) if skipped else ()
        for reject in result.rejects:
            (out.skip if reject.reason in skip_reasons else out.fail)(reject.reason, reject)
        out.add(
            prompt_tokens=result.prompt_tokens,
            cached_prompt_tokens=result.cached_tokens,
            completion_tokens=result.completion_tokens,
            model_calls=getattr(self.llm, "misses", misses + out.counts["in"]) - misses,
            cache_hits=getattr(self.llm, "hits", 0) - hits,
            model_seconds=round(time.monotonic() - tick, 3),
        )
        return out, result


class TemplatizeStage(LLMStage):
    """Queries → templates (duplicates of earlier templates are removed after, in order)."""

    name = "templatize"
    version = "1"
    output = TemplateRow
    section_name = "templatize"

    def __init__(self, config: Config, *, llm: Any = None, prompt: Any = None) -> None:
        super().__init__(config, llm=llm, prompt=prompt)
        self.batch_size = config.templatize.batch_size

    def build(self, llm: Any) -> Any:
        from fineinstructions.stages.templatize import Templatizer

        s = self.section
        return Templatizer(llm, mode=s.mode, prompt=self.prompt or s.prompt, constraint=s.constraint, max_tokens=s.max_tokens)

    def process(self, batch: Sequence[QueryRow]) -> StageBatch:
        out, result = self._call(batch, "templates")
        for template in result.templates:
            out.add(**{f"complexity:{template.complexity}": 1})
        return out


def _template(match: MatchRow) -> TemplateRow:
    return TemplateRow(
        id=match.template_id, query_id=match.query_id, source="", template=match.template,
        compatible_document_description="", variables=tuple(match.variables), complexity=len(set(match.variables)),
        model="", prompt_version="",
    )


class InstantiateStage(LLMStage):
    """(document, its matches) → grounded pairs. Matches carry their template's text
    (the reader completes those written without it from the bank)."""

    name = "instantiate"
    version = "1"
    output = PairRow
    section_name = "instantiate"
    batch_size = 8  # documents whose requests go to the model together

    def scores_relevance(self) -> bool:
        return bool(self.section.relevance)

    def build(self, llm: Any) -> Any:
        from fineinstructions.stages.instantiate import Instantiator

        s = self.section
        return Instantiator(
            llm, mode=s.mode, prompt=self.prompt or s.prompt, constraint=s.constraint, min_excerpt_ratio=s.min_excerpt_ratio,
            max_tokens=s.max_tokens, max_excerpts=s.max_excerpts, context_window=s.llm.n_ctx, seed=s.seed,
            region_window=s.region_window, num_chunks=self.config.embed.num_chunks,
        )

    def settings(self) -> dict[str, Any]:
        settings = super().settings()
        if self.section.region_window is not None:
            settings["num_chunks"] = self.config.embed.num_chunks
        return settings

    def process(self, batch: Sequence[tuple[DocumentRow, list[MatchRow]]]) -> StageBatch:
        work = []
        for document, matches in batch:
            ordered = sorted(matches, key=lambda m: m.chunk)
            if ordered:
                work.append((document, [_template(m) for m in ordered], [m.chunk for m in ordered]))
        out, result = self._call(work, "pairs", "skipped")
        if self.relevance is not None:
            texts = {document.id: document.text for document, _, _ in work}
            out.rows = self.relevance(out.rows, texts)
        out.add(
            documents=result.documents, truncated_documents=result.truncated_documents, markers=result.markers,
            unresolved_markers=result.unresolved_markers, ambiguous_markers=result.ambiguous_markers,
        )
        return out


class JudgeStage(LLMStage):
    """Pairs → the pairs that score at least ``judge.min_score``."""

    name = "judge"
    version = "1"
    output = PairRow
    section_name = "judge"

    def __init__(self, config: Config, *, llm: Any = None, prompt: Any = None) -> None:
        super().__init__(config, llm=llm, prompt=prompt)
        self.batch_size = config.judge.batch_size

    def build(self, llm: Any) -> Any:
        from fineinstructions.stages.judge import Judge

        s = self.section
        return Judge(
            llm, format=s.format, prompt=self.prompt or s.prompt, min_score=s.min_score, score=s.score,
            min_relevance=s.min_relevance, max_tokens=s.max_tokens,
        )

    def scores_relevance(self) -> bool:
        # The gate means the same whatever made the pairs: a pair without a relevance
        # score (another tool's, an older run's) is scored here, as instantiate does.
        return self.section.min_relevance is not None

    def process(self, batch: Sequence[PairRow]) -> StageBatch:
        scored_here = 0
        if self.relevance is not None:
            scored_here = sum(pair.relevance is None for pair in batch)
            batch = self.relevance.score_missing(batch)
        out, result = self._call(batch, "kept", "skipped")
        out.add(relevance_scored=scored_here)
        out.add(**{f"score:{k}": v for k, v in result.scores.items()})
        out.add(expected_scores=result.expected_scores, unscored_relevance=result.unscored_relevance)
        return out
