"""Templatize on the embedded model: what each decoding constraint costs and gives.

The same real queries (every k-th row of ../shared/data/queries.jsonl, so every source is
in the sample) are templatized under each constraint, one after another as the stage runs
them (the shared prompt prefix stays in llama.cpp's KV cache):

- ``query-lazy``: the per-query grammar, decoded by our lazy grammar check (the default);
- ``query-full``: the same grammar through llama-cpp-python's own sampler, which applies
  the grammar to the whole vocabulary at every step;
- ``pattern``: the JSON-schema pattern (at least one ``<fi>`` tag), lazily checked;
- ``none``: a plain JSON schema (lazily checked).

Prints queries/s, completion tokens/s, the valid-template rate and the rejection reasons
of each; and how many outputs query-lazy and query-full share (greedy decoding under the
same grammar; a prefix replayed from the KV cache in a different batch shape can flip a
near-tie, so a few may differ — the test suite checks identity from a fresh cache).

    .venv/bin/python benchmarks/bench_templatize.py [--queries 24]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
from fineinstructions.models.llm import Completion, parse_structured
from fineinstructions.records import QueryRow
from fineinstructions.stages.templatize import Templatizer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "queries.jsonl"


def sample(n: int) -> list[QueryRow]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    step = max(1, len(rows) // n)
    return [QueryRow(id=r["id"], text=r["text"], source=r["source"]) for r in rows[::step][:n]]


def full_grammar_generate(llm: LlamaCppLLM, request) -> Completion:
    """llama-cpp-python's own grammar sampling, from a fresh KV cache."""
    from llama_cpp import LlamaGrammar

    prompt, stops = llm.prompt(request)
    tokens = llm.llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    response = llm.llama.create_completion(
        tokens,
        max_tokens=request.max_tokens,
        temperature=0.0,
        stop=stops,
        grammar=LlamaGrammar.from_string(request.grammar, verbose=False),
    )
    choice = response["choices"][0]
    return parse_structured(
        request,
        choice["text"],
        finish_reason=choice["finish_reason"],
        prompt_tokens=len(tokens),
        completion_tokens=response["usage"]["completion_tokens"],
    )


def run(name: str, llm: LlamaCppLLM, queries: list[QueryRow]) -> list[str]:
    constraint = "query" if name.startswith("query") else name
    templatizer = Templatizer(llm, constraint=constraint)
    outcomes, texts, tokens = Counter(), [], 0
    started = time.perf_counter()
    for query in queries:
        request = templatizer.request(query.text)
        if name == "query-full":
            completion = full_grammar_generate(llm, request)
        else:
            [completion] = llm.generate([request])
        tokens += completion.completion_tokens
        texts.append(completion.text)
        row = templatizer.judge_output(query, completion)
        outcomes["valid" if hasattr(row, "template") else row.reason] += 1
    seconds = time.perf_counter() - started
    valid = outcomes.pop("valid", 0)
    print(
        f"{name:11s} {len(queries) / seconds:6.2f} queries/s {tokens / seconds:7.1f} tok/s "
        f"valid {valid}/{len(queries)} ({valid / len(queries):.0%})  rejected: "
        + (", ".join(f"{k} {v}" for k, v in outcomes.most_common()) or "none")
    )
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=24)
    args = parser.parse_args()
    queries = sample(args.queries)
    llm = LlamaCppLLM("embedded", n_ctx=4096)
    llm.load()
    print(f"{len(queries)} real queries, SmolLM2-135M (llama.cpp), greedy")
    lazy = run("query-lazy", llm, queries)
    full = run("query-full", llm, queries)
    run("pattern", llm, queries)
    run("none", llm, queries)
    same = sum(a == b for a, b in zip(lazy, full, strict=True))
    print(f"query-lazy and query-full outputs identical for {same} of {len(queries)} queries")


if __name__ == "__main__":
    main()
