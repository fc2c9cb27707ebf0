"""``fineinstructions train templatizer|instantiator``: fine-tune a student on silver data
with the Hugging Face ``transformers`` Trainer (DESIGN §7).

Each silver example is a chat (the user turn, the teacher's target). It is rendered with
the base model's own chat template, exactly as the ``transformers`` backend prompts the
model later: the prompt (with the generation prompt) and the target are tokenized apart
and joined, and the loss is on the target's tokens only (the assistant turn, its
end-of-turn token included, so the student learns to stop). Examples longer than
``max_length`` are left out (cutting one would teach a target without its end), counted
in ``train.json``.

``--base`` is a Hugging Face model name or folder, or ``embedded``: the embedded
SmolLM2-135M, loaded from its GGUF file as the transformers backend does (dequantized),
so the whole loop runs offline. With ``lora`` only low-rank adapters are trained (through
``peft``) and merged into the weights at the end. Either way the output folder is a plain
Hugging Face model folder (weights, config, tokenizer with its chat template) that works
unchanged as ``templatize.llm.model`` / ``instantiate.llm.model`` with the transformers
or vLLM backend in ``fineinstructions`` mode. Checkpoints are the Trainer's own
(``MODEL_DIR/checkpoints``); run again after a kill, training resumes from the last one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.io import write_json

IGNORE = -100  # the label transformers' loss skips
MODES = {"templatizer": "templatize", "instantiator": "instantiate"}


@dataclass
class StudentSettings:
    max_steps: int | None = None  # None: ``epochs`` passes over the silver data
    epochs: float = 1.0
    learning_rate: float | None = None  # None: 5e-5 (full fine-tuning) or 2e-4 (LoRA)
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 2048
    lora: bool = False
    lora_rank: int = 16
    warmup_ratio: float = 0.03
    seed: int = 0
    save_steps: int = 200


def load_base(base: str) -> tuple[Any, Any]:
    """The tokenizer and model of ``base`` (a hub name, a folder, or ``embedded``)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise MissingDependencyError("transformers", "transformers", "training a helper") from None
    source, options = base, {}
    if base == "embedded":
        from fineinstructions.models.embedded import embedded_llm_path

        path = embedded_llm_path()
        source, options = str(path.parent), {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **options)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **options)
    except OSError as error:
        raise UserError(f"cannot load the base model {base!r}: {error}\n  fix: give a Hugging Face model folder, a hub name "
                        "this machine can reach, or 'embedded'") from None
    if options:
        # GGUF weights arrive dequantized to float32, but the loader still marks the model
        # quantized (and would write that into the saved config): it is a plain model now.
        model.is_quantized = False
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"the base model {base!r} has no chat template\n  fix: use an instruct model, whose tokenizer has one")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model


def encode(messages: list[dict[str, str]], tokenizer: Any) -> dict[str, list[int]]:
    """Token ids of one chat and labels that are the assistant turn's tokens only."""
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise UserError("the base model's chat template renders a conversation that does not start with its own prompt; "
                        "the assistant turn cannot be told apart\n  fix: use another base model")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt_ids + target_ids, "labels": [IGNORE] * len(prompt_ids) + target_ids}


class Examples:
    """Encoded silver examples (a map-style dataset for the Trainer)."""

    def __init__(self, rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> None:
        self.items: list[dict[str, list[int]]] = []
        self.too_long = 0
        for row in rows:
            item = encode([{"role": m["role"], "content": m["content"]} for m in row["messages"]], tokenizer)
            if len(item["input_ids"]) > max_length:
                self.too_long += 1
                continue
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.items[index]


def train_student(
    helper: str, silver: str | Path, base: str, output: str | Path, settings: StudentSettings, *,
    overwrite: bool = False, log: Callable[[str], None] = print,
) -> dict:
    """Fine-tune ``base`` on the silver data of ``helper`` into ``output`` (a Hugging Face
    model folder); resumes from the last checkpoint, and a finished folder trained the same
    way is kept. Returns ``output/train.json``."""
    from fineinstructions.experiments.pretrain import last_checkpoint
    from fineinstructions.experiments.silver import read_silver

    if helper not in MODES:
        raise UserError(f"unknown helper {helper!r}; train 'templatizer' or 'instantiator' (or 'retriever')")
    try:
        import torch
        from transformers import (
            DataCollatorForSeq2Seq,
            PrinterCallback,
            Trainer,
            TrainingArguments,
            set_seed,
        )
    except ImportError:
        raise MissingDependencyError("transformers", "transformers", "training a helper") from None
    out = Path(output)
    rate = settings.learning_rate or (2e-4 if settings.lora else 5e-5)
    asked = {"helper": helper, "silver": str(Path(silver).resolve()), "base": base,
             "settings": {**asdict(settings), "learning_rate": rate}}
    done = trained_helper(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    elif done is not None:
        if {k: done.get(k) for k in asked} == asked:
            log(f"train {helper}: {out} is already trained from {silver}; kept")
            return done
        raise UserError(f"{out} holds a student trained otherwise (see {out / 'train.json'})\n"
                        "  fix: choose another output folder, or pass --overwrite")
    elif out.exists() and any(p.name != "checkpoints" for p in out.iterdir()):
        raise UserError(f"{out} is not empty and holds no student being trained\n"
                        "  fix: choose another output folder, or pass --overwrite")
    rows = read_silver(silver, helper)
    set_seed(settings.seed)
    tokenizer, model = load_base(base)
    data = Examples(rows, tokenizer, settings.max_length)
    if not len(data):
        raise UserError(f"every silver example of {silver} is longer than --max-length {settings.max_length} tokens\n"
                        "  fix: a larger --max-length")
    if settings.lora:
        model = _with_lora(model, settings.lora_rank)
    per_step = settings.batch_size * settings.grad_accum
    steps = settings.max_steps or max(1, math.ceil(len(data) * settings.epochs / per_step))
    checkpoints = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(checkpoints), max_steps=steps, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=rate, lr_scheduler_type="cosine",
        warmup_steps=math.ceil(settings.warmup_ratio * steps), seed=settings.seed, data_seed=settings.seed,
        save_steps=settings.save_steps, save_total_limit=1, logging_steps=max(1, min(10, steps // 10)),
        report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(), remove_unused_columns=False,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_progress(log, helper))
    last = last_checkpoint(checkpoints)
    if last:
        log(f"train {helper}: resuming from {last}")
    log(f"train {helper}: {len(data)} examples ({data.too_long} longer than {settings.max_length} tokens left out), "
        f"{steps} steps of {per_step} on {base}{' with LoRA' if settings.lora else ''}")
    tick = time.monotonic()
    trainer.train(resume_from_checkpoint=last)
    seconds = time.monotonic() - tick
    trained = trainer.model
    if settings.lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    result = {
        **asked, "mode": MODES[helper], "examples": len(data), "too_long": data.too_long,
        "steps": steps, "final_loss": history[-1]["loss"] if history else None,
        "loss_curve": [{"step": e["step"], "loss": e["loss"]} for e in history], "seconds_this_run": round(seconds, 2),
        "use": {f"{MODES[helper]}.mode": "fineinstructions", f"{MODES[helper]}.llm.backend": "transformers",
                f"{MODES[helper]}.llm.model": str(out.resolve())},
    }
    write_json(result, out / "train.json")
    shutil.rmtree(checkpoints, ignore_errors=True)
    use = " ".join(f"--set {k}={v}" for k, v in result["use"].items())
    log(f"train {helper}: {steps} steps, final loss {result['final_loss']} -> {out}\n  use it: {use}")
    return result


def _progress(log: Callable[[str], None], helper: str) -> Any:
    """A callback that logs each logged step: step of steps, loss, elapsed time."""
    from transformers import TrainerCallback

    started = time.monotonic()

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                log(f"train {helper}: step {state.global_step}/{state.max_steps}, loss {logs['loss']:.4f}, "
                    f"elapsed {time.monotonic() - started:.0f} s")

    return Progress()


def _with_lora(model: Any, rank: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MissingDependencyError("peft", "train", "LoRA fine-tuning") from None
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def trained_helper(folder: str | Path) -> dict | None:
    """``train.json`` of a finished student folder, or None."""
    path = Path(folder) / "train.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
