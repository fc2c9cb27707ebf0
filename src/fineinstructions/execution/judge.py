"""``judge``: pairs → the pairs scoring at least ``judge.min_score``, one shard per pairs shard.

Judged shard *i* is pairs shard *i* judged (and carries its document piece on, for
``pack``). Pairs not written by ``instantiate`` (no markers) are judged one file per
shard. Resume: see :mod:`.runner`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.execution.instantiate import token_rates
from fineinstructions.execution.ledger import data_files, upstream_markers
from fineinstructions.execution.runner import beside, resolved, run_stage, stage_prompt
from fineinstructions.execution.shards import from_upstream, plan_files
from fineinstructions.io import write_json
from fineinstructions.records import PairRow
from fineinstructions.stages.base import outcomes
from fineinstructions.stages.llm_stages import JudgeStage


def run_judge(
    pair_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    llm: Any = None,
    executor: Any = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Judge every pair; returns the stats also written to ``output/stats.json``."""
    section = config.judge
    for path in map(Path, pair_paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")

    def plan():
        if len(pair_paths) == 1 and (markers := upstream_markers(pair_paths[0])) is not None:
            return from_upstream(pair_paths[0], markers, "rows", PairRow)
        return plan_files(data_files(pair_paths), PairRow)

    stage = JudgeStage(config, llm=llm, prompt=stage_prompt(config.judge))
    judge = stage.describe()
    log(
        f"judge: {judge.model}, {judge.format} format, prompt {judge.prompt_version}, "
        f"keep {judge.score} score >= {judge.min_score}"
        + (f", relevance >= {judge.min_relevance}" if judge.min_relevance is not None else "")
        + f", executor {getattr(executor, 'kind', 'local')}"
    )
    out = Path(output)
    run = run_stage(
        stage, plan, out,
        inputs={"pairs": [resolved(p) for p in pair_paths]},
        format=config.output.format,
        cache=beside(out, ".cache.sqlite") if section.llm.cache else None,
        overwrite=overwrite, executor=executor, show_progress=show_progress, unit="pairs", log=log,
    )
    c = run.counts
    stats = {
        "judge": {
            **outcomes(c),
            "score_histogram": {str(k): c.get(f"score:{k}", 0) for k in range(1, 6)},
            "min_score": judge.min_score,
            "score": judge.score,
            "expected_scores": c.get("expected_scores", 0),
            "min_relevance": judge.min_relevance,
            "unscored_relevance": c.get("unscored_relevance", 0),
            # pairs that came without a relevance score and were scored here for the gate
            "relevance_scored": c.get("relevance_scored", 0),
            "model": judge.model,
            "format": judge.format,
            "prompt_version": judge.prompt_version,
            "shards": len(run.markers),
            **token_rates(run, "in"),
        }
    }
    write_json(stats, out / "stats.json")
    return stats
