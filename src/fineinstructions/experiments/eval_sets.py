"""Evaluation sets in the formats people have them: AlpacaEval, MT-Bench, plain prompts.

- AlpacaEval: one ``instruction`` per row, optionally a ``reference`` answer (a strong
  model's, used as the baseline);
- MT-Bench: ``turns``, a list of user turns (two in the real set), optionally a
  ``reference`` list of answers, one per turn;
- plain: one prompt per row in ``prompt`` or ``text`` (or a ``.txt`` file, one prompt per
  non-empty line).

Each row becomes an :class:`EvalItem`: its id, its turns, its references (or none) and
its category. A row that fits no format is an error naming the file, line and fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fineinstructions.errors import InputError
from fineinstructions.io.formats import read_raw
from fineinstructions.io.readers import input_files

PROMPT_FIELDS = ("instruction", "prompt", "text", "question")


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One evaluation prompt (a conversation of ``turns`` user messages) and its
    reference answers, one per turn, when the set has them."""

    id: str
    turns: tuple[str, ...]
    references: tuple[str, ...] | None = None
    category: str = ""
    set_name: str = ""


def read_eval_set(path: str | Path) -> list[EvalItem]:
    """Every item of the evaluation set at ``path`` (a file or a folder of files)."""
    path = Path(path)
    name = path.name.split(".")[0] if path.is_file() else path.name
    items: list[EvalItem] = []
    for file in [path] if path.is_file() else input_files([path]):
        if file.suffix == ".txt":
            lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
            items.extend(EvalItem(id=f"{name}-{i}", turns=(line,), set_name=name) for i, line in enumerate(lines) if line)
            continue
        items.extend(_items(file, name))
    if not items:
        raise InputError(path, "holds no evaluation prompt", fix="give an AlpacaEval, MT-Bench or plain-prompt file")
    return items


def _items(file: Path, name: str) -> Iterator[EvalItem]:
    for number, (location, record) in enumerate(read_raw(file)):
        if isinstance(record, InputError):
            raise record
        row_id = str(record.get("id") or record.get("question_id") or f"{name}-{number}")
        category = str(record.get("category") or record.get("dataset") or "")
        if "turns" in record:
            turns = record["turns"]
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
                raise InputError(file, "expected a non-empty list of strings", location=location, field="turns",
                                 fix="an MT-Bench row holds its user turns as a list of strings")
            reference = record.get("reference")
            references = tuple(reference) if isinstance(reference, list) and len(reference) == len(turns) else None
            yield EvalItem(id=row_id, turns=tuple(turns), references=references, category=category, set_name=name)
            continue
        field = next((f for f in PROMPT_FIELDS if isinstance(record.get(f), str) and record[f].strip()), None)
        if field is None:
            fields = ", ".join(repr(k) for k in list(record)[:12]) or "none"
            raise InputError(file, f"no prompt field (the row's fields: {fields})", location=location,
                             fix=f"an evaluation row holds its prompt in one of {', '.join(PROMPT_FIELDS)}, or its turns in 'turns'")
        reference = record.get("reference") or record.get("output")
        references = (reference,) if isinstance(reference, str) and reference.strip() else None
        yield EvalItem(id=row_id, turns=(record[field],), references=references, category=category, set_name=name)
