"""gaussian_pool against an independent, loop-by-loop reading of the formula."""

import math

import numpy as np
import pytest

from fineinstructions.models.pooling import gaussian_pool


def reference(h, mask, K, sigma, alpha):
    """DESIGN §2.3 written out token by token, in plain Python floats."""
    real = [i for i, m in enumerate(mask) if m == 1]
    T = len(real)
    d = len(h[0])
    g = [sum(h[i][j] for i in real) / T for j in range(d)]
    rows = [g]
    for k in range(1, K + 1):
        c = k * T / (K + 1)
        w = [math.exp(-0.5 * ((t - c) / (sigma * T)) ** 2) for t in range(1, T + 1)]
        s = sum(w)
        local = [sum(w[n] / s * h[i][j] for n, i in enumerate(real)) for j in range(d)]
        rows.append([(1 - alpha) * g[j] + alpha * local[j] for j in range(d)])
    return np.array(rows)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("K", "sigma", "alpha"), [(5, 0.05, 1.0), (10, 0.2, 0.5), (3, 0.5, 0.0), (1, 0.05, 0.3)])
def test_single_sequence_matches_the_formula(seed, K, sigma, alpha):
    rng = np.random.default_rng(seed)
    T, d = int(rng.integers(5, 80)), 7
    h = rng.normal(size=(T, d)).astype(np.float32)
    mask = np.ones(T, dtype=np.int64)
    got = gaussian_pool(h, mask, num_chunks=K, sigma=sigma, alpha=alpha)
    assert got.shape == (K + 1, d) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(h.tolist(), mask.tolist(), K, sigma, alpha), atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_batch_with_padding_matches_each_sequence_alone(seed):
    rng = np.random.default_rng(100 + seed)
    B, L, d, K = 4, 40, 5, 5
    h = rng.normal(size=(B, L, d)).astype(np.float32)
    mask = np.zeros((B, L), dtype=np.int64)
    lengths = [40, 1, 17, 29]
    for b, n in enumerate(lengths):
        if b % 2:  # left padding on odd rows, right padding on even ones
            mask[b, L - n :] = 1
        else:
            mask[b, :n] = 1
    mask[0, 10] = 0  # a hole in the middle: the token has no position
    h[mask == 0] = 1e6  # padding values must not leak into any vector
    got = gaussian_pool(h, mask, num_chunks=K, sigma=0.05, alpha=1.0)
    assert got.shape == (B, K + 1, d)
    for b in range(B):
        want = reference(h[b].tolist(), mask[b].tolist(), K, 0.05, 1.0)
        np.testing.assert_allclose(got[b], want, atol=1e-5)
        np.testing.assert_allclose(gaussian_pool(h[b], mask[b], num_chunks=K), got[b], atol=1e-6)


def test_small_sigma_local_vectors_approach_the_token_at_each_centre():
    rng = np.random.default_rng(7)
    T, K, d = 12, 5, 6  # centres k*12/6 = 2, 4, 6, 8, 10: exact token positions
    h = rng.normal(size=(T + 3, d))
    mask = np.r_[np.ones(T), np.zeros(3)]
    for sigma in (0.02, 1e-3, 1e-9):  # 1e-9: every raw weight underflows; must still work
        got = gaussian_pool(h, mask, num_chunks=K, sigma=sigma)
        expected = h[[1, 3, 5, 7, 9]]  # positions 2, 4, … (1-based) are indices 1, 3, …
        tolerance = 0.05 if sigma == 0.02 else 1e-6
        np.testing.assert_allclose(got[1:], expected, atol=tolerance)


def test_alpha_zero_gives_the_global_vector_everywhere_and_k_zero_only_the_global():
    rng = np.random.default_rng(3)
    h, mask = rng.normal(size=(9, 4)), np.ones(9)
    assert np.allclose(gaussian_pool(h, mask, alpha=0.0), h.mean(axis=0))
    np.testing.assert_allclose(gaussian_pool(h, mask, num_chunks=0), h.mean(axis=0, keepdims=True))


def test_torch_inputs_work_like_numpy():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    h = rng.normal(size=(2, 20, 3)).astype(np.float32)
    mask = np.ones((2, 20), dtype=np.int64)
    mask[1, 15:] = 0
    got = gaussian_pool(torch.from_numpy(h), torch.from_numpy(mask))
    np.testing.assert_allclose(got, gaussian_pool(h, mask), atol=1e-6)
    assert isinstance(got, np.ndarray)


def test_bad_shapes_and_empty_sequences_are_clear_errors():
    with pytest.raises(ValueError, match="expected embeddings"):
        gaussian_pool(np.zeros((3, 4)), np.ones(5))
    with pytest.raises(ValueError, match="no token with mask 1"):
        gaussian_pool(np.zeros((2, 3, 4)), np.array([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_pool(np.zeros((3, 4)), np.ones(3), sigma=0)
