"""Fixtures the real-model integration tests share."""

import pytest


@pytest.fixture(scope="module")
def llm():
    """The embedded SmolLM2-135M through llama.cpp, loaded once per test module."""
    from fineinstructions.models.llama_cpp_backend import LlamaCppLLM

    backend = LlamaCppLLM("embedded", n_ctx=4096)
    backend.load()
    yield backend
    backend.close()
