"""The judge stage: a 1–5 Likert score for each (instruction, answer) pair (DESIGN §2.5).

1 means irrelevant or off-topic, 5 that the answer fully addresses the instruction with
no extraneous, vague or repetitive content. Pairs scoring at least ``min_score`` (4 by
default) are kept.

**Expected score.** A small judge writes 5 for nearly everything, but how sure it is
still tells pairs apart. Where the backend reports token log-probabilities, the score is
the expected value of 1–5 under the judge's own distribution over the score tokens at
the position where it wrote its score (renormalised over the digits 1–5), not the
digit it wrote; both are stored on the pair. Backends without log-probabilities keep the
written score (``score="argmax"`` asks for that everywhere).

**Relevance gate.** With ``min_relevance`` set, a pair whose ``relevance`` (the
embedder's similarity of instruction and answer, set by instantiate) is below it is
skipped as ``irrelevant_answer`` before the judge is asked, and kept in the rejects with
its score. The judge stage scores a pair that has no relevance (made by another tool or
an older run) with the same embedder before the gate, so the gate means the same
whatever made the pairs; these rules alone let such a pair through and count it
(``unscored_relevance``).

Two prompt formats:

- ``flow``: the format Flow-Judge-v0.1 was trained on (input, output, criteria and
  rubric sections; the reply is ``<feedback>…</feedback>`` then ``<score>N</score>``),
  chosen automatically when the judge model's name contains ``flow-judge``;
- ``prompted``: a versioned prompt for any instruct model; the reply is ``{"score": N}``.

Where the backend constrains decoding, the score is constrained too (a JSON schema with
``enum`` 1–5, a GBNF grammar or a regular expression for the ``flow`` reply). Replies
are parsed leniently all the same; one with no readable score, or cut at ``max_tokens``
(``finish_reason == "length"``), counts as ``unparseable_judgement`` and its pair is
not kept. The stage does no file I/O.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from fineinstructions.models.llm import LLM, Completion, ErrorKind, Request, capabilities
from fineinstructions.records import PairRow, RejectRow
from fineinstructions.text.prompting import Prompt, load_prompt

STAGE = "judge"
DEFAULT_PROMPT = "judge-v1"
FLOW_PROMPT = "judge-flow-v1"

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["score"],
    "additionalProperties": False,
}
FLOW_GRAMMAR = (
    'root ::= "<feedback>\\n" [^<]{1,1500} "\\n</feedback>\\n<score>\\n" [1-5] "\\n</score>"\n'
)
FLOW_REGEX = r"<feedback>\n[^<]{1,1500}\n</feedback>\n<score>\n[1-5]\n</score>"

_FLOW_SCORE = re.compile(r"<score>\s*([1-5])\s*</score>")
_JSON_SCORE = re.compile(r'"score"\s*:\s*"?([1-5])\b')
_LOOSE_SCORE = re.compile(r"\bscore\b\D{0,12}([1-5])\b", re.IGNORECASE)


def is_flow_judge(identity: str) -> bool:
    return "flow-judge" in identity.lower().replace("_", "-")


def parse_score(text: str | None, parsed: Any = None) -> int | None:
    """The 1–5 score in a judge's reply, or ``None`` when there is none to read.

    Tries, in order: parsed JSON ``{"score": N}``, ``<score>N</score>``, a JSON-like
    ``"score": N``, then ``score … N`` in prose; a reply that is just a digit 1–5 counts.
    """
    if isinstance(parsed, dict) and parsed.get("score") in (1, 2, 3, 4, 5):
        return int(parsed["score"])
    if not text:
        return None
    for pattern in (_FLOW_SCORE, _JSON_SCORE, _LOOSE_SCORE):
        found = pattern.findall(text)
        if found:
            return int(found[-1])
    stripped = text.strip()
    if stripped in ("1", "2", "3", "4", "5"):
        return int(stripped)
    return None


SCORE_LOGPROBS = 20  # alternatives asked for at each position (OpenAI's limit)


def score_distribution(completion: Completion, score: int) -> dict[int, float] | None:
    """The judge's probability of each score 1–5 at the position where it wrote
    ``score`` (the last token that reads as that digit), renormalised over the digits;
    ``None`` when the completion carries no log-probabilities for that position."""
    for token in reversed(completion.logprobs):
        if token.token.strip() != str(score):
            continue
        mass: Counter = Counter()
        alternatives = dict(token.top)
        alternatives.setdefault(token.token, token.logprob)
        for text, logprob in alternatives.items():
            digit = text.strip()
            if digit in ("1", "2", "3", "4", "5") and logprob > -math.inf:
                mass[int(digit)] += math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            return None
        return {d: mass[d] / total for d in range(1, 6)}
    return None


def expected_score(distribution: dict[int, float]) -> float:
    """The mean of 1–5 under ``distribution``."""
    return sum(d * p for d, p in distribution.items())


@dataclass
class JudgeResult:
    """What one batch gave: every judged pair (kept or not), the kept ones, rejects, counts."""

    kept: list[PairRow] = field(default_factory=list)
    rejects: list[RejectRow] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    scores: Counter = field(default_factory=Counter)
    expected_scores: int = 0  # pairs scored by expectation (the rest by the written digit)
    unscored_relevance: int = 0  # pairs the relevance gate let through for want of a score
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class Judge:
    """Scores pairs with one LLM; ``format='auto'`` picks ``flow`` for Flow-Judge models."""

    def __init__(
        self,
        llm: LLM,
        *,
        format: Literal["auto", "flow", "prompted"] = "auto",
        prompt: str | Prompt | None = None,
        min_score: float = 4,
        score: Literal["expected", "argmax"] = "expected",
        min_relevance: float | None = None,
        max_tokens: int | None = None,
        seed: int = 0,
    ) -> None:
        if format not in ("auto", "flow", "prompted"):
            raise ValueError(f"unknown judge format {format!r}; use auto, flow or prompted")
        if not 1 <= min_score <= 5:
            raise ValueError("min_score must be between 1 and 5")
        if score not in ("expected", "argmax"):
            raise ValueError(f"unknown judge score {score!r}; use expected or argmax")
        self.llm = llm
        if format == "auto":
            format = "flow" if is_flow_judge(llm.identity) else "prompted"
        self.format = format
        if prompt is None:
            prompt = FLOW_PROMPT if format == "flow" else DEFAULT_PROMPT
        self.prompt = prompt if isinstance(prompt, Prompt) else load_prompt(prompt)
        self.prompt.field("user")  # fail now, not at the first pair
        self.prompt_version = self.prompt.version
        self.min_score = min_score
        self.score = score
        self.min_relevance = min_relevance
        self.max_tokens = max_tokens or (600 if format == "flow" else 16)
        self.seed = seed

    @property
    def model(self) -> str:
        return self.llm.identity

    def request(self, pair: PairRow) -> Request:
        values = {"instruction": pair.instruction, "answer": pair.answer}
        if self.format == "flow":
            values["criteria"] = self.prompt.field("criteria")
            values["rubric"] = self.prompt.field("rubric")
        user = self.prompt.field("user")
        for name, value in values.items():  # not str.format: the texts may hold braces
            user = user.replace("{" + name + "}", value)
        turns = [("system", self.prompt.system)] if self.prompt.system else []
        turns.append(("user", user))
        options: dict[str, Any] = dict(
            max_tokens=self.max_tokens, temperature=0.0, seed=self.seed, prompt_version=self.prompt_version
        )
        can = capabilities(self.llm)
        if self.score == "expected" and can.reports_logprobs:
            options["top_logprobs"] = SCORE_LOGPROBS
        if self.format == "prompted":
            if can.constrains_json_schema:
                options["json_schema"] = SCORE_SCHEMA
        elif can.constrains_gbnf:
            options["grammar"] = FLOW_GRAMMAR
        elif can.constrains_regex:
            options["regex"] = FLOW_REGEX
        return Request.chat(*turns, **options)

    def __call__(self, pairs: Sequence[PairRow]) -> JudgeResult:
        result = JudgeResult()
        pairs = [pair for pair in pairs if self._relevant(pair, result)]
        if not pairs:
            return result
        completions = self.llm.generate([self.request(p) for p in pairs])
        for pair, completion in zip(pairs, completions, strict=True):
            result.prompt_tokens += completion.prompt_tokens
            result.completion_tokens += completion.completion_tokens
            result.cached_tokens += completion.cached_tokens
            self._one(pair, completion, result)
        return result

    def _reject(
        self, result: JudgeResult, pair: PairRow, reason: str, detail: str, raw: str | None, *, skip: bool = False
    ) -> None:
        (result.skipped if skip else result.failed)[reason] += 1
        result.rejects.append(
            RejectRow(
                stage=STAGE,
                input_id=pair.id,
                reason=reason,
                detail=detail,
                input=f"Instruction: {pair.instruction}\n\nAnswer: {pair.answer}",
                raw_output=raw,
                model=self.model,
                prompt_version=self.prompt_version,
            )
        )

    def _relevant(self, pair: PairRow, result: JudgeResult) -> bool:
        """Whether ``pair`` passes the relevance gate (rejecting it when it does not)."""
        if self.min_relevance is None:
            return True
        if pair.relevance is None:
            result.unscored_relevance += 1
            return True
        if pair.relevance >= self.min_relevance:
            return True
        detail = f"relevance {pair.relevance:.3f}; pairs need at least {self.min_relevance}"
        self._reject(result, pair, "irrelevant_answer", detail, None, skip=True)
        return False

    def _one(self, pair: PairRow, completion: Completion, result: JudgeResult) -> None:
        def reject(reason: str, detail: str, *, skip: bool = False) -> None:
            self._reject(result, pair, reason, detail, completion.text, skip=skip)

        if completion.error_kind not in (None, ErrorKind.INVALID_OUTPUT):
            return reject(completion.error_kind.value, completion.error_detail)
        if completion.finish_reason == "length":
            # The model was still writing: a "score … N" in the text need not be its verdict.
            return reject("unparseable_judgement", "the reply was cut at max_tokens before it gave its score")
        score = parse_score(completion.text, completion.parsed)
        if score is None:
            return reject("unparseable_judgement", "no score from 1 to 5 could be read from the reply")
        result.scores[score] += 1
        expected = None
        if self.score == "expected":
            distribution = score_distribution(completion, score)
            if distribution is not None:
                expected = round(expected_score(distribution), 4)
                result.expected_scores += 1
        value = score if expected is None else expected
        if value < self.min_score:
            how = f"scored {score}" if expected is None else f"scored {expected:.2f} (expected; wrote {score})"
            return reject("low_score", f"{how}; pairs need at least {self.min_score}", skip=True)
        result.kept.append(
            dataclasses.replace(
                pair,
                judge_score=score,
                judge_expected_score=expected,
                judge_model=self.model,
                judge_prompt_version=self.prompt_version,
            )
        )

