"""``fineinstructions run``: every stage, each into its own subfolder, resumably.

    OUT_DIR/
      templates/  index/  matches/  pairs/  judged/  dataset/
      stats.json  report.html  run.json

A stage is finished when its folder's ``stats.json`` exists (each stage writes it
last); a finished stage is skipped when the command runs again. The model stages
(instantiate, judge) also resume inside a stage, shard by shard (:mod:`.ledger`), and
every LLM call goes through a request cache beside its stage folder, so a run killed at
any point and started again loses no finished work, duplicates no row and repeats no
model call that had completed. ``run.json`` records the inputs and the configuration;
running into the same folder with different ones is refused unless ``--overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Sequence

from fineinstructions import __version__
from fineinstructions.config import Config, config_as_toml, output_fingerprint
from fineinstructions.errors import UserError
from fineinstructions.execution.outputs import (
    LOCK_NAME,
    changed_inputs,
    clear,
    folder_lock,
    input_state,
    refuse_changed_inputs,
    refuse_inputs_inside,
    run_folder,
)
from fineinstructions.io import write_json

STAGES = ("templates", "index", "matches", "pairs", "judged", "dataset")
GUARDED = ("queries", "templates", "documents", "config_sha256")  # what a resumed run must share


def run_fingerprint(config: Config, *, bank: bool) -> dict:
    """The fields that change a run's rows: the evaluation settings never do, and the
    bank's field names only when a bank is given (so runs started before they existed
    still resume)."""
    fingerprint = output_fingerprint(config)
    fingerprint.pop("evaluate", None)
    if not bank and "input" in fingerprint:
        fingerprint["input"] = {k: v for k, v in fingerprint["input"].items() if k != "templates"}
    return fingerprint


def _finished(folder: Path) -> dict | None:
    path = folder / "stats.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


READ_CHECK_FILES = 64  # files whose first rows are read before anything runs


def read_check(query_paths: Sequence[str | Path], document_paths: Sequence[str | Path], config: Config) -> None:
    """Fail before the first stage, not hours later at the stage that reads them, on what
    is wrong with the inputs as a whole: a missing path, an empty folder, an unknown
    format, a field name that the first rows do not have. Lists every file, and reads the
    first rows of the first :data:`READ_CHECK_FILES` of each kind (a bad row further in is
    still named, with its line, by the stage that reads it)."""
    from itertools import islice

    from fineinstructions.io import read_documents, read_queries
    from fineinstructions.io.readers import input_files

    for paths, reader, fields in ((query_paths, read_queries, config.input.query_fields()),
                                  (document_paths, read_documents, config.input.document_fields())):
        for file in input_files(paths)[:READ_CHECK_FILES] if paths else []:
            for _ in islice(reader([file], fields=fields, on_error=config.input.on_error), 3):
                pass


# The stages that read each kind of input first; work they finished is made from it.
_READERS = {"queries": ("templates", "index"), "templates": ("templates", "index"), "documents": STAGES[2:]}


def _progress(out: Path, changed: list[str], previous: dict) -> bool:
    """Whether a stage that reads one of the ``changed`` input files finished any work
    (then a resume would mix old and new rows); if none did, the run starts those stages
    afresh from the new files."""
    kinds = {kind for kind in _READERS for path in previous.get(kind, []) if any(p.startswith(path) for p in changed)}
    kinds = kinds or set(_READERS)  # a change not traced to one kind: every stage counts
    for stage in {s for kind in kinds for s in _READERS[kind]}:
        folder = out / stage
        if (folder / "stats.json").exists() or any(folder.rglob(".shards/[0-9]*.json")):
            return True
    return False


def _prepare(out: Path, manifest: dict, overwrite: bool, log: Callable[[str], None]) -> None:
    run_file = out / "run.json"
    if overwrite:
        clear(out, run_folder(STAGES), log=log)  # only what a run wrote; never an input
    elif run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if {k: previous.get(k, []) for k in GUARDED} != {k: manifest[k] for k in GUARDED}:
            raise UserError(
                f"{out} holds a run with other inputs or another configuration (see {run_file}).\n"
                "  fix: run with the same inputs and configuration to resume it, choose another "
                "output folder, or pass --overwrite to start again"
            )
        changed = changed_inputs(previous.get("input_files", {}))
        if changed and _progress(out, changed, previous):
            refuse_changed_inputs(changed, out)
        if not changed:
            manifest["input_files"] = previous.get("input_files", {})  # the first run's, which a resume checks
    elif out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
        raise UserError(
            f"{out} is not empty and holds no run.\n  fix: choose another output folder, or pass --overwrite "
            "to write the run beside what it holds (it deletes only what fineinstructions wrote)"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest, run_file)


def run_pipeline(
    query_paths: Sequence[str | Path],
    document_paths: Sequence[str | Path],
    output: str | Path,
    config: Config,
    *,
    templates: Sequence[str | Path] = (),
    overwrite: bool = False,
    show_progress: bool = True,
    report: Callable[[Path], Path] | None = None,
    audit: Callable[[Path], dict] | None = None,
    executor=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the whole pipeline into ``output``; returns the run's stats.

    The bank is made from ``query_paths``, or is ``templates`` (any table of templates,
    read with ``config.input.templates``), or both merged (exact repeats once).

    ``executor`` runs the stages' batches (default: in this process; a
    :class:`~fineinstructions.execution.executor.RayExecutor` runs them on a cluster).
    The same inputs and configuration give the same rows either way. ``audit``
    re-checks the dataset folder and ``report`` writes the run's report when it ends
    (the interface passes its audit and its HTML report writer)."""
    from fineinstructions.execution.executor import LocalExecutor
    from fineinstructions.execution.index import run_index
    from fineinstructions.execution.instantiate import run_instantiate
    from fineinstructions.execution.judge import run_judge
    from fineinstructions.execution.match import run_match
    from fineinstructions.execution.pack import run_pack
    from fineinstructions.execution.runner import beside, resolved
    from fineinstructions.execution.templatize import run_templatize

    executor = executor or LocalExecutor()
    out = Path(output)
    config_text = config_as_toml(config)
    # Only the fields that change rows guard a resume: a run may resume on another
    # executor, with other timeouts, batch or shard sizes, or another server address.
    output_config = json.dumps(run_fingerprint(config, bank=bool(templates)), sort_keys=True)
    manifest = {
        "fineinstructions": __version__,
        "queries": [resolved(p) for p in query_paths],
        "templates": [resolved(p) for p in templates],
        "documents": [resolved(p) for p in document_paths],
        "config_sha256": hashlib.sha256(output_config.encode("utf-8")).hexdigest(),
        "config": config_text,
        "executor": executor.kind,
        # What a resume must find unchanged (each input file's size and modification time).
        "input_files": input_state([*query_paths, *templates, *document_paths]),
    }
    # A backend that cannot run here (a llama.cpp build that crashes on this CPU) fails
    # before anything is written, not at the stage that first loads it.
    from fineinstructions.models.factory import check_llm

    sections = ([config.templatize] if query_paths else []) + [config.instantiate, config.judge]
    for llm in {json.dumps(s.llm.model_dump(), sort_keys=True): s.llm for s in sections}.values():
        check_llm(llm)
    refuse_inputs_inside(out, [*query_paths, *templates, *document_paths])
    read_check(query_paths, document_paths, config)
    with folder_lock(out, "run"):  # one process per run folder
        _prepare(out, manifest, overwrite, log)
        folders = {name: out / name for name in STAGES}
        started = time.monotonic()
        stage_seconds: dict[str, float] = {}

        def stage(name: str, work: Callable[[], dict]) -> dict:
            done = _finished(folders[name])
            if done is not None:
                log(f"[{name}] finished in an earlier run; kept")
                return done
            log(f"[{name}] running")
            tick = time.monotonic()
            result = work()
            stage_seconds[name] = round(time.monotonic() - tick, 2)
            return result

        options = dict(show_progress=show_progress, log=log, executor=executor)
        made = None
        if query_paths:
            made = stage("templates", lambda: run_templatize(query_paths, folders["templates"], config, **options))
            if not made["templatize"]["out"] and not templates:
                raise UserError(
                    f"no valid template was made from {', '.join(map(str, query_paths))}; see "
                    f"{beside(folders['templates'], '.rejects.jsonl')} for why each query was rejected"
                )
        bank = ([folders["templates"]] if query_paths else []) + list(templates)
        index = stage("index", lambda: run_index(bank, folders["index"], config, **options))
        matches = stage(
            "matches", lambda: run_match(document_paths, folders["index"], folders["matches"], config, **options)
        )
        pairs = stage(
            "pairs",
            lambda: run_instantiate(
                [folders["matches"]], [folders["templates"]] if query_paths else [], document_paths, folders["pairs"], config,
                **options,
            ),
        )
        judged = stage("judged", lambda: run_judge([folders["pairs"]], folders["judged"], config, **options))
        dataset = stage(
            "dataset",
            lambda: run_pack(
                [folders["judged"]], document_paths, folders["dataset"], config, executor=executor, log=log
            ),
        )
        stats = summarize(made, index, matches, pairs, judged, dataset)
        if audit:
            checked = audit(folders["dataset"])
            stats["audit"] = {k: checked[k] for k in ("passed", "failed_hard_rules", "pairs")}
            log(f"audit: {'passed' if checked['passed'] else 'FAILED: ' + ', '.join(checked['failed_hard_rules'])}"
                f" (see {folders['dataset'] / 'audit.json'})")
        stats["seconds_this_run"] = round(time.monotonic() - started, 2)
        stats["stage_seconds_this_run"] = stage_seconds
        write_json(stats, out / "stats.json")
        if report:
            log(f"report: {report(out)}")
        return stats


def _step(stats: dict, *keys: str) -> dict:
    step = {k: stats[k] for k in ("in", "out", "skipped", "failed") if k in stats}
    step.update({k: stats[k] for k in keys if k in stats})
    return step


def summarize(templates: dict | None, index: dict, matches: dict, pairs: dict, judged: dict, dataset: dict) -> dict:
    """The run's ``stats.json``: every stage's counts (``in = out + skipped + failed``),
    throughput and tokens, and the funnel from matches to packed pairs. ``templates`` is
    None for a run that indexed a bank without templatizing queries."""
    m, i, j, p = matches["match"], pairs["instantiate"], judged["judge"], dataset["pack"]
    documents = m["in"]
    grounded = i["out"]
    return {
        "stages": {
            **({
                "filter_queries": templates["filter_queries"],
                "templatize": _step(
                    templates["templatize"], "model", "prompt_version", "constraint", "seconds", "wall_seconds", "queries_per_s",
                    "queries_per_s_per_worker", "prompt_tokens", "cached_prompt_tokens", "completion_tokens",
                    "completion_tokens_per_s", "completion_tokens_per_s_per_worker",
                ),
            } if templates is not None else {}),
            "index": _step(index["index"], "kind", "embedder", "seconds", "templates_per_s"),
            "match": _step(
                m, "matches", "matches_per_document", "matches_per_document_histogram", "distinct_templates",
                "threshold", "embedder", "seconds", "wall_seconds", "documents_per_s", "documents_per_s_per_worker",
                "tokens_per_s", "tokens_per_s_per_worker",
            ),
            "instantiate": _step(
                i, "documents", "truncated_documents", "model", "prompt_version", "constraint", "markers",
                "unresolved_markers", "ambiguous_markers", "unresolved_marker_rate", "prompt_tokens",
                "cached_prompt_tokens", "cached_prompt_fraction", "completion_tokens", "model_calls", "cache_hits",
                "seconds", "wall_seconds", "pairs_per_s", "pairs_per_s_per_worker", "tokens_per_s", "tokens_per_s_per_worker",
                "completion_tokens_per_s", "completion_tokens_per_s_per_worker",
            ),
            "judge": _step(
                j, "score_histogram", "min_score", "score", "expected_scores", "min_relevance", "unscored_relevance",
                "model", "format", "prompt_version", "prompt_tokens",
                "cached_prompt_tokens", "completion_tokens", "model_calls", "cache_hits", "seconds", "wall_seconds",
                "pairs_per_s", "pairs_per_s_per_worker",
            ),
            "pack": _step(p, "documents", "budget_tokens", "kept_tokens", "carry_over_tokens", "tokenizer", "seconds"),
        },
        "funnel": {
            "documents": documents,
            "matches": m["matches"],
            "instantiated": i["in"] - sum(i["skipped"].values()) - sum(
                v for k, v in i["failed"].items() if k in ("truncated", "invalid_output", "backend_error", "context_overflow")
            ),
            "grounded": grounded,
            "judged_kept": j["out"],
            "packed": p["out"],
            "pairs_per_document": round(p["out"] / documents, 4) if documents else None,
        },
        # The bank that was indexed (templates made from queries, a bank given, or both).
        "complexity_histogram": index.get("complexity_histogram") or (templates or {}).get("complexity_histogram", {}),
    }
