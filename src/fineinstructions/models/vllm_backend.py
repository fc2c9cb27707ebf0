"""vLLM in-process backend, for GPU workers.

Loads the model once (``vllm.LLM``) and sends a whole batch through ``LLM.chat``, which
schedules it with continuous batching and automatic prefix caching, so the requests of
one document that share its text as a prefix are prefilled once. JSON schema, regex and
grammar constraints become vLLM structured outputs (``StructuredOutputsParams`` in vLLM
0.12 and later, ``GuidedDecodingParams`` before).

Prompts longer than ``max_model_len`` are found before the batch is sent (vLLM would
reject the whole batch) and come back as ``context_overflow`` completions.
"""

from __future__ import annotations

from typing import Any, Sequence

from fineinstructions.models.llm import (
    Completion,
    Request,
    TokenLogprob,
    context_overflow,
    parse_structured,
)


class VLLMLLM:
    kind = "vllm"
    constrains_json_schema = True
    constrains_gbnf = False  # vLLM's grammars are EBNF/lark, not GBNF
    constrains_regex = True
    counts_tokens_locally = True
    reports_logprobs = True
    token_count_method = "the model's tokenizer"
    checkpoint_every = None  # continuous batching wants the whole batch at once

    @classmethod
    def from_config(cls, config) -> "VLLMLLM":
        """The backend a ``[*.llm]`` table with ``backend = "vllm"`` describes."""
        return cls(config.model, max_model_len=config.n_ctx)

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        **engine_options: Any,
    ) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.caches_prefixes = enable_prefix_caching
        self.engine_options = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_prefix_caching": enable_prefix_caching,
            **engine_options,
        }
        self._llm = None

    @property
    def identity(self) -> str:
        return f"vllm:{self.model}"

    def load(self) -> None:
        if self._llm is not None:
            return
        from vllm import LLM

        options = dict(self.engine_options)
        if self.max_model_len:
            options["max_model_len"] = self.max_model_len
        self._llm = LLM(model=self.model, **options)
        self.max_model_len = self._llm.llm_engine.model_config.max_model_len

    def sampling_params(self, request: Request):
        from vllm import SamplingParams

        options: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stop": list(request.stop) or None,
        }
        if request.top_logprobs:
            options["logprobs"] = request.top_logprobs
        constraint = {
            key: value
            for key, value in (
                ("json", request.json_schema),
                ("regex", request.regex),
                ("grammar", request.grammar),
            )
            if value is not None
        }
        if constraint:
            try:
                from vllm.sampling_params import StructuredOutputsParams
            except ImportError:  # vLLM < 0.12
                from vllm.sampling_params import GuidedDecodingParams

                options["guided_decoding"] = GuidedDecodingParams(**constraint)
            else:
                options["structured_outputs"] = StructuredOutputsParams(**constraint)
        return SamplingParams(**options)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.load()
        tokenizer = self._llm.get_tokenizer()
        results: list[Completion | None] = [None] * len(requests)
        runnable: list[int] = []
        lengths: list[int] = []
        for i, request in enumerate(requests):
            ids = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                tokenize=True,
                add_generation_prompt=True,
            )
            length = len(ids["input_ids"] if isinstance(ids, dict) else ids)
            lengths.append(length)
            if length >= self.max_model_len:
                results[i] = context_overflow(length, self.max_model_len)
            else:
                runnable.append(i)
        if runnable:
            outputs = self._llm.chat(
                [[{"role": m.role, "content": m.content} for m in requests[i].messages] for i in runnable],
                sampling_params=[self.sampling_params(requests[i]) for i in runnable],
                use_tqdm=False,
            )
            for i, output in zip(runnable, outputs, strict=True):
                choice = output.outputs[0]
                results[i] = parse_structured(
                    requests[i],
                    choice.text,
                    finish_reason=choice.finish_reason,
                    prompt_tokens=len(output.prompt_token_ids or ()) or lengths[i],
                    completion_tokens=len(choice.token_ids),
                    cached_tokens=getattr(output, "num_cached_tokens", 0) or 0,
                    logprobs=_logprobs(choice, tokenizer),
                )
        return results  # type: ignore[return-value]

    def count_tokens(self, text: str) -> int:
        self.load()
        return len(self._llm.get_tokenizer()(text, add_special_tokens=False)["input_ids"])

    def close(self) -> None:
        self._llm = None


def _logprobs(choice, tokenizer) -> tuple[TokenLogprob, ...]:
    """vLLM's per-position ``{token id: Logprob}`` as :class:`TokenLogprob` (empty when
    the request asked for none)."""
    if not choice.logprobs:
        return ()

    def text(token_id: int, entry) -> str:
        return entry.decoded_token if getattr(entry, "decoded_token", None) is not None else tokenizer.decode([token_id])

    out = []
    for token_id, position in zip(choice.token_ids, choice.logprobs, strict=False):
        ranked = sorted(position.items(), key=lambda item: -item[1].logprob)
        chosen = position.get(token_id)
        out.append(
            TokenLogprob(
                text(token_id, chosen) if chosen is not None else tokenizer.decode([token_id]),
                float(chosen.logprob) if chosen is not None else float("-inf"),
                tuple((text(i, e), float(e.logprob)) for i, e in ranked),
            )
        )
    return tuple(out)
