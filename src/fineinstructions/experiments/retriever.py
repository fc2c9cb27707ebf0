"""The retriever's labels, fine-tuning and threshold (DESIGN §2.3 and §7).

- **Labels** are ``(document_id, template_id, chunk, compatible)``: ``chunk`` 0 is the
  whole document (its global vector), ``1..K`` one Gaussian-pooled part of it. They come
  from a teacher LLM (:mod:`..stages.compatibility`) or from a file a person judged
  (``benchmarks/data/threshold-labels-minilm.jsonl`` is one); a JSONL line holds
  ``document_id``, ``template_id``, ``compatible`` (or ``label``: true/false, 1/0) and
  optionally ``chunk``.
- **Round 1** trains on (document, template description, label) for the global vector;
  **round 2** on (passage of chunk k, description, label), where the passage is the
  tokens whose kernel weight for chunk k is at least half its peak (attention restricted
  to them), so labels are tied to the chunk that retrieved the template. Both use
  sentence-transformers' trainer with a cosine-similarity loss.
- **Calibration** scores each held-out label with the embedder as ``match`` would (the
  cosine of the label's document vector and the template's description) and picks the
  threshold with the best F1; :func:`write_threshold` stores it with the model
  (``fineinstructions.json``), where ``match`` finds it when no threshold is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fineinstructions.errors import InputError, MissingDependencyError, UserError
from fineinstructions.io import write_json
from fineinstructions.io.formats import read_raw
from fineinstructions.io.readers import input_files
from fineinstructions.models.embedder import MODEL_SETTINGS
from fineinstructions.models.pooling import gaussian_pool

HALF = math.sqrt(2 * math.log(2))  # kernel weight >= 0.5 within HALF * sigma * T of the centre


@dataclass(frozen=True)
class Label:
    document_id: str
    template_id: str
    chunk: int | None  # None: any vector of the document (the best one scores)
    compatible: bool


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return None


def read_labels(paths: Iterable[str | Path]) -> list[Label]:
    """Labels from JSONL (or CSV/Parquet) files; a bad row is an error naming it."""
    labels = []
    for path in input_files(paths):
        for location, record in read_raw(path):
            if isinstance(record, InputError):
                raise record
            for name in ("document_id", "template_id"):
                if not isinstance(record.get(name), str) or not record[name]:
                    raise InputError(path, f"no {name!r} string", location=location, fix="each label names its document_id and template_id")
            raw = record.get("compatible", record.get("label"))
            compatible = _truth(raw)
            if compatible is None:
                raise InputError(path, f"'compatible' is {raw!r}", location=location, fix="write compatible: true or false (or label: 1 or 0)")
            chunk = record.get("chunk")
            if chunk is not None and (not isinstance(chunk, int) or chunk < 0):
                raise InputError(path, f"'chunk' is {chunk!r}", location=location, fix="chunk is 0 (the whole document) or 1..K, or absent")
            labels.append(Label(record["document_id"], record["template_id"], chunk, compatible))
    return labels


def write_labels(labels: Sequence[Label], path: Path) -> None:
    path.write_text("".join(json.dumps(asdict(label)) + "\n" for label in labels), encoding="utf-8")


def chunk_passage(text: str, tokenizer: Any, chunk: int, num_chunks: int, sigma: float) -> str:
    """The part of ``text`` whose tokens weigh at least half the peak in chunk ``chunk``'s
    kernel (the whole text for chunk 0), in the positions ``gaussian_pool`` uses."""
    if chunk == 0:
        return text
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)["offset_mapping"]
    total = len(offsets)
    if not total:
        return text
    centre = chunk * total / (num_chunks + 1)
    reach = HALF * sigma * total
    first = max(0, math.ceil(centre - reach) - 1)  # positions run 1..T; offsets 0..T-1
    last = min(total - 1, math.floor(centre + reach) - 1)
    if last < first:
        first = last = min(total - 1, max(0, round(centre) - 1))
    return text[offsets[first][0] : offsets[last][1]]


def label_vectors(embedder: Any, texts: dict[str, str], labels: Sequence[Label], num_chunks: int, sigma: float,
                  alpha: float) -> dict[str, np.ndarray]:
    """Each labelled document's ``(K + 1, d)`` normalised vectors, as ``match`` makes them."""
    wanted = sorted({label.document_id for label in labels})
    missing = [doc for doc in wanted if doc not in texts]
    if missing:
        raise UserError(f"{len(missing)} labelled documents are not in the documents given (first: {missing[0]})\n"
                        "  fix: pass the documents the labels were made on with --documents")
    vectors: dict[str, np.ndarray] = {}
    for start in range(0, len(wanted), 32):
        batch = wanted[start : start + 32]
        for doc, item in zip(batch, embedder.token_embeddings([texts[d] for d in batch]), strict=True):
            pooled = gaussian_pool(item.vectors, np.ones(len(item.vectors), dtype=np.int64), num_chunks=num_chunks,
                                   sigma=sigma, alpha=alpha)
            vectors[doc] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return vectors


def label_scores(embedder: Any, texts: dict[str, str], descriptions: dict[str, str], labels: Sequence[Label], *,
                 num_chunks: int, sigma: float, alpha: float) -> np.ndarray:
    """The cosine ``match`` sees for each label: its chunk's vector (the best vector when
    the label names none) against its template's description."""
    missing = sorted({label.template_id for label in labels} - set(descriptions))
    if missing:
        raise UserError(f"{len(missing)} labelled templates are not in the bank given (first: {missing[0]})\n"
                        "  fix: pass the bank the labels were made on with --templates")
    vectors = label_vectors(embedder, texts, labels, num_chunks, sigma, alpha)
    ids = sorted({label.template_id for label in labels})
    embedded = embedder.embed([descriptions[t] for t in ids])
    embedded = embedded / np.maximum(np.linalg.norm(embedded, axis=1, keepdims=True), 1e-12)
    row = {t: i for i, t in enumerate(ids)}
    scores = []
    for label in labels:
        cosines = vectors[label.document_id] @ embedded[row[label.template_id]]
        scores.append(float(cosines.max() if label.chunk is None or label.chunk >= len(cosines) else cosines[label.chunk]))
    return np.asarray(scores)


def precision_recall(scores: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, float | int]:
    kept = scores >= threshold
    hits = int((kept & truth).sum())
    precision = hits / int(kept.sum()) if kept.any() else 0.0
    recall = hits / int(truth.sum()) if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": round(float(threshold), 4), "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4), "kept": int(kept.sum())}


def calibrate(scores: np.ndarray, truth: Sequence[bool]) -> dict[str, Any]:
    """The threshold with the best F1 on labelled scores (ties: the higher threshold), its
    precision and recall, and the counts."""
    truth_array = np.asarray(truth, dtype=bool)
    if not truth_array.any() or truth_array.all():
        raise UserError(f"calibration needs compatible and incompatible labels; these {len(truth_array)} are all "
                        f"{'compatible' if truth_array.all() else 'incompatible'}\n  fix: label more candidates")
    best = max((precision_recall(scores, truth_array, t) for t in np.unique(scores)), key=lambda r: (r["f1"], r["threshold"]))
    return {**best, "labels": len(truth_array), "compatible": int(truth_array.sum())}


def write_threshold(model_dir: str | Path, calibration: dict[str, Any]) -> Path:
    """Store the calibrated match threshold with the model (read by ``match``)."""
    path = Path(model_dir) / MODEL_SETTINGS
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    data.update({"match_threshold": calibration["threshold"], "calibration": calibration})
    return write_json(data, path)


def fine_tune(base: str, examples: Sequence[tuple[str, str, float]], output: Path, *, epochs: float = 1.0,
              learning_rate: float = 2e-5, batch_size: int = 16, seed: int = 0) -> dict[str, Any]:
    """Fine-tune the sentence-transformers model at ``base`` on (text, description, label)
    with a cosine-similarity loss; saves it to ``output``. Returns the training figures."""
    try:
        import torch
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        try:
            from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss
        except ImportError:  # sentence-transformers before 5
            from sentence_transformers.losses import CosineSimilarityLoss
    except ImportError as error:
        raise MissingDependencyError(error.name or "sentence-transformers", "experiments", "training the retriever") from None
    if not examples:
        raise UserError("there are no labelled examples to train the retriever on\n  fix: label candidates (a teacher) or pass --labels")
    model = SentenceTransformer(base, device="cuda" if torch.cuda.is_available() else "cpu")
    data = Dataset.from_dict({"text": [e[0] for e in examples], "description": [e[1] for e in examples],
                              "score": [float(e[2]) for e in examples]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output / "checkpoints"), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, warmup_ratio=0.1, seed=seed, data_seed=seed, save_strategy="no", report_to=[],
        logging_steps=max(1, len(examples) // batch_size // 10), disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=CosineSimilarityLoss(model))
    result = trainer.train()
    model.save(str(output))
    history = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"examples": len(examples), "steps": int(result.global_step), "epochs": epochs,
            "first_loss": history[0] if history else None, "final_loss": history[-1] if history else None}
