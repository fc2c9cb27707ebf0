"""The embedded default backend with the real SmolLM2-135M model."""

import json

import pytest

from fineinstructions.models.cache import CachedLLM
from fineinstructions.models.llm import ErrorKind, Request, backend_class

pytestmark = pytest.mark.slow

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 40}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["answer", "score"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm():
    backend = backend_class("llama_cpp")(n_ctx=1024)
    backend.load()
    yield backend
    backend.close()


def test_schema_constrained_output_parses(llm):
    (completion,) = llm.generate(
        [Request.chat(("user", "Rate the sentence 'the sky is blue' from 1 to 5 as JSON."), json_schema=SCHEMA, max_tokens=80)]
    )
    assert completion.ok, completion.error_detail
    assert completion.finish_reason == "stop"
    assert completion.parsed == json.loads(completion.text)
    assert completion.parsed["score"] in {1, 2, 3, 4, 5}
    assert completion.prompt_tokens > 0 and completion.completion_tokens > 0


def test_grammar_constrained_output(llm):
    grammar = 'root ::= "yes" | "no"'
    (completion,) = llm.generate([Request.chat(("user", "Is water wet? Answer yes or no."), grammar=grammar, max_tokens=4)])
    assert completion.text in {"yes", "no"}


def test_one_bad_request_never_fails_the_batch(llm):
    batch = [
        Request.chat(("user", "Say hello."), max_tokens=8),
        Request.chat(("user", "word " * 2000), max_tokens=8),  # longer than the 1024 window
        Request.chat(("user", "x"), regex="[a-z]+", max_tokens=8),  # llama.cpp takes no regex
        Request.chat(("user", "Reply as JSON."), json_schema=SCHEMA, max_tokens=3),  # cut short
        Request.chat(("user", "Say goodbye."), max_tokens=8),
    ]
    out = llm.generate(batch)
    assert len(out) == 5
    assert out[0].ok and out[0].text and out[4].ok and out[4].text
    assert out[1].error_kind is ErrorKind.CONTEXT_OVERFLOW and out[1].prompt_tokens > 1024
    assert out[2].error_kind is ErrorKind.BACKEND_ERROR
    assert out[3].error_kind is ErrorKind.INVALID_OUTPUT and out[3].finish_reason == "length"


def test_greedy_decoding_is_reproducible_and_seeds_matter_when_sampling(llm):
    prompt = ("user", "Write one word about the sea.")
    greedy = [llm.generate([Request.chat(prompt, max_tokens=12)])[0].text for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = {
        llm.generate([Request.chat(prompt, max_tokens=12, temperature=1.2, seed=s)])[0].text for s in range(6)
    }
    assert len(sampled) > 1
    again = llm.generate([Request.chat(prompt, max_tokens=12, temperature=1.2, seed=3)])[0].text
    assert again == llm.generate([Request.chat(prompt, max_tokens=12, temperature=1.2, seed=3)])[0].text


def test_requests_sharing_a_prefix_reuse_the_kv_cache(llm):
    document = "Tea leaves are steamed or pan-fired to make green tea. " * 20
    batch = [
        Request.chat(("system", "Answer from the document."), ("user", f"{document}\n\nQuestion {i}: what is this about?"), max_tokens=4)
        for i in range(3)
    ]
    out = llm.generate(batch)
    assert out[1].cached_tokens > 0.9 * out[1].prompt_tokens
    assert out[2].cached_tokens > 0.9 * out[2].prompt_tokens


def test_cache_around_the_real_backend_makes_no_model_calls_on_rerun(llm, tmp_path):
    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        @property
        def identity(self):
            return self.inner.identity

        def generate(self, requests):
            self.calls += len(requests)
            return self.inner.generate(requests)

    counting = Counting(llm)
    batch = [Request.chat(("user", f"Name a colour number {i}."), max_tokens=6) for i in range(3)]
    first = CachedLLM(counting, tmp_path / "cache.sqlite").generate(batch)
    second = CachedLLM(counting, tmp_path / "cache.sqlite").generate(batch)
    assert counting.calls == 3
    assert second == first


def test_count_tokens_matches_the_tokenizer(llm):
    from fineinstructions.models.tokens import load_token_counter

    text = "Instruction: Why is the sky blue?\n\nAnswer: Rayleigh scattering."
    assert llm.count_tokens(text) == load_token_counter("embedded").count([text])[0]


def test_token_logprobs_are_the_models_own_distribution_with_or_without_a_grammar(llm):
    prompt = ("user", "Rate the sentence 'the sky is blue' from 1 to 5 as JSON.")
    for options in ({}, {"json_schema": SCHEMA}):
        plain, asked = llm.generate([Request.chat(prompt, max_tokens=24, **options),
                                     Request.chat(prompt, max_tokens=24, top_logprobs=4, **options)])
        assert asked.text == plain.text and not plain.logprobs  # asking changes nothing else
        assert len(asked.logprobs) == asked.completion_tokens > 0
        for token in asked.logprobs:
            assert len(token.top) == 4 and token.top[0][1] >= token.top[-1][1]
            # Greedy picks the most likely token unless the grammar overrules the model.
            assert token.logprob <= token.top[0][1] + 1e-6
            if not options:
                assert token.top[0] == (token.token, pytest.approx(token.logprob))
