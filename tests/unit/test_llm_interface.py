import json
import sys

import pytest

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.models.llm import (
    Capabilities,
    Completion,
    ErrorKind,
    Request,
    TokenLogprob,
    backend_class,
    capabilities,
    context_overflow,
    failed,
    parse_structured,
    request_key,
    schema_problem,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "template": {"type": "string", "pattern": "<fi>.+</fi>"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["template", "score"],
    "additionalProperties": False,
}


def test_a_request_takes_at_most_one_constraint():
    with pytest.raises(ValueError):
        Request.chat(("user", "x"), json_schema={"type": "object"}, regex="a+")
    with pytest.raises(ValueError):
        Request(messages=())


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"template": "how <fi>x</fi>", "score": 4}, None),
        ({"template": "how <fi>x</fi>", "score": 4, "tags": ["a"]}, None),
        ({"template": "no tags", "score": 4}, "does not match"),
        ({"template": "<fi>x</fi>", "score": 6}, "maximum"),
        ({"template": "<fi>x</fi>", "score": True}, "expected integer"),
        ({"template": "<fi>x</fi>"}, "missing 'score'"),
        ({"template": "<fi>x</fi>", "score": 1, "extra": 1}, "unexpected 'extra'"),
        ({"template": "<fi>x</fi>", "score": 1, "tags": [1]}, "$.tags[0]"),
        (["not", "an", "object"], "expected object"),
    ],
)
def test_schema_problems(value, problem):
    found = schema_problem(value, SCHEMA)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_anyof_and_null():
    schema = {"anyOf": [{"type": "null"}, {"type": "object", "required": ["a"]}]}
    assert schema_problem(None, schema) is None
    assert schema_problem({"a": 1}, schema) is None
    assert schema_problem({"b": 1}, schema) is not None


def test_structured_output_is_parsed_or_an_error_never_an_exception():
    request = Request.chat(("user", "x"), json_schema=SCHEMA)
    good = parse_structured(request, '{"template": "a <fi>b</fi>", "score": 5}')
    assert good.ok and good.parsed == {"template": "a <fi>b</fi>", "score": 5}
    truncated = parse_structured(request, '{"template": "a <fi>b', finish_reason="length")
    assert truncated.error_kind is ErrorKind.INVALID_OUTPUT and truncated.parsed is None
    assert truncated.error_detail.startswith("not JSON")
    assert truncated.text == '{"template": "a <fi>b'
    wrong = parse_structured(request, '{"template": "a", "score": 5}')
    assert wrong.error_kind is ErrorKind.INVALID_OUTPUT and "does not match" in wrong.error_detail
    plain = parse_structured(Request.chat(("user", "x")), "not json")
    assert plain.ok and plain.parsed is None


def test_completions_round_trip_through_json():
    completion = Completion(text="hé", parsed={"a": [1]}, finish_reason="stop", prompt_tokens=3, completion_tokens=1)
    assert Completion.from_json(completion.to_json()) == completion
    for error in (context_overflow(5000, 4096), failed(ErrorKind.BACKEND_ERROR, "HTTP 503: busy: try later")):
        again = Completion.from_json(error.to_json())
        assert again == error and isinstance(again.error_kind, ErrorKind) and not again.ok
    assert json.loads(context_overflow(5000, 4096).to_json())["error_kind"] == "context_overflow"


@pytest.mark.parametrize(
    ("old", "kind", "detail"),
    [
        ("context_overflow: the prompt has 9 tokens; the context window holds 4", ErrorKind.CONTEXT_OVERFLOW,
         "the prompt has 9 tokens; the context window holds 4"),
        ("backend_error: HTTP 503: busy (gave up after 7 attempts)", ErrorKind.BACKEND_ERROR,
         "HTTP 503: busy (gave up after 7 attempts)"),
        ("invalid_output: $: missing 'a'", ErrorKind.INVALID_OUTPUT, "$: missing 'a'"),
        ("something odd", ErrorKind.BACKEND_ERROR, "something odd"),
        (None, None, ""),
    ],
)
def test_completions_written_with_the_old_error_string_load_typed(old, kind, detail):
    loaded = Completion.from_json(json.dumps({"text": "t", "parsed": None, "finish_reason": None,
                                              "prompt_tokens": 2, "completion_tokens": 0, "error": old,
                                              "cached_tokens": 0}))
    assert (loaded.error_kind, loaded.error_detail, loaded.ok) == (kind, detail, kind is None)


def test_an_error_kind_is_one_of_four_and_reads_as_its_reject_reason():
    assert [k.value for k in ErrorKind] == ["context_overflow", "invalid_output", "backend_error", "server_unavailable"]
    assert Completion(error_kind="backend_error").error_kind is ErrorKind.BACKEND_ERROR
    with pytest.raises(ValueError):
        Completion(error_kind="bad_kind")


def test_each_backend_declares_what_it_can_do():
    from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
    from fineinstructions.models.openai_backend import OpenAICompatibleLLM
    from fineinstructions.models.transformers_backend import TransformersLLM
    from fineinstructions.models.vllm_backend import VLLMLLM

    assert capabilities(LlamaCppLLM()) == Capabilities(
        constrains_json_schema=True, constrains_gbnf=True, counts_tokens_locally=True, caches_prefixes=True,
        reports_logprobs=True,
    )
    assert capabilities(VLLMLLM("m")) == Capabilities(
        constrains_json_schema=True, constrains_regex=True, counts_tokens_locally=True, caches_prefixes=True,
        reports_logprobs=True,
    )
    assert not capabilities(VLLMLLM("m", enable_prefix_caching=False)).caches_prefixes
    assert capabilities(TransformersLLM("m")) == Capabilities(counts_tokens_locally=True, reports_logprobs=True)
    assert capabilities(backend_class("fake")()) == Capabilities(counts_tokens_locally=True)
    served = {dialect: capabilities(OpenAICompatibleLLM("m", dialect=dialect)) for dialect in ("openai", "vllm", "vllm_legacy", "llama_cpp")}
    assert served["openai"] == Capabilities(constrains_json_schema=True, reports_logprobs=True)
    assert served["vllm"] == served["vllm_legacy"] == Capabilities(
        constrains_json_schema=True, constrains_regex=True, caches_prefixes=True, reports_logprobs=True
    )
    assert served["llama_cpp"] == Capabilities(
        constrains_json_schema=True, constrains_gbnf=True, caches_prefixes=True, reports_logprobs=True
    )
    assert capabilities(OpenAICompatibleLLM("m", tokenizer="some/tokenizer")).counts_tokens_locally
    assert capabilities(object()) == Capabilities()  # declares nothing, can do nothing
    with pytest.raises(ValueError, match="dialect"):
        OpenAICompatibleLLM("m", dialect="tgi")


def test_cache_keys_cover_model_request_sampling_seed_and_prompt_version():
    base = Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v1")
    key = request_key("llama_cpp:model-a", base)
    assert key == request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v1"))
    variants = [
        request_key("llama_cpp:model-b", base),
        request_key("openai:model-a", base),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u2"), temperature=0.7, seed=1, prompt_version="v1")),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.8, seed=1, prompt_version="v1")),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=2, prompt_version="v1")),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v2")),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v1", max_tokens=7)),
        request_key("llama_cpp:model-a", Request.chat(("system", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v1", json_schema={"type": "object"})),
        request_key("llama_cpp:model-a", Request.chat(("user", "s"), ("user", "u"), temperature=0.7, seed=1, prompt_version="v1")),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_registry_names_and_unknown_backend():
    assert backend_class("fake").__name__ == "ScriptedLLM"
    assert backend_class("llama_cpp").__name__ == "LlamaCppLLM"
    with pytest.raises(UserError, match="unknown LLM backend 'nope'"):
        backend_class("nope")


def test_missing_optional_dependency_gives_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'fineinstructions\[vllm\]'"):
        backend_class("vllm")


def test_importing_the_interface_imports_no_backend():
    import subprocess

    code = (
        "import sys, fineinstructions.models.llm, fineinstructions.models.cache;"
        "print([m for m in ('llama_cpp','vllm','torch','transformers','httpx') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_token_logprobs_survive_the_request_cache_round_trip():
    completion = Completion(
        text='{"score": 4}',
        logprobs=(TokenLogprob("4", -0.3, (("4", -0.3), ("5", -1.5))), TokenLogprob("}", -0.01)),
    )
    assert Completion.from_json(completion.to_json()) == completion
    assert "logprobs" not in json.loads(Completion(text="x").to_json())  # rows without them are unchanged


def test_asking_for_logprobs_is_a_distinct_request_and_old_keys_stay_valid():
    plain = Request.chat(("user", "u"))
    assert "top_logprobs" not in plain.canonical()  # the keys of every request made before it existed
    assert request_key("m", plain) != request_key("m", Request.chat(("user", "u"), top_logprobs=5))
    with pytest.raises(ValueError, match="top_logprobs"):
        Request.chat(("user", "u"), top_logprobs=21)


def test_vllm_logprobs_become_token_logprobs_most_likely_first():
    from types import SimpleNamespace as Obj

    from fineinstructions.models.vllm_backend import _logprobs

    tokenizer = Obj(decode=lambda ids: {7: "4", 8: "5", 9: "}"}[ids[0]])
    choice = Obj(
        token_ids=[7, 9],
        logprobs=[
            {8: Obj(logprob=-0.5, decoded_token="5"), 7: Obj(logprob=-1.0, decoded_token="4")},
            {9: Obj(logprob=-0.01, decoded_token=None)},
        ],
    )
    four, brace = _logprobs(choice, tokenizer)
    assert four == TokenLogprob("4", -1.0, (("5", -0.5), ("4", -1.0)))  # sampled, not the most likely
    assert brace == TokenLogprob("}", -0.01, (("}", -0.01),))  # decoded by the tokenizer when vLLM did not
    assert _logprobs(Obj(token_ids=[7], logprobs=None), tokenizer) == ()
