"""A scripted backend for unit tests of rules: queued replies and a call history.

It is registered like any backend (``backend = "fake"``), so the code under test runs
exactly as it would with a real model. It constrains nothing by default; a test that
needs a backend which does passes the :class:`Capabilities` to declare.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Iterable, Sequence

from fineinstructions.models.llm import Capabilities, Completion, Request, parse_structured


class ScriptedLLM:
    """Answers each request with the next queued reply.

    A reply is a string (the model's text; parsed against the request's schema like a
    real backend would) or a ready :class:`Completion` (to script errors). Running out
    of replies is a test bug and raises.
    """

    kind = "fake"
    constrains_json_schema = False
    constrains_gbnf = False
    constrains_regex = False
    counts_tokens_locally = True
    caches_prefixes = False
    token_count_method = "words (scripted)"
    checkpoint_every = 1

    @classmethod
    def from_config(cls, config) -> "ScriptedLLM":
        """``backend = "fake"``: a scripted backend with no replies (tests give it some)."""
        return cls(model=config.model)

    def __init__(
        self,
        replies: Iterable[str | Completion] = (),
        *,
        model: str = "scripted",
        capabilities: Capabilities | None = None,
    ) -> None:
        if capabilities is not None:
            for name, value in asdict(capabilities).items():
                setattr(self, name, value)
        self.model = model
        self.replies: deque[str | Completion] = deque(replies)
        self.calls: list[Request] = []
        self.batches: list[int] = []

    @property
    def identity(self) -> str:
        return f"fake:{self.model}"

    def load(self) -> None:
        pass

    def queue(self, *replies: str | Completion) -> None:
        self.replies.extend(replies)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        self.batches.append(len(requests))
        out = []
        for request in requests:
            self.calls.append(request)
            if not self.replies:
                raise AssertionError(f"ScriptedLLM has no reply left for request {len(self.calls)}")
            reply = self.replies.popleft()
            if isinstance(reply, Completion):
                out.append(reply)
            else:
                out.append(
                    parse_structured(
                        request,
                        reply,
                        finish_reason="stop",
                        prompt_tokens=sum(self.count_tokens(m.content) for m in request.messages),
                        completion_tokens=self.count_tokens(reply),
                    )
                )
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass
