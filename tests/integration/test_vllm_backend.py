"""vLLM in-process: runs only where vLLM and a CUDA GPU are present."""

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'fineinstructions[vllm]')")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a CUDA GPU", allow_module_level=True)

import os  # noqa: E402

from fineinstructions.models.llm import ErrorKind, Request, backend_class  # noqa: E402

MODEL = os.environ.get("FI_VLLM_TEST_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def llm():
    backend = backend_class("vllm")(MODEL, max_model_len=1024, gpu_memory_utilization=0.3)
    backend.load()
    yield backend
    backend.close()


def test_constrained_batch_with_an_overflow(llm):
    out = llm.generate(
        [
            Request.chat(("user", "Give a JSON object with an integer a."), json_schema=SCHEMA, max_tokens=30),
            Request.chat(("user", "yes or no?"), regex="(yes|no)", max_tokens=3),
            Request.chat(("user", "word " * 3000), max_tokens=4),
            Request.chat(("user", "Say hi."), max_tokens=8),
        ]
    )
    assert out[0].ok and isinstance(out[0].parsed["a"], int)
    assert out[1].text in {"yes", "no"}
    assert out[2].error_kind is ErrorKind.CONTEXT_OVERFLOW
    assert out[3].ok and out[3].text


def test_shared_prefixes_hit_the_prefix_cache(llm):
    document = "Green tea leaves are steamed or pan-fired soon after picking. " * 30
    batch = [Request.chat(("user", f"{document}\nQuestion {i}?"), max_tokens=2) for i in range(4)]
    out = llm.generate(batch)
    assert sum(c.cached_tokens for c in out[1:]) > 0
