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


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """``support.data.BANK`` written as this package's template rows."""
    from support.data import write_bank

    return write_bank(tmp_path_factory.mktemp("bank"))
