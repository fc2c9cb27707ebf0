"""Grammar-constrained decoding for llama.cpp that checks the grammar lazily.

``llama-cpp-python`` applies a grammar to every token of the vocabulary (49K for
SmolLM2) at every step, which on a small CPU model costs more than the model itself.
The decoder here does what llama.cpp's own command-line tools do: pick the model's next
token first, ask the grammar whether that one token is allowed, and only when it is not,
apply the grammar to the whole vocabulary and choose among what is allowed. The output
is the same constrained output (for greedy decoding, exactly the same tokens); only the
cost changes, because a model that follows the format is rarely overruled.

It drives a loaded ``llama_cpp.Llama`` directly and keeps its KV cache and token
history in the state ``Llama.create_completion`` expects, so constrained and
unconstrained requests can be mixed and still share prompt prefixes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import numpy as np

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")], align=True)


class GrammarError(ValueError):
    """The grammar text does not compile."""


@dataclass
class Decoded:
    tokens: list[int]
    finish_reason: str  # "stop" (end of generation or a stop string) or "length"
    cached_tokens: int  # prompt tokens reused from the KV cache
    # With top_logprobs: per generated token, (its logprob, [(token id, logprob)] most
    # likely first), from the model's own distribution before the grammar.
    logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)


def top_logprobs(logits: np.ndarray, k: int) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """The log-softmax of ``logits`` and its ``k`` most likely tokens, most likely first."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    logprobs = shifted - np.log(np.exp(shifted).sum())
    k = min(k, len(logprobs))
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    return logprobs, [(int(i), float(logprobs[i])) for i in best]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def evaluate_prompt(llm, tokens: list[int]) -> int:
    """Bring ``llm``'s KV cache to ``tokens``, re-evaluating only what differs from the
    previous prompt; returns how many tokens were reused."""
    reused = common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
    reused = min(reused, len(tokens) - 1)  # evaluate at least one token for fresh logits
    llm.n_tokens = reused
    llm.eval(tokens[reused:])
    return reused


class ConstrainedDecoder:
    """Decodes under a GBNF grammar, checking the grammar only when it matters (or with
    no grammar, for requests that want log-probabilities)."""

    def __init__(self, llm) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.vocab = llm._model.vocab
        self.n_vocab = llm.n_vocab()
        self._full = np.zeros(self.n_vocab, dtype=_TOKEN_DATA)
        self._full["id"] = np.arange(self.n_vocab, dtype=np.int32)
        self._one = np.zeros(1, dtype=_TOKEN_DATA)
        self.full_checks = 0  # steps where the model's choice was overruled
        self.steps = 0

    def _array(self, buffer: np.ndarray):
        return self._lib.llama_token_data_array(
            data=buffer.ctypes.data_as(ctypes.POINTER(self._lib.llama_token_data)),
            size=len(buffer),
            selected=-1,
            sorted=False,
        )

    def _logits(self) -> np.ndarray:
        pointer = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def generate(
        self,
        prompt_tokens: list[int],
        grammar: str | None,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: tuple[str, ...] = (),
        logprobs: int = 0,
    ) -> Decoded:
        lib = self._lib
        sampler = None
        if grammar is not None:
            sampler = lib.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
            if not sampler:
                raise GrammarError("llama.cpp could not parse the grammar")
        rng = np.random.default_rng(seed)
        try:
            cached = evaluate_prompt(self.llm, prompt_tokens)
            out: list[int] = []
            reported: list[tuple[float, list[tuple[int, float]]]] = []
            while True:
                logits = self._logits()
                if logprobs:  # the model's own distribution, whatever the grammar allows
                    distribution, best = top_logprobs(logits, logprobs)
                token = self._choose(sampler, logits, temperature, top_p, rng)
                self.steps += 1
                if token is None or lib.llama_vocab_is_eog(self.vocab, token):
                    return Decoded(out, "stop", cached, reported)
                if logprobs:
                    reported.append((float(distribution[token]), best))
                if sampler is not None:
                    lib.llama_sampler_accept(sampler, token)
                out.append(token)
                if stop and _ends_with_stop(self.llm, out, stop):
                    return Decoded(out, "stop", cached, reported)
                if len(out) >= max_tokens:
                    return Decoded(out, "length", cached, reported)
                self.llm.eval([token])
        finally:
            if sampler is not None:
                lib.llama_sampler_free(sampler)

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether ``grammar`` allows exactly ``text`` (as this model tokenizes it)."""
        lib = self._lib
        sampler = lib.llama_sampler_init_grammar(self.vocab, grammar.encode("utf-8"), b"root")
        if not sampler:
            raise GrammarError("llama.cpp could not parse the grammar")
        try:
            tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            for token in tokens:
                if not self._allowed(sampler, token):
                    return False
                lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, lib.llama_vocab_eos(self.vocab))  # complete?
        finally:
            lib.llama_sampler_free(sampler)

    def _allowed(self, sampler, token: int) -> bool:
        self._one[0] = (token, 0.0, 0.0)
        array = self._array(self._one)
        self._lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return bool(np.isfinite(self._one["logit"][0]))

    def _choose(self, sampler, logits: np.ndarray, temperature: float, top_p: float, rng) -> int | None:
        lib = self._lib
        if sampler is None:  # no grammar (a request that wants log-probabilities)
            return int(np.argmax(logits)) if temperature <= 0 else _sample(np.array(logits), temperature, top_p, rng)
        if temperature <= 0:
            token = int(np.argmax(logits))
            if self._allowed(sampler, token):
                return token
        self.full_checks += 1
        self._full["logit"] = logits
        array = self._array(self._full)
        lib.llama_sampler_apply(sampler, ctypes.byref(array))
        allowed = self._full["logit"]
        if not np.isfinite(allowed).any():
            return None  # nothing is allowed: the grammar is complete
        if temperature <= 0:
            return int(np.argmax(allowed))
        return _sample(allowed, temperature, top_p, rng)


def _sample(logits: np.ndarray, temperature: float, top_p: float, rng) -> int:
    finite = np.isfinite(logits)
    scaled = np.where(finite, logits / temperature, -np.inf)
    probs = np.exp(scaled - scaled[finite].max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < top_p
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


def _ends_with_stop(llm, tokens: list[int], stop: tuple[str, ...]) -> bool:
    tail = llm.detokenize(tokens[-16:]).decode("utf-8", errors="ignore")
    return any(s and s in tail for s in stop)
