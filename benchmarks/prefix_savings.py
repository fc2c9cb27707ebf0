"""Prefill saved by document-first grouping in a finished `instantiate` run (llama.cpp).

llama.cpp keeps the previous prompt's KV cache and re-evaluates only what follows the
longest common prefix. Every request shares the prompt's fixed head (system message and
worked examples) with the one before it, whatever the order; what document-first
grouping adds is the document itself, shared by the requests of one document. So:

    saved by grouping = cached prompt tokens - requests x fixed-head tokens

Usage: python benchmarks/prefix_savings.py PAIRS_DIR [--preset embedded]
(prints the stage's prompt/cached token totals and that split).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fineinstructions.config import load_config
from fineinstructions.models.llama_cpp_backend import LlamaCppLLM
from fineinstructions.stages.instantiate import Instantiator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=Path, help="a folder `fineinstructions instantiate` wrote")
    parser.add_argument("--preset", default="embedded")
    args = parser.parse_args()
    stats = json.loads((args.pairs / "stats.json").read_text())["instantiate"]
    config = load_config(args.preset)
    llm = LlamaCppLLM(config.instantiate.llm.model, n_ctx=config.instantiate.llm.n_ctx)
    stage = Instantiator(llm, prompt=config.instantiate.prompt, constraint="none")
    marker = "\x00DOCUMENT\x00"
    prompt, _ = llm.prompt(stage.request(marker, "t"))
    head = prompt[: prompt.rindex(marker)]
    head_tokens = len(llm.llama.tokenize(head.encode("utf-8"), add_bos=True, special=True))
    requests, prompt_tokens, cached = stats["in"], stats["prompt_tokens"], stats["cached_prompt_tokens"]
    grouped = cached - requests * head_tokens
    print(f"requests: {requests} over {stats['documents']} documents")
    print(f"prompt tokens: {prompt_tokens}; reused from the KV cache: {cached} ({cached / prompt_tokens:.1%})")
    print(f"fixed head (system + examples + 'Document:'): {head_tokens} tokens per request, {requests * head_tokens} in all")
    print(
        f"saved by document-first grouping (the document shared by its requests): {grouped} tokens "
        f"({grouped / prompt_tokens:.1%} of prompt tokens); prefill evaluated: {prompt_tokens - cached}"
    )


if __name__ == "__main__":
    main()
