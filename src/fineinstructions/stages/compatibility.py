"""Compatibility labels: does a document (or one passage of it) answer a template?

The retriever's fine-tuning data (DESIGN §2.3): a teacher LLM labels (document,
template) candidates that the current index retrieved, and the embedder learns to place
a document near the templates it can answer. The request asks for a JSON
``{"compatible": true|false}`` under a schema where the backend constrains decoding; an
answer that is neither is ``None`` (no label, never guessed). No file I/O.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from fineinstructions.models.llm import LLM, Completion, Request, json_values
from fineinstructions.text.prompting import Prompt, load_prompt

DEFAULT_PROMPT = "compatibility-v1"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"compatible": {"type": "boolean"}},
    "required": ["compatible"],
    "additionalProperties": False,
}
# Longer passages are cut: the label is about whether the answer is there, and a small
# teacher's window is short.
MAX_PASSAGE_CHARS = 4000


def _turn(passage: str, template: str) -> str:
    return f"Document:\n{passage[:MAX_PASSAGE_CHARS]}\n\nTemplate: {template}"


class CompatibilityLabeler:
    """Labels (passage, template) pairs with one LLM."""

    def __init__(self, llm: LLM, *, prompt: str | Prompt = DEFAULT_PROMPT, seed: int = 0) -> None:
        self.llm = llm
        self.prompt = (prompt if isinstance(prompt, Prompt) else load_prompt(prompt)).require("document", "template", "compatible")
        self.seed = seed

    def request(self, passage: str, template: str) -> Request:
        turns: list[tuple[str, str]] = [("system", self.prompt.system)]
        for example in self.prompt.examples:
            turns.append(("user", _turn(example["document"].strip(), example["template"])))
            turns.append(("assistant", json.dumps({"compatible": example["compatible"].strip().lower() == "true"})))
        turns.append(("user", _turn(passage, template)))
        return Request.chat(*turns, max_tokens=16, temperature=0.0, seed=self.seed, json_schema=SCHEMA,
                            prompt_version=self.prompt.version)

    def __call__(self, items: Sequence[tuple[str, str]]) -> list[bool | None]:
        """One label per ``(passage, template)``; None where the answer is no label."""
        completions = self.llm.generate([self.request(passage, template) for passage, template in items])
        return [label_of(completion) for completion in completions]


def label_of(completion: Completion) -> bool | None:
    if not completion.ok:
        return None
    value = completion.parsed if isinstance(completion.parsed, dict) else next(
        (v for v in json_values(completion.text or "") if isinstance(v, dict)), None)
    label = value.get("compatible") if isinstance(value, dict) else None
    return label if isinstance(label, bool) else None
