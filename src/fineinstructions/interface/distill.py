"""``fineinstructions distill``: silver data for a helper, made by the pipeline's own
stages with a teacher LLM (DESIGN §7), resumably.

    SILVER/
      part-NNNNN.parquet   the silver examples (see :mod:`..experiments.silver`)
      stats.json           counts: teacher outputs, how many passed validation, targets
      rejects.jsonl        every teacher output the validation dropped, with its reason
      distill.json         the inputs and settings (a resumed run must share them)
      work/                the stages' folders: templates/ (templatizer);
                           index/ matches/ pairs/ (instantiator)

The teacher runs in ``prompted`` mode, so its outputs go through exactly the validation
the pipeline applies (templates: syntax and genericity; pairs: every excerpt marker
resolves, the excerpt ratio, no ``<fi>`` left). The stages resume shard by shard and
every model call is cached, so the command run again after a kill continues where it
stopped; when the stages are done the silver shards are written again from their
outputs (cheap).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from fineinstructions import __version__
from fineinstructions.config import Config, output_fingerprint
from fineinstructions.errors import UserError
from fineinstructions.execution.outputs import DISTILL_FOLDER, clear
from fineinstructions.execution.runner import resolved
from fineinstructions.io import read_documents, read_queries, read_rows, write_json
from fineinstructions.records import MatchRow, PairRow, TemplateRow

Log = Callable[[str], None]


def _prepare(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse a folder that holds other silver data or anything else (unless
    ``overwrite``); record the run's inputs and settings."""
    record = out / "distill.json"
    if overwrite:
        clear(out, DISTILL_FOLDER)  # only what distill wrote
    if record.exists():
        previous = json.loads(record.read_text(encoding="utf-8"))
        if {k: previous.get(k) for k in manifest if k != "fineinstructions"} != {k: v for k, v in manifest.items() if k != "fineinstructions"}:
            raise UserError(
                f"{out} holds silver data made from other inputs or settings (see {record}).\n"
                "  fix: run with the same inputs and settings to resume it, choose another output folder, "
                "or pass --overwrite to start again"
            )
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no silver data.\n  fix: choose another output folder, or empty this one")
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest, record)


def _manifest(helper: str, inputs: dict[str, Any], section: Any, extra: dict[str, Any]) -> dict[str, Any]:
    settings = json.dumps(output_fingerprint(section), sort_keys=True)
    return {"fineinstructions": __version__, "helper": helper, **inputs, **extra,
            "teacher_sha256": hashlib.sha256(settings.encode("utf-8")).hexdigest()}


def _done(folder: Path) -> dict | None:
    path = folder / "stats.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def distill_templatizer(
    query_paths: Sequence[str | Path], output: str | Path, config: Config, *, limit: int | None = None,
    overwrite: bool = False, llm: Any = None, executor: Any = None, show_progress: bool = True, log: Log = print,
) -> dict:
    """Templatize ``query_paths`` with the teacher (``config.templatize``, prompted mode)
    and write the valid templates as silver examples into ``output``."""
    from fineinstructions.execution.templatize import run_templatize
    from fineinstructions.experiments.silver import templatizer_row, write_silver

    out = Path(output)
    config = _prompted(config, "templatize")
    inputs = {"queries": [resolved(p) for p in query_paths], "limit": limit,
              "filters": config.queries.model_dump(mode="json"), "fields": str(config.input.query_fields())}
    _prepare(out, _manifest("templatizer", inputs, config.templatize, {}), overwrite)
    bank = out / "work" / "templates"
    made = run_templatize(query_paths, bank, config, limit=limit, llm=llm, executor=executor, show_progress=show_progress, log=log)
    made_templates = list(read_rows([bank], TemplateRow)) if made["templatize"]["out"] else []
    wanted = {template.query_id for template in made_templates}
    texts: dict[str, str] = {}
    for query in read_queries(query_paths, fields=config.input.query_fields(), on_error=config.input.on_error):
        if query.id in wanted:
            texts.setdefault(query.id, query.text)
    rows = (templatizer_row(texts[t.query_id], t) for t in made_templates if t.query_id in texts)
    t = made["templatize"]
    stats = write_silver(out, "templatizer", rows, [], [Path(made["rejects_file"])], {
        "teacher": t["model"], "prompt_version": t["prompt_version"],
        "queries": made["filter_queries"],
        "teacher_outputs": {"in": t["in"], "valid": t["valid"], "failed": t["failed"], "duplicate_template": t["valid"] - t["out"]},
        "validation_pass_rate": t["valid_rate"],
    })
    log(f"distill templatizer: {stats['rows']} silver examples from {t['in']} queries "
        f"({t['valid']} valid teacher outputs, {t['valid'] - t['out']} repeating an earlier template) -> {out}")
    return stats


def distill_instantiator(
    document_paths: Sequence[str | Path], template_paths: Sequence[str | Path], output: str | Path, config: Config, *,
    index: str | Path | None = None, null_share: float = 0.05, limit: int | None = None, overwrite: bool = False, llm: Any = None,
    executor: Any = None, show_progress: bool = True, log: Log = print,
) -> dict:
    """Match ``document_paths`` to the bank (up to 6 templates a document, one per
    document vector, as the pipeline does), instantiate every match with the teacher
    (``config.instantiate``, prompted mode), and write the grounded pairs plus
    ``null_share`` of deliberately mismatched ``null`` examples into ``output``."""
    from fineinstructions.execution.index import run_index
    from fineinstructions.execution.instantiate import run_instantiate
    from fineinstructions.execution.match import run_match
    from fineinstructions.experiments.silver import (
        drop,
        instantiator_row,
        null_count,
        null_rows,
        write_silver,
    )

    if not index and not template_paths:
        raise UserError("give --templates BANK (and --index INDEX if it is already indexed)")
    null_count(0, null_share)  # checks the share before any work
    out = Path(output)
    config = _prompted(config, "instantiate")
    inputs = {"documents": [resolved(p) for p in document_paths], "templates": [resolved(p) for p in template_paths],
              "index": resolved(index) if index else None, "limit": limit, "fields": str(config.input.document_fields())}
    matching = json.dumps({k: output_fingerprint(getattr(config, k)) for k in ("embed", "match")}, sort_keys=True)
    _prepare(out, _manifest("instantiator", inputs, config.instantiate, {"null_share": null_share, "matching": matching}), overwrite)
    work = out / "work"
    options: dict[str, Any] = dict(executor=executor, show_progress=show_progress, log=log)
    index_dir = Path(index) if index else work / "index"
    if not index and _done(index_dir) is None:
        run_index(template_paths, index_dir, config, **options)
    if _done(work / "matches") is None:
        run_match(document_paths, index_dir, work / "matches", config, limit=limit, **options)
    made = _done(work / "pairs") or run_instantiate(
        [work / "matches"], template_paths, document_paths, work / "pairs", config, llm=llm, **options)
    templates: dict[str, tuple[str, str]] = {}
    matched: dict[str, set[str]] = defaultdict(set)
    for match in read_rows([work / "matches"], MatchRow):
        templates[match.template_id] = (match.template, match.query_id)
        matched[match.document_id].add(match.template_id)
    pairs = list(read_rows([work / "pairs"], PairRow)) if any((work / "pairs").glob("part-*")) else []
    wanted = {pair.document_id for pair in pairs}
    documents = {d.id: d.text for d in read_documents(document_paths, fields=config.input.document_fields(),
                                                       on_error=config.input.on_error) if d.id in wanted}
    rows, dropped, seen = [], [], {}
    for pair in pairs:
        text = documents[pair.document_id]
        saw = text[: pair.document_chars] if pair.document_chars else text
        row = instantiator_row(pair, templates[pair.template_id][0], saw)
        if row is None:
            dropped.append(drop(pair.id, "not_compactable", "no excerpt marker expands back to exactly the teacher's answer",
                                input=pair.instruction, raw_output=pair.answer))
            continue
        rows.append(row)
        seen.setdefault(pair.document_id, saw)
    wanted_nulls = null_count(len(rows), null_share)
    pool = {**bank_sample(template_paths, config, max(1000, 50 * wanted_nulls), seed=config.instantiate.seed), **templates}
    nulls = null_rows(seen, pool, matched, wanted_nulls, seed=config.instantiate.seed)
    i = made["instantiate"]
    stats = write_silver(out, "instantiator", [*rows, *nulls], dropped, [Path(str(work / "pairs") + ".rejects.jsonl")], {
        "teacher": i.get("model"), "prompt_version": i.get("prompt_version"), "matches": i["in"],
        "teacher_outputs": {"in": i["in"], "valid": i["out"], "skipped": i["skipped"], "failed": i["failed"]},
        "validation_pass_rate": round(i["out"] / i["in"], 4) if i["in"] else None,
        "null_share_requested": null_share, "null_rows_wanted": wanted_nulls,
    })
    log(f"distill instantiator: {stats['rows']} silver examples ({len(rows)} grounded pairs, {len(nulls)} null) "
        f"from {i['in']} matches -> {out}")
    if len(nulls) < wanted_nulls:
        log(f"distill instantiator: only {len(nulls)} of {wanted_nulls} mismatched pairs found (the bank is small)")
    return stats


def bank_sample(paths: Sequence[str | Path], config: Config, size: int, *, seed: int) -> dict[str, tuple[str, str]]:
    """Up to ``size`` valid templates of the bank (id -> (text, query id)), a uniform
    sample read in one pass (reservoir sampling), for the mismatched ``null`` examples."""
    import random

    from fineinstructions.text.bank import valid_templates

    rng = random.Random(seed)
    sample: list[TemplateRow] = []
    for seen, row in enumerate(valid_templates(paths, config.input.template_fields()), 1):
        if len(sample) < size:
            sample.append(row)
        elif (slot := rng.randrange(seen)) < size:
            sample[slot] = row
    return {row.id: (row.template, row.query_id) for row in sample}


def _prompted(config: Config, section: str) -> Config:
    """The teacher always runs the stage in prompted mode (its own prompt and validation)."""
    part = getattr(config, section)
    return config.model_copy(update={section: part.model_copy(update={"mode": "prompted"})})
