"""``fineinstructions evaluate``: free-form response quality of pre-trained models, as the
paper measures it.

- **Reference NLL** (judge-free): the mean negative log-likelihood per token of each
  evaluation item's reference answer, given its prompt in the training format
  (``Instruction: {prompt}\\n\\nAnswer:``), for every model. Lower is better.
- **Head-to-head** (AlpacaEval style): every model answers every prompt (greedy); a judge
  LLM (any backend, ``[evaluate]``) says which of two answers is better, asked in both
  orders to cancel position bias. The first model's win rate over the second: a win
  in both orders counts 1, a split or a tie 0.5, a loss 0; with a bootstrap 95 %
  confidence interval over the items.
- **Grading** (MT-Bench style): the judge scores each answer from 1 to 10 against the
  reference where the set has one.

Multi-turn items (MT-Bench) are asked their first turn: the models are pre-trained on
single instruction → answer pairs. Every answer and every judgement, with the judge's
raw output and prompt version, is written beside the figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fineinstructions.config import Config
from fineinstructions.errors import MissingDependencyError, UserError
from fineinstructions.experiments.eval_sets import EvalItem
from fineinstructions.io import write_json
from fineinstructions.text.packing import format_pair

VERDICTS = ("first", "second", "tie")


@dataclass
class ModelUnderTest:
    """A pre-trained model folder (``pretrain``'s output or its ``final``) and its tokenizer."""

    name: str
    model: Any
    counter: Any

    @classmethod
    def load(cls, folder: str | Path) -> "ModelUnderTest":
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise MissingDependencyError("transformers", "transformers", "evaluating models") from None
        from fineinstructions.models.tokens import load_token_counter

        path = Path(folder)
        path = path / "final" if (path / "final" / "config.json").exists() else path
        meta_path = path / "corpus_meta.json"
        if not (path / "config.json").exists() or not meta_path.exists():
            raise UserError(f"{folder} holds no model `fineinstructions pretrain` wrote\n  fix: give a pretrain output folder")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        model.eval()
        return cls(str(folder), model, load_token_counter(meta["tokenizer"]))

    @property
    def context(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def reference_nll(self, prompt: str, reference: str) -> tuple[float, int]:
        """Summed NLL of the reference's tokens (and end-of-sequence) given the prompt,
        and how many tokens that is (the prompt is cut from the left to fit)."""
        import torch

        from fineinstructions.experiments.export import split_prompt

        head, answer = split_prompt(self.counter, prompt, reference)
        answer = answer + [self.counter.eos_token_id]
        answer = answer[: self.context - 1]
        head = head[-(self.context - len(answer)):] if len(head) + len(answer) > self.context else head
        ids = torch.tensor([head + answer])
        with torch.no_grad():
            logits = self.model(ids).logits[0, :-1].float()
        targets = ids[0, 1:]
        losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[len(head) - 1:]
        return float(losses.sum()), len(answer)

    def answer(self, prompt: str, max_new_tokens: int) -> str:
        import torch

        head = self.counter.encode([format_pair(prompt, "").rstrip()])[0]
        room = max(1, self.context - max_new_tokens)
        ids = torch.tensor([head[-room:]])
        eos = self.counter.eos_token_id
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=min(max_new_tokens, self.context - ids.shape[1]),
                                      do_sample=False, eos_token_id=eos, pad_token_id=eos)
        new = [int(t) for t in out[0, ids.shape[1]:] if int(t) != eos]
        return self.counter.decode(new).strip()


def win_rate(first_order: Sequence[str | None], second_order: Sequence[str | None], *, resamples: int,
             seed: int) -> dict[str, Any]:
    """The first model's win rate from verdicts asked both ways: ``first_order[i]`` with
    the first model's answer shown first, ``second_order[i]`` with it shown second
    (None: unparseable, that order not counted)."""
    points = []
    for shown_first, shown_second in zip(first_order, second_order, strict=True):
        item = [p for p in (_points(shown_first, mine="first"), _points(shown_second, mine="second")) if p is not None]
        if item:
            points.append(sum(item) / len(item))
    if not points:
        return {"items": 0, "win_rate": None, "ci95": None}
    values = np.asarray(points)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    return {
        "items": len(values), "win_rate": round(float(values.mean()), 4),
        "ci95": [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)],
        "wins": int((values == 1).sum()), "ties_or_splits": int(((values > 0) & (values < 1)).sum()),
        "losses": int((values == 0).sum()),
    }


def _points(verdict: str | None, *, mine: str) -> float | None:
    if verdict not in VERDICTS:
        return None
    return 0.5 if verdict == "tie" else float(verdict == mine)


def _verdict(completion: Any, key: str, allowed: Callable[[Any], bool]) -> Any:
    """``key`` of the judge's JSON answer (parsed by a constraining backend, else the
    first JSON object in its text), or None when it is missing or not allowed."""
    data = completion.parsed if isinstance(completion.parsed, dict) else _first_object(completion.text or "")
    value = data.get(key) if isinstance(data, dict) else None
    return value if allowed(value) else None


def _first_object(text: str) -> Any:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def run_evaluate(
    model_dirs: Sequence[str | Path], eval_set: str | Path, output: str | Path, config: Config, *,
    judge: Any = None, head_to_head: bool = True, grade: bool = True, limit: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluate ``model_dirs`` on ``eval_set`` into ``output`` (``evaluation.json``,
    ``answers.jsonl``, ``judgements.jsonl``); returns the figures."""
    from fineinstructions.experiments.eval_sets import read_eval_set

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    items = read_eval_set(eval_set)[:limit]
    models = [ModelUnderTest.load(d) for d in model_dirs]
    section = config.evaluate
    result: dict[str, Any] = {"eval_set": str(eval_set), "items": len(items), "models": {}}
    answers: dict[str, list[str]] = {}
    with open(out / "answers.jsonl", "w", encoding="utf-8") as sink:
        for model in models:
            scored = [model.reference_nll(i.turns[0], i.references[0]) for i in items if i.references]
            tokens = sum(n for _, n in scored)
            result["models"][model.name] = {
                "reference_nll": round(sum(s for s, _ in scored) / tokens, 4) if tokens else None,
                "reference_tokens": tokens, "parameters": int(model.model.num_parameters()),
            }
            answers[model.name] = [model.answer(i.turns[0], section.max_new_tokens) for i in items] if (head_to_head or grade) else []
            for item, text in zip(items, answers[model.name], strict=False):
                sink.write(json.dumps({"model": model.name, "item": item.id, "prompt": item.turns[0], "answer": text}) + "\n")
            log(f"evaluate: {model.name}: reference NLL {result['models'][model.name]['reference_nll']} per token")
    if head_to_head or grade:
        judge = judge or _judge(config, out)
        with open(out / "judgements.jsonl", "w", encoding="utf-8") as sink:
            if grade:
                for model in models:
                    result["models"][model.name]["grade"] = _grade(judge, section, items, answers[model.name], model.name, sink)
            if head_to_head and len(models) >= 2:
                first, second = models[0].name, models[1].name
                result["head_to_head"] = {"first": first, "second": second,
                                          **_compare(judge, section, items, answers[first], answers[second], sink)}
                log(f"evaluate: {first} against {second}: win rate {result['head_to_head']['win_rate']} "
                    f"(95% CI {result['head_to_head']['ci95']})")
    write_json(result, out / "evaluation.json")
    return result


def _judge(config: Config, out: Path) -> Any:
    from fineinstructions.models.factory import make_llm

    return make_llm(config.evaluate.llm, cache_path=out / "judge.cache.sqlite")


def _ask(judge: Any, prompt: Any, fields: dict[str, str], schema: dict) -> Any:
    from fineinstructions.models.llm import Message, Request

    user = prompt.field("user").format(**fields)
    request = Request(messages=(Message(role="system", content=prompt.system), Message(role="user", content=user)),
                      json_schema=schema, max_tokens=32, prompt_version=prompt.version)
    return judge.generate([request])[0]


def _compare(judge, section, items: list[EvalItem], a: list[str], b: list[str], sink) -> dict:
    from fineinstructions.text.prompting import load_prompt

    prompt = load_prompt(section.compare_prompt)
    schema = {"type": "object", "properties": {"better": {"enum": list(VERDICTS)}}, "required": ["better"]}
    orders: tuple[list, list] = ([], [])
    for item, mine, theirs in zip(items, a, b, strict=True):
        for order, (first, second) in enumerate(((mine, theirs), (theirs, mine))):
            completion = _ask(judge, prompt, {"prompt": item.turns[0], "first": first, "second": second}, schema)
            verdict = _verdict(completion, "better", lambda v: v in VERDICTS)
            orders[order].append(verdict)
            sink.write(json.dumps({"kind": "compare", "item": item.id, "order": ["a_first", "b_first"][order],
                                   "verdict": verdict, "raw": completion.text, "prompt_version": prompt.version}) + "\n")
    return win_rate(orders[0], orders[1], resamples=section.bootstrap, seed=section.seed)


def _grade(judge, section, items: list[EvalItem], answers: list[str], name: str, sink) -> dict:
    from fineinstructions.text.prompting import load_prompt

    prompt = load_prompt(section.grade_prompt)
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}}, "required": ["score"]}
    scores = []
    for item, answer in zip(items, answers, strict=True):
        reference = item.references[0] if item.references else "none"
        completion = _ask(judge, prompt, {"prompt": item.turns[0], "answer": answer, "reference": reference}, schema)
        score = _verdict(completion, "score", lambda v: isinstance(v, int) and 1 <= v <= 10)
        if score is not None:
            scores.append(score)
        sink.write(json.dumps({"kind": "grade", "model": name, "item": item.id, "score": score, "raw": completion.text,
                               "prompt_version": prompt.version}) + "\n")
    return {"mean": round(float(np.mean(scores)), 3) if scores else None, "graded": len(scores),
            "unparseable": len(answers) - len(scores)}
