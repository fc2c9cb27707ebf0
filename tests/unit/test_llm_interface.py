import sys

import pytest

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.models.llm import (
    Completion,
    Request,
    backend_class,
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
    assert truncated.error_kind == "invalid_output" and truncated.parsed is None
    assert truncated.text == '{"template": "a <fi>b'
    wrong = parse_structured(request, '{"template": "a", "score": 5}')
    assert wrong.error_kind == "invalid_output"
    plain = parse_structured(Request.chat(("user", "x")), "not json")
    assert plain.ok and plain.parsed is None


def test_completions_round_trip_through_json():
    completion = Completion(text="hé", parsed={"a": [1]}, finish_reason="stop", prompt_tokens=3, completion_tokens=1)
    assert Completion.from_json(completion.to_json()) == completion


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
