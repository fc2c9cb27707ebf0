"""Does ``pretrain`` cost anything over the bare ``transformers`` Trainer?

Both train the same Llama shape from the same initialisation on the same synthetic token
corpus for the same steps, in this process, alternating twice (the better run of each
counts): ``run_pretrain`` (memmap
corpus, answer mask, checkpoint settings, its logging) and a bare ``Trainer`` fed a
plain in-memory dataset of the same sequences. Target: ``pretrain``'s training tokens/s
within 5 % of the bare Trainer's. Run it on the machine you train on (CPU here; a GPU
with ``--size 300m`` for the real figure).

    python benchmarks/bench_pretrain.py                  # tiny, 60 steps
    python benchmarks/bench_pretrain.py --size 300m --steps 30 --seq-len 1024
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

VOCAB = 8192
EOS = 2


def write_corpus(folder: Path, tokens: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=tokens).astype("<u4")
    ids[rng.random(tokens) < 0.01] = EOS
    mask = (rng.random(tokens) < 0.7).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    ids.tofile(folder / "input_ids.npy")
    mask.tofile(folder / "label_mask.npy")
    (folder / "meta.json").write_text(json.dumps({"tokens": tokens, "eos_token_id": EOS, "vocab_size": VOCAB, "tokenizer": "synthetic"}))
    return folder


def bare_trainer(corpus: Path, args, steps: int, out: Path) -> float:
    """Tokens/s of the bare Trainer on the same sequences, held in memory as tensors."""
    import torch
    from transformers import LlamaForCausalLM, Trainer, TrainingArguments, set_seed

    from fineinstructions.experiments.pretrain import model_config

    ids = np.fromfile(corpus / "input_ids.npy", dtype="<u4").astype(np.int64)
    count = len(ids) // args.seq_len
    sequences = torch.from_numpy(ids[: count * args.seq_len].reshape(count, args.seq_len))
    data = [{"input_ids": s, "labels": s} for s in sequences]
    set_seed(0)
    model = LlamaForCausalLM(model_config(args.size, VOCAB, args.seq_len, EOS))
    training = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=args.batch_size,
                                 learning_rate=3e-3, lr_scheduler_type="cosine", report_to=[], disable_tqdm=True,
                                 save_strategy="no", logging_steps=1000, use_cpu=not torch.cuda.is_available(),
                                 bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), seed=0)
    trainer = Trainer(model=model, args=training, train_dataset=data)
    tick = time.monotonic()
    trainer.train()
    return steps * args.batch_size * args.seq_len / (time.monotonic() - tick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    from fineinstructions.experiments.pretrain import PretrainSettings, run_pretrain

    work = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    per_step = args.seq_len * args.batch_size
    corpus = write_corpus(work / "corpus", per_step * args.steps + args.seq_len)
    settings = PretrainSettings(size=args.size, seq_len=args.seq_len, tokens=per_step * args.steps, loss="all",
                                batch_size=args.batch_size, save_steps=10**9, logging_steps=1000)
    # Each twice, alternating, so warming up (threads, allocator, kernels) favours neither.
    ours, bare = [], []
    for round in range(2):
        ours.append(run_pretrain(corpus, work / f"ours-{round}", settings, log=lambda m: None)["tokens_per_s"])
        bare.append(bare_trainer(corpus, args, args.steps, work / f"bare-{round}"))
    ours, bare = max(ours), max(bare)
    print(f"size {args.size}, {args.steps} steps of {per_step} tokens")
    print(f"pretrain:      {ours:,.0f} tokens/s")
    print(f"bare Trainer:  {bare:,.0f} tokens/s")
    print(f"ratio:         {ours / bare:.3f} (target: at least 0.95)")


if __name__ == "__main__":
    main()
