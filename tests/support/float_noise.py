"""Rows compared as the product promises them across executors, CPUs and bank layouts:
every field equal, floats (match scores, relevance) up to the embedder's float noise.

The embedder's results change in the last digits with the batch a text is embedded in
and with the CPU's kernels, so a score may differ by about 1e-6; which templates are
matched, and every text, id and count, may not."""

from __future__ import annotations

from typing import Any

import pytest

NOISE = 1e-5


def up_to_float_noise(value: Any) -> Any:
    """``value`` with every float replaced by one that equals any float within NOISE."""
    if isinstance(value, float):
        return pytest.approx(value, abs=NOISE)
    if isinstance(value, dict):
        return {key: up_to_float_noise(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(up_to_float_noise(item) for item in value)
    return value
