"""A stand-in embedder for the index tests: vectors from a hash of the text, with a
count of what it embedded; and a bank of made-up templates to index."""

from __future__ import annotations

import numpy as np

from fineinstructions.models.embedder import EmbedderIdentity

DIM = 32


def identity(probe=(1.0, 0.0, 0.5), name="test-embedder", dimension=DIM):
    return EmbedderIdentity(name=name, model=name, dimension=dimension, max_seq_length=128, probe=tuple(probe))


def unit_vectors(n, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class CountingEmbedder:
    """Vectors from a hash of the text; counts the texts it embedded."""

    dimension = DIM
    identity = identity()

    def __init__(self):
        self.embedded = 0

    def embed(self, texts):
        self.embedded += len(texts)
        return np.stack([unit_vectors(1, seed=abs(hash(t)) % 2**32)[0] for t in texts])


def write_bank(folder, count, prefix="t"):
    from fineinstructions.io import ShardWriter
    from fineinstructions.records import TemplateRow

    rows = [TemplateRow(id=f"{prefix}{i}", query_id=f"q{i}", source="s", template=f"what is <fi>thing {i}</fi>",
                        compatible_document_description=f"a page about thing {i}", variables=(f"thing {i}",),
                        complexity=1, model="m", prompt_version="v") for i in range(count)]
    with ShardWriter(folder, TemplateRow, rows_per_shard=4) as writer:
        writer.write(rows)
    return folder
