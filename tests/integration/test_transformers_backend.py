"""The transformers backend on the embedded model (its GGUF, dequantized), on the CPU."""

import pytest

from fineinstructions.models.llm import ErrorKind, Request, backend_class

pytest.importorskip("torch", reason="the transformers backend needs torch")
pytest.importorskip("transformers", reason="needs fineinstructions[transformers]")
pytestmark = pytest.mark.slow

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture(scope="module")
def llm():
    backend = backend_class("transformers")("embedded", batch_size=3)
    backend.load()
    yield backend
    backend.close()


def test_left_padded_batches_give_each_prompt_its_own_greedy_answer(llm):
    prompts = ["Say hi.", "Write three words about rain.", "Name a fruit that is yellow and long."]
    batch = [Request.chat(("user", p), max_tokens=10) for p in prompts]
    together = llm.generate(batch)
    alone = [llm.generate([r])[0] for r in batch]
    assert [c.text for c in together] == [c.text for c in alone]  # padding changes nothing
    assert all(c.ok and c.text and c.completion_tokens > 0 for c in together)
    assert together[0].prompt_tokens != together[2].prompt_tokens  # really different lengths


def test_same_greedy_text_as_llama_cpp_on_the_same_weights(llm):
    request = Request.chat(("user", "Write three words about rain."), max_tokens=10)
    local = backend_class("llama_cpp")(n_ctx=1024)
    try:
        dequantized, quantized = llm.generate([request])[0].text, local.generate([request])[0].text
    finally:
        local.close()
    # transformers runs the GGUF weights dequantized to float32, llama.cpp on the quantized
    # blocks: near-ties late in a greedy answer may fall either way; the opening must agree.
    assert dequantized.split()[:5] == quantized.split()[:5] and len(quantized.split()) >= 5


def test_per_request_errors_and_schema_validation(llm):
    out = llm.generate(
        [
            Request.chat(("user", "word " * 9000), max_tokens=4),  # over the 8192 window
            Request.chat(("user", "x"), regex="a+", max_tokens=4),
            Request.chat(("user", "Reply in JSON"), json_schema=SCHEMA, max_tokens=3),
            Request.chat(("user", "Say hi."), max_tokens=4),
        ]
    )
    assert out[0].error_kind is ErrorKind.CONTEXT_OVERFLOW
    assert out[1].error_kind is ErrorKind.BACKEND_ERROR
    assert out[2].error_kind is ErrorKind.INVALID_OUTPUT  # unconstrained here: validated afterwards
    assert out[3].ok


def test_stop_strings_and_seeded_sampling(llm):
    (free,) = llm.generate([Request.chat(("user", "Count from one to ten."), max_tokens=40)])
    assert "\n" in free.text.strip()
    (stopped,) = llm.generate([Request.chat(("user", "Count from one to ten."), max_tokens=40, stop=("\n",))])
    assert stopped.text == free.text[: free.text.index("\n")]
    assert stopped.finish_reason == "stop"
    prompt = ("user", "Write one word about the sea.")
    first = llm.generate([Request.chat(prompt, max_tokens=8, temperature=1.0, seed=11)])[0].text
    again = llm.generate([Request.chat(prompt, max_tokens=8, temperature=1.0, seed=11)])[0].text
    assert first == again
    texts = {llm.generate([Request.chat(prompt, max_tokens=8, temperature=1.2, seed=s)])[0].text for s in range(5)}
    assert len(texts) > 1


def test_token_logprobs_are_the_models_distribution_at_each_generated_token(llm):
    prompts = ["Say hi.", "Name a fruit that is yellow and long."]
    asked = llm.generate([Request.chat(("user", p), max_tokens=8, top_logprobs=3) for p in prompts])
    plain = llm.generate([Request.chat(("user", p), max_tokens=8) for p in prompts])
    for with_logprobs, without in zip(asked, plain, strict=True):
        assert with_logprobs.text == without.text and not without.logprobs  # asking changes nothing else
        assert len(with_logprobs.logprobs) == with_logprobs.completion_tokens
        for token in with_logprobs.logprobs:
            assert len(token.top) == 3 and token.top[0][1] >= token.top[1][1] >= token.top[2][1]
            assert token.top[0] == (token.token, pytest.approx(token.logprob))  # greedy: the most likely
