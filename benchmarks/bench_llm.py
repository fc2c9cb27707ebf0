"""LLM backend throughput on the embedded model.

1. Overhead of our interface: the same prompts through ``LlamaCppLLM.generate`` and
   through llama-cpp-python called directly (``create_completion`` on the same formatted
   prompt), interleaved in one run, greedy decoding. Prints tokens/s of both and the
   overhead.
2. Concurrency scaling of the HTTP client against llama.cpp's OpenAI-compatible server
   on 127.0.0.1: requests/s and tokens/s at several ``max_concurrency`` values.

    .venv/bin/python benchmarks/bench_llm.py [--prompts 24] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
from fineinstructions.models.llm import Request

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "queries.jsonl"


def prompts(n: int) -> list[str]:
    if DATA.is_file():
        with open(DATA, encoding="utf-8") as handle:
            texts = [json.loads(line)["text"] for line in handle]
        texts = [t for t in texts if len(t) < 300]
        return [f"Answer briefly: {t}" for t in texts[:n]]
    return [f"Answer briefly: what is {i} squared?" for i in range(n)]


def bench_overhead(texts: list[str], max_tokens: int, rounds: int) -> None:
    ours = LlamaCppLLM(n_ctx=2048)
    ours.load()
    llama = ours.llama  # the same loaded model, called directly
    requests = [Request.chat(("user", t), max_tokens=max_tokens) for t in texts]
    formatted = [ours.prompt(r) for r in requests]

    def direct() -> int:
        tokens = 0
        for prompt, stops in formatted:
            ids = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
            out = llama.create_completion(
                ids, max_tokens=max_tokens, temperature=0.0, top_p=1.0, stop=stops, seed=0
            )
            tokens += out["usage"]["completion_tokens"]
        return tokens

    def interface() -> int:
        return sum(c.completion_tokens for c in ours.generate(requests))

    rates = {"direct": [], "interface": []}
    for _ in range(rounds):
        for name, run in (("direct", direct), ("interface", interface)):
            llama.reset()  # both start from an empty KV cache
            start = time.perf_counter()
            tokens = run()
            rates[name].append(tokens / (time.perf_counter() - start))
    direct_rate = statistics.median(rates["direct"])
    ours_rate = statistics.median(rates["interface"])
    print(f"prompts: {len(texts)}, max_tokens: {max_tokens}, rounds: {rounds} (median)")
    print(f"  llama-cpp-python directly : {direct_rate:8.1f} completion tokens/s")
    print(f"  through LlamaCppLLM       : {ours_rate:8.1f} completion tokens/s")
    print(f"  overhead                  : {100 * (1 - ours_rate / direct_rate):8.2f} %")
    ours.close()


def bench_http(texts: list[str], max_tokens: int, levels: list[int]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from llama_server import MODEL_ALIAS, LlamaServer

    from fineinstructions.models.openai_backend import OpenAICompatibleLLM

    requests = [Request.chat(("user", t), max_tokens=max_tokens) for t in texts]
    server = LlamaServer(n_ctx=2048).start()
    try:
        print(f"HTTP client vs llama.cpp server on 127.0.0.1 ({len(requests)} requests)")
        print(f"  {'concurrency':>11} {'requests/s':>11} {'tokens/s':>9} {'seconds':>8}")
        for level in levels:
            llm = OpenAICompatibleLLM(
                MODEL_ALIAS, base_url=server.base_url, dialect="llama_cpp", max_concurrency=level
            )
            start = time.perf_counter()
            out = llm.generate(requests)
            elapsed = time.perf_counter() - start
            tokens = sum(c.completion_tokens for c in out)
            failed = sum(not c.ok for c in out)
            print(
                f"  {level:>11} {len(requests) / elapsed:>11.2f} {tokens / elapsed:>9.1f} "
                f"{elapsed:>8.2f}" + (f"  ({failed} failed)" if failed else "")
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,2,4,8")
    args = parser.parse_args()
    texts = prompts(args.prompts)
    bench_overhead(texts, args.max_tokens, args.rounds)
    bench_http(texts, args.max_tokens, [int(c) for c in args.concurrency.split(",")])


if __name__ == "__main__":
    main()
