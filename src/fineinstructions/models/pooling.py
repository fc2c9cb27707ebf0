"""Document embeddings: Gaussian pooling of token embeddings (DESIGN §2.3).

One encoder pass gives the token embeddings ``h_1..h_T`` of a document; pooling turns
them into ``K + 1`` vectors: the global mean ``g`` and ``K`` local vectors, each a
Gaussian-weighted mean of the tokens around one of ``K`` evenly spaced centres, blended
with the global one. Each vector searches the template index on its own, so a long
document finds templates for its parts, not only for its overall topic.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, without importing torch
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    return np.asarray(array)


def gaussian_pool(
    token_embeddings: Any,
    attention_mask: Any,
    num_chunks: int = 5,
    sigma: float = 0.05,
    alpha: float = 1.0,
) -> np.ndarray:
    """The global and Gaussian-pooled local vectors of one sequence or a batch.

    ``token_embeddings`` is ``(T, d)`` with ``attention_mask`` ``(T,)``, or ``(B, T, d)``
    with ``(B, T)``; numpy arrays or torch tensors. Returns ``(K + 1, d)`` (or
    ``(B, K + 1, d)``), ``K = num_chunks``:

    - row 0, ``g``: the mean of the real tokens (mask 1);
    - rows ``k = 1..K``: ``e_k = (1 - alpha) g + alpha l_k`` with
      ``l_k = Σ_t w_kt h_t`` and ``w_kt ∝ exp(-½ ((t - c_k) / (sigma T))²)`` over the real
      tokens, normalised to sum to 1, where ``T`` is the number of real tokens, which take
      positions ``t = 1..T`` in order (padding has no position), and ``c_k = k T / (K + 1)``.

    Outputs are not normalised. As ``sigma`` shrinks, ``l_k`` tends to the token nearest
    ``c_k`` (weights are computed relative to the largest, so they never all underflow).
    """
    if num_chunks < 0:
        raise ValueError(f"num_chunks must be 0 or more, not {num_chunks}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, not {sigma}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    h = _as_numpy(token_embeddings)
    mask = _as_numpy(attention_mask)
    single = h.ndim == 2
    if single:
        h, mask = h[None], mask[None]
    if h.ndim != 3 or mask.shape != h.shape[:2]:
        raise ValueError(
            f"expected embeddings (T, d) with mask (T,), or (B, T, d) with (B, T); "
            f"got {tuple(_as_numpy(token_embeddings).shape)} and {tuple(_as_numpy(attention_mask).shape)}"
        )
    real = mask.astype(bool)
    counts = real.sum(axis=1)  # T per sequence
    if (counts == 0).any():
        raise ValueError(f"sequence {int(np.argmin(counts))} has no token with mask 1")
    out_dtype = h.dtype if np.issubdtype(h.dtype, np.floating) else np.float32
    h64 = h.astype(np.float64, copy=False)
    total = counts.astype(np.float64)

    g = np.einsum("bt,btd->bd", real.astype(np.float64), h64) / total[:, None]
    if num_chunks == 0:
        pooled = g[:, None, :]
    else:
        positions = np.cumsum(real, axis=1).astype(np.float64)  # 1..T on real tokens
        k = np.arange(1, num_chunks + 1, dtype=np.float64)
        centres = k[None, :] * total[:, None] / (num_chunks + 1)  # (B, K)
        z = (positions[:, None, :] - centres[:, :, None]) / (sigma * total[:, None, None])
        log_w = np.where(real[:, None, :], -0.5 * z * z, -np.inf)  # (B, K, T)
        weights = np.exp(log_w - log_w.max(axis=2, keepdims=True))
        weights /= weights.sum(axis=2, keepdims=True)
        local = np.einsum("bkt,btd->bkd", weights, h64)
        blended = (1.0 - alpha) * g[:, None, :] + alpha * local
        pooled = np.concatenate([g[:, None, :], blended], axis=1)
    pooled = pooled.astype(out_dtype, copy=False)
    return pooled[0] if single else pooled
