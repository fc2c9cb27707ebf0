"""How long texts are cut into windows and stitched back."""

import numpy as np
import pytest

from fineinstructions.models.embedder import EmbedderIdentity, window_owners, windows


def test_windows_cover_the_text_with_overlap():
    assert windows(10, 254, 32) == [(0, 10)]
    assert windows(254, 254, 32) == [(0, 254)]
    spans = windows(600, 254, 32)
    assert spans[0] == (0, 254) and spans[-1] == (346, 600)
    assert all(end - start == 254 for start, end in spans)
    assert all(b[0] <= a[1] - 32 for a, b in zip(spans, spans[1:], strict=False))  # at least the overlap shared
    covered = np.zeros(600, bool)
    for start, end in spans:
        covered[start:end] = True
    assert covered.all()
    with pytest.raises(ValueError):
        windows(100, 10, 10)


def test_each_token_comes_from_the_window_where_it_is_farthest_from_an_edge():
    spans = [(0, 10), (6, 16)]
    owners = window_owners(16, spans)
    assert owners.tolist() == [0] * 8 + [1] * 8
    # A token is always owned by a window that contains it.
    spans = windows(1000, 100, 20)
    owners = window_owners(1000, spans)
    for position, owner in enumerate(owners):
        start, end = spans[owner]
        assert start <= position < end


def test_identity_matches_the_same_weights_under_any_name():
    a = EmbedderIdentity("embedded", "m", 3, 256, (0.1, 0.2, 0.3))
    b = EmbedderIdentity("/copy/of/m", "/copy/of/m", 3, 256, (0.1, 0.2, 0.3001))
    c = EmbedderIdentity("other", "other", 3, 256, (0.3, -0.2, 0.1))
    assert a.same_model(b) and not a.same_model(c)
    assert EmbedderIdentity.from_dict(a.to_dict()) == a
