"""``fineinstructions pretrain``: pre-train a Llama-architecture model from scratch on an
exported corpus, with the Hugging Face ``transformers`` Trainer (no training loop here).

The corpus is a folder ``export --format tokens`` wrote (``input_ids.npy``,
``label_mask.npy``, ``meta.json``): documents (pairs, or the control corpus's documents)
already separated by end-of-sequence tokens. It is cut into sequences of ``seq_len``
tokens (concatenate and chunk); with ``loss="answer"`` the loss is on the tokens the
mask marks (the answers, as the paper trains: the instruction-tuning objective alone),
with ``loss="all"`` on every token. Training stops after ``tokens`` tokens (rounded down
to whole optimizer steps), so two arms given the same budget, size, seed and schedule
see the same number of tokens.

Checkpoints are the Trainer's own (``MODEL_DIR/checkpoint-N``), every ``save_steps``; run
again after a kill, it resumes from the last one. Several GPUs or nodes: start the same
command under ``torchrun`` or ``accelerate launch`` (the Trainer reads the launcher's
environment; on CPU the processes talk over gloo).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.io import write_json

# Llama shapes: a toy for CPU tests and demos, and the paper's two smaller sizes.
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "300m": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 20, "num_attention_heads": 16,
             "num_key_value_heads": 8},
    "1.8b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 8},
}
IGNORE = -100  # the label transformers' loss skips


@dataclass
class PretrainSettings:
    size: str = "tiny"
    seq_len: int = 256
    tokens: int | None = None  # training budget; None: one pass over the corpus
    loss: str = "answer"
    batch_size: int = 8  # sequences per device per step
    grad_accum: int = 1
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    schedule: str = "cosine"
    weight_decay: float = 0.1
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 5


class PackedTokens:
    """Sequences of ``seq_len`` tokens cut from the corpus memmaps, with labels."""

    def __init__(self, corpus: Path, seq_len: int, loss: str) -> None:
        self.ids = np.memmap(corpus / "input_ids.npy", dtype="<u4", mode="r")
        self.mask = np.memmap(corpus / "label_mask.npy", dtype=np.uint8, mode="r")
        if len(self.ids) != len(self.mask):
            raise UserError(f"{corpus}: input_ids.npy and label_mask.npy differ in length\n  fix: export the corpus again")
        self.seq_len, self.loss = seq_len, loss

    def __len__(self) -> int:
        return len(self.ids) // self.seq_len

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        window = slice(index * self.seq_len, (index + 1) * self.seq_len)
        ids = torch.from_numpy(self.ids[window].astype(np.int64))
        labels = ids.clone()
        if self.loss == "answer":
            labels[torch.from_numpy(self.mask[window] == 0)] = IGNORE
        return {"input_ids": ids, "labels": labels}


def last_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing (it writes ``trainer_state.json``
    last); newer ones a kill cut short are removed, so a resume never reads half a checkpoint."""
    if not folder.exists():
        return None
    numbered = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()]
    for path in sorted(numbered, key=lambda p: int(p.name.rsplit("-", 1)[-1]), reverse=True):
        if (path / "trainer_state.json").exists():
            return str(path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def corpus_meta(corpus: Path) -> dict[str, Any]:
    path = corpus / "meta.json"
    if not path.exists():
        raise UserError(f"{corpus} is not a token corpus (no meta.json)\n  fix: write one with `fineinstructions export DATASET --format tokens`")
    return json.loads(path.read_text(encoding="utf-8"))


def model_config(size: str | Path, vocab_size: int, seq_len: int, eos: int) -> Any:
    """A ``LlamaConfig`` for a named size, or read from a config file (JSON)."""
    from transformers import LlamaConfig

    if str(size) in SIZES:
        shape = SIZES[str(size)]
    elif Path(size).is_file():
        shape = json.loads(Path(size).read_text(encoding="utf-8"))
    else:
        raise UserError(f"unknown model size {size!r}\n  fix: use one of {', '.join(SIZES)}, or a JSON file of LlamaConfig fields")
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=seq_len, bos_token_id=eos, eos_token_id=eos,
                       tie_word_embeddings=True, **shape)


def run_pretrain(
    corpus: str | Path, output: str | Path, settings: PretrainSettings, *, log: Callable[[str], None] = print,
    vocab_size: int | None = None,
) -> dict:
    """Pre-train from scratch on ``corpus`` into ``output``; resumes from its last
    checkpoint. Returns (and writes to ``output/train.json``) the run's figures."""
    try:
        import torch
        from transformers import (
            LlamaForCausalLM,
            PrinterCallback,
            Trainer,
            TrainingArguments,
            set_seed,
        )
    except ImportError:
        raise MissingDependencyError("transformers", "transformers", "pre-training") from None
    if settings.loss not in ("answer", "all"):
        raise UserError(f"--loss must be 'answer' or 'all', not {settings.loss!r}")
    corpus, out = Path(corpus), Path(output)
    meta = corpus_meta(corpus)
    data = PackedTokens(corpus, settings.seq_len, settings.loss)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = settings.seq_len * settings.batch_size * settings.grad_accum * world
    budget = settings.tokens if settings.tokens is not None else len(data) * settings.seq_len
    steps = budget // per_step
    if steps < 1 or len(data) < settings.batch_size * world:
        raise UserError(
            f"{budget} tokens make no whole step of {per_step} tokens ({settings.batch_size} sequences of "
            f"{settings.seq_len} on {world} process(es)); the corpus holds {len(data)} sequences\n"
            "  fix: a larger corpus or --tokens, or a smaller --batch-size or --seq-len"
        )
    set_seed(settings.seed)
    vocab = vocab_size or _vocab_size(meta)
    config = model_config(settings.size, vocab, settings.seq_len, int(meta["eos_token_id"]))
    out.mkdir(parents=True, exist_ok=True)
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.schedule, warmup_steps=math.ceil(settings.warmup_ratio * steps),
        weight_decay=settings.weight_decay, seed=settings.seed, data_seed=settings.seed,
        save_steps=settings.save_steps, save_total_limit=2,
        logging_steps=max(1, min(settings.logging_steps, steps // 10)),  # a loss curve even for a short run
        report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        ddp_backend="gloo" if not torch.cuda.is_available() and world > 1 else None,
    )
    model = LlamaForCausalLM(config)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.remove_callback(PrinterCallback)  # the loss curve goes to train.json, not stdout
    last = last_checkpoint(out)
    if last:
        log(f"pretrain: resuming from {last}")
    tick = time.monotonic()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.monotonic() - tick
    start_step = int(Path(last).name.split("-")[-1]) if last else 0
    trained = (steps - start_step) * per_step
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "corpus": str(corpus.resolve()), "corpus_tokens": int(meta["tokens"]), "tokenizer": meta.get("tokenizer"),
        "settings": asdict(settings), "parameters": int(model.num_parameters()), "processes": world,
        "steps": steps, "tokens_per_step": per_step, "training_tokens": steps * per_step,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_curve": [{"step": e["step"], "loss": e["loss"], "tokens": e["step"] * per_step} for e in history],
        "seconds_this_run": round(seconds, 2), "tokens_per_s": round(trained / seconds, 1) if seconds else None,
    }
    if trainer.is_world_process_zero():
        trainer.save_model(str(out / "final"))
        write_json({**meta, "vocab_size": vocab}, out / "final" / "corpus_meta.json")
        write_json(result, out / "train.json")
    log(f"pretrain: {steps} steps, {steps * per_step} tokens, final loss {result['final_loss']}, "
        f"{result['tokens_per_s']} tokens/s -> {out / 'final'}")
    return result


def _vocab_size(meta: dict) -> int:
    from fineinstructions.models.tokens import load_token_counter

    if meta.get("vocab_size"):
        return int(meta["vocab_size"])
    spec = meta.get("tokenizer")
    if not spec:
        raise UserError("the corpus does not name its tokenizer\n  fix: export it again")
    return load_token_counter(spec).vocab_size
