"""Hugging Face transformers backend: local models, batched generation with left padding.

For users who have the paper's released helpers (``fineinstructions/query_templatizer``,
``fineinstructions/template_instantiator``) or any causal LM as a hub id or folder.
``model="embedded"`` loads the embedded SmolLM2 GGUF (dequantized; needs ``gguf`` and
``accelerate``), so the backend can run with nothing downloaded.

Requests are grouped by their sampling settings (and, when sampling, their seed) and
generated ``batch_size`` at a time. transformers has no constrained decoding here: a
JSON-schema request is generated freely and then validated, so bad output comes back
as an ``invalid_output`` completion; regex and grammar requests get a per-request error.
Token log-probabilities (``top_logprobs``) are the log-softmax of the model's logits.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from fineinstructions.models.llm import (
    Completion,
    ErrorKind,
    Request,
    TokenLogprob,
    context_overflow,
    failed,
    parse_structured,
)


class TransformersLLM:
    kind = "transformers"
    constrains_json_schema = False  # generated freely, validated afterwards
    constrains_gbnf = False
    constrains_regex = False
    counts_tokens_locally = True
    caches_prefixes = False
    reports_logprobs = True
    token_count_method = "the model's tokenizer"
    checkpoint_every = None  # requests are grouped and batched across the whole call

    @classmethod
    def from_config(cls, config) -> "TransformersLLM":
        """The backend a ``[*.llm]`` table with ``backend = "transformers"`` describes."""
        return cls(config.model, batch_size=config.batch_size)

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str = "auto",
        gguf_file: str | None = None,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.gguf_file = gguf_file
        self._model = None
        self._tokenizer = None
        self.max_length: int | None = None

    @property
    def identity(self) -> str:
        name = self.model if self.model != "embedded" else "embedded-smollm2-gguf"
        return f"transformers:{name}" + (f":{self.gguf_file}" if self.gguf_file else "")

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, gguf = self.model, self.gguf_file
        if self.model == "embedded":
            from fineinstructions.models.embedded import embedded_llm_path

            path = embedded_llm_path()
            source, gguf = str(path.parent), path.name
        options = {"gguf_file": gguf} if gguf else {}
        self._tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left", **options)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        self._model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **options)
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model.to(device).eval()
        self.device = device
        self.max_length = getattr(self._model.config, "max_position_embeddings", None)

    def prompt(self, request: Request) -> str:
        self.load()
        return self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in request.messages],
            tokenize=False,
            add_generation_prompt=True,
        )

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.load()
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if request.regex is not None or request.grammar is not None:
                results[index] = failed(
                    ErrorKind.BACKEND_ERROR, "the transformers backend takes no regex or grammar constraints"
                )
                continue
            sampling = request.temperature > 0
            key = (request.max_tokens, request.temperature, request.top_p, request.stop,
                   request.seed if sampling else None, request.top_logprobs)
            groups[key].append(index)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for index, completion in zip(chunk, self._generate_batch([requests[i] for i in chunk]), strict=True):
                    results[index] = completion
        return results  # type: ignore[return-value]

    def _generate_batch(self, requests: list[Request]) -> list[Completion]:
        import torch

        tokenizer = self._tokenizer
        prompts = [self.prompt(r) for r in requests]
        lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        out: list[Completion | None] = [None] * len(requests)
        runnable = []
        for i, length in enumerate(lengths):
            if self.max_length and length + 1 > self.max_length:
                out[i] = context_overflow(length, self.max_length)
            else:
                runnable.append(i)
        if runnable:
            first = requests[runnable[0]]
            batch = tokenizer(
                [prompts[i] for i in runnable], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            max_new = first.max_tokens
            if self.max_length:
                max_new = max(1, min(max_new, self.max_length - batch["input_ids"].shape[1]))
            options = {"max_new_tokens": max_new, "pad_token_id": tokenizer.pad_token_id}
            if first.temperature > 0:
                torch.manual_seed(first.seed)
                options.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
            else:
                options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if first.stop:
                options.update(stop_strings=list(first.stop), tokenizer=tokenizer)
            if first.top_logprobs:
                options.update(output_logits=True, return_dict_in_generate=True)
            try:
                with torch.no_grad():
                    generated = self._model.generate(**batch, **options)
                    steps = None
                    if first.top_logprobs:
                        steps = torch.stack(generated.logits, dim=1).float().log_softmax(dim=-1)  # (B, new, V)
                        generated = generated.sequences
            except (RuntimeError, ValueError) as error:
                for i in runnable:
                    out[i] = failed(ErrorKind.BACKEND_ERROR, f"{type(error).__name__}: {error}")
                return out  # type: ignore[return-value]
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            eos = tokenizer.eos_token_id
            for row, i in enumerate(runnable):
                ids = new_tokens[row].tolist()
                hit_eos = eos in ids
                if hit_eos:
                    ids = ids[: ids.index(eos)]
                ids = [t for t in ids if t != tokenizer.pad_token_id]
                logprobs = () if steps is None else self._logprobs(steps[row], ids, first.top_logprobs)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                stopped = False
                for stop in requests[i].stop:
                    if stop in text:
                        text, stopped = text[: text.index(stop)], True
                finish = "stop" if hit_eos or stopped else "length"
                out[i] = parse_structured(
                    requests[i],
                    text,
                    finish_reason=finish,
                    prompt_tokens=lengths[i],
                    completion_tokens=len(ids),
                    logprobs=logprobs,
                )
        return out  # type: ignore[return-value]

    def _logprobs(self, steps, ids: list[int], k: int) -> tuple[TokenLogprob, ...]:
        """One :class:`TokenLogprob` per generated token, from ``steps`` (new tokens x vocabulary)."""
        decode = self._tokenizer.decode
        best = steps[: len(ids)].topk(k, dim=-1)
        return tuple(
            TokenLogprob(
                decode([token]),
                float(steps[t, token]),
                tuple((decode([int(j)]), float(v)) for v, j in zip(best.values[t], best.indices[t], strict=True)),
            )
            for t, token in enumerate(ids)
        )

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
