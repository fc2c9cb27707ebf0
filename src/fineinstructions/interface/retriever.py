"""``fineinstructions train retriever`` and ``fineinstructions calibrate``: fine-tune the
embedder so a document lands near the templates it can answer, and store the match
threshold with it (DESIGN §2.3, §7).

    MODEL_DIR/
      (a sentence-transformers model folder)   the fine-tuned retriever
      fineinstructions.json   its calibrated match threshold (``match`` reads it)
      retriever.json          labels, rounds, and precision/recall before and after
      work/                   index/ (unless --index), labels-*.jsonl, labels.cache.sqlite, round-1/

Candidates are the current index's top ``candidates`` templates for each document vector
(round 1: the global vector; round 2: each Gaussian-pooled one, its passage the tokens of
weight at least half the kernel's peak). The teacher labels them (its calls cached, so a
re-run repeats none); labels a person brings (``--labels``) are added. Labels on a
held-out share of the documents (or ``--held-out`` files) are never trained on: the
threshold is calibrated on them for the base embedder and for the trained one.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import UserError
from fineinstructions.experiments.retriever import (
    Label,
    calibrate,
    chunk_passage,
    fine_tune,
    label_scores,
    read_labels,
    write_labels,
    write_threshold,
)
from fineinstructions.io import read_documents, write_json
from fineinstructions.text.bank import valid_templates

Log = Callable[[str], None]


def read_bank(paths: Sequence[str | Path], config: Config) -> dict[str, str]:
    """Template id -> compatible-document description, for every valid template of the bank."""
    descriptions: dict[str, str] = {}
    for row in valid_templates(paths, config.input.template_fields()):
        descriptions.setdefault(row.id, row.compatible_document_description)
    return descriptions


def _held_out(document_id: str, share: float) -> bool:
    digest = hashlib.sha256(document_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < share


def teacher_labels(documents: dict[str, str], descriptions: dict[str, str], index_dir: Path, config: Config, work: Path, *,
                   candidates: int, rounds: int, llm: Any, log: Log) -> list[Label]:
    """The teacher's labels of each document vector's top ``candidates`` templates."""
    from fineinstructions.models.embedder import make_embedder
    from fineinstructions.models.factory import make_llm
    from fineinstructions.models.index import TemplateIndex
    from fineinstructions.records import DocumentRow
    from fineinstructions.stages.compatibility import CompatibilityLabeler
    from fineinstructions.stages.match import Matcher

    e = config.embed
    embedder = make_embedder(e)
    index = TemplateIndex.load(index_dir, embedder=embedder.identity)
    matcher = Matcher(embedder, index, threshold=-1.0, num_chunks=e.num_chunks, sigma=e.sigma, alpha=e.alpha, candidates=candidates)
    chunks = range(1 + (e.num_chunks if rounds >= 2 else 0))
    wanted: list[tuple[str, int, str]] = []
    ids = sorted(documents)
    for start in range(0, len(ids), 32):
        batch = [DocumentRow(id=d, text=documents[d], source="") for d in ids[start : start + 32]]
        vectors, _ = matcher.document_vectors(batch)
        scores, positions = index.search(vectors.reshape(-1, vectors.shape[2]), candidates)
        per = vectors.shape[1]
        for d, document in enumerate(batch):
            for chunk in chunks:
                for position in positions[d * per + chunk]:
                    if position >= 0:
                        wanted.append((document.id, chunk, index.ids[int(position)]))
    wanted = list(dict.fromkeys(wanted))
    teacher = llm or make_llm(config.instantiate.llm, cache_path=work / "labels.cache.sqlite")
    labeler = CompatibilityLabeler(teacher)
    labels: list[Label] = []
    log(f"train retriever: the teacher ({getattr(teacher, 'identity', '?')}) labels {len(wanted)} candidates")
    started = time.monotonic()
    try:
        for start in range(0, len(wanted), 16):
            if start and start % 160 == 0:
                log(f"train retriever: labelled {start}/{len(wanted)}, elapsed {time.monotonic() - started:.0f} s")
            batch = wanted[start : start + 16]
            passages = [chunk_passage(documents[d], embedder.tokenizer, c, e.num_chunks, e.sigma) for d, c, _ in batch]
            answers = labeler([(p, descriptions.get(t, "")) for p, (_, _, t) in zip(passages, batch, strict=True)])
            labels += [Label(d, t, c, a) for (d, c, t), a in zip(batch, answers, strict=True) if a is not None]
    finally:
        if llm is None:
            teacher.close()
    return labels


def train_retriever(
    document_paths: Sequence[str | Path], template_paths: Sequence[str | Path], output: str | Path, config: Config, *,
    index: str | Path | None = None, labels: Sequence[str | Path] = (), held_out: Sequence[str | Path] = (),
    held_out_share: float = 0.2, teacher: bool = True, rounds: int = 2, candidates: int = 5, limit: int | None = None,
    epochs: float = 1.0, learning_rate: float = 2e-5, batch_size: int = 16, llm: Any = None, log: Log = print,
) -> dict:
    """Label, fine-tune (rounds 1 and 2), calibrate; returns ``retriever.json``."""
    from fineinstructions.execution.index import run_index
    from fineinstructions.models.embedded import embedded_embedder_path
    from fineinstructions.models.embedder import make_embedder

    if rounds not in (1, 2):
        raise UserError(f"--rounds is 1 or 2, not {rounds}")
    out = Path(output)
    if (out / "retriever.json").exists():
        log(f"train retriever: {out} is already trained (see {out / 'retriever.json'}); kept. Choose another folder to train again.")
        return json.loads((out / "retriever.json").read_text(encoding="utf-8"))
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    documents: dict[str, str] = {}
    for document in read_documents(document_paths, fields=config.input.document_fields(), on_error=config.input.on_error):
        documents.setdefault(document.id, document.text)
    labelled = dict(list(documents.items())[:limit]) if limit is not None else documents
    descriptions = read_bank(template_paths, config)
    index_dir = Path(index) if index else work / "index"
    if not index and not (index_dir / "stats.json").exists():
        run_index(template_paths, index_dir, config, show_progress=False, log=log)
    made = teacher_labels(labelled, descriptions, index_dir, config, work, candidates=candidates, rounds=rounds, llm=llm,
                          log=log) if teacher else []
    brought = read_labels(labels) if labels else []
    pool = [label for label in made + brought if label.document_id in documents and label.template_id in descriptions]
    if held_out:
        test = [label for label in read_labels(held_out) if label.document_id in documents]
        train = pool
    else:
        test = [label for label in pool if _held_out(label.document_id, held_out_share)]
        train = [label for label in pool if not _held_out(label.document_id, held_out_share)]
    write_labels(made, work / "labels-teacher.jsonl")
    write_labels(test, work / "labels-held-out.jsonl")
    if not test:
        raise UserError("no held-out label to calibrate on\n  fix: pass --held-out LABELS, or more documents or labels")
    e = config.embed
    base = str(embedded_embedder_path()) if e.model == "embedded" else e.model

    def measured(model: str) -> dict[str, Any]:
        embedder = make_embedder(config.embed.model_copy(update={"model": model}))
        scores = label_scores(embedder, documents, descriptions, test, num_chunks=e.num_chunks, sigma=e.sigma, alpha=e.alpha)
        return calibrate(scores, [label.compatible for label in test])

    before = measured(e.model)
    log(f"train retriever: before, on {len(test)} held-out labels: threshold {before['threshold']}, "
        f"precision {before['precision']}, recall {before['recall']}")

    def examples(chunk_round: int, tokenizer: Any) -> list[tuple[str, str, float]]:
        chosen = [label for label in train if (label.chunk or 0) == 0] if chunk_round == 1 else [
            label for label in train if (label.chunk or 0) > 0]
        return [(chunk_passage(documents[label.document_id], tokenizer, label.chunk or 0, e.num_chunks, e.sigma),
                 descriptions[label.template_id], float(label.compatible)) for label in chosen]

    tokenizer = make_embedder(e).tokenizer
    trained: dict[str, Any] = {}
    model = base
    for number in range(1, rounds + 1):
        data = examples(number, tokenizer)
        if not data:
            log(f"train retriever: round {number} has no labels; skipped")
            continue
        target = out if number == rounds else work / f"round-{number}"
        trained[f"round_{number}"] = fine_tune(model, data, target, epochs=epochs, learning_rate=learning_rate,
                                               batch_size=batch_size)
        model = str(target)
        log(f"train retriever: round {number}: {trained[f'round_{number}']}")
    if model != str(out):
        raise UserError("no round had labels to train on\n  fix: more documents, more candidates, or --labels")
    after = measured(str(out))
    write_threshold(out, after)
    result = {
        "documents": len(documents), "bank": len(descriptions), "rounds": rounds, "candidates": candidates,
        "labels": {"teacher": len(made), "brought": len(brought), "train": len(train), "held_out": len(test),
                   "train_compatible": int(np.sum([label.compatible for label in train]))},
        "training": trained, "before": before, "after": after, "base": e.model, "match_threshold": after["threshold"],
    }
    write_json(result, out / "retriever.json")
    log(f"train retriever: after: threshold {after['threshold']}, precision {after['precision']}, recall {after['recall']} "
        f"(stored in {out / 'fineinstructions.json'})\n  use it: --set embed.model={out} (rebuild the index with it)")
    return result


def run_calibrate(label_paths: Sequence[str | Path], document_paths: Sequence[str | Path], template_paths: Sequence[str | Path],
                  config: Config, *, write: bool = False, log: Log = print) -> dict:
    """Precision and recall of the configured embedder's best threshold on labels;
    ``write`` stores the threshold with the model folder."""
    from fineinstructions.models.embedder import make_embedder

    test = read_labels(label_paths)
    wanted = {label.document_id for label in test}
    documents = {d.id: d.text for d in read_documents(document_paths, fields=config.input.document_fields(),
                                                      on_error=config.input.on_error) if d.id in wanted}
    e = config.embed
    embedder = make_embedder(e)
    scores = label_scores(embedder, documents, read_bank(template_paths, config), test, num_chunks=e.num_chunks,
                          sigma=e.sigma, alpha=e.alpha)
    result = calibrate(scores, [label.compatible for label in test])
    if write:
        if not Path(e.model).is_dir():
            raise UserError(f"--write stores the threshold in the embedder's folder, and {e.model!r} is not a folder\n"
                            "  fix: pass the threshold with --threshold, or calibrate a model folder (--set embed.model=DIR)")
        path = write_threshold(e.model, result)
        log(f"calibrate: threshold {result['threshold']} stored in {path}")
    return result
