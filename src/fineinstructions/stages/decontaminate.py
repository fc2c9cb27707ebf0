"""Decontamination: drop queries that overlap protected evaluation prompts.

Texts are compared as word tokens (lowercased ``\\w+`` runs, Unicode-aware). A query is
contaminated when it shares any ``n``-token span with a protected prompt. When either
side has fewer than ``n`` tokens no span of ``n`` exists, so such a query is contaminated
only when its whole token sequence equals a (short) protected prompt's whole sequence.

Protected prompts are kept only as 8-byte BLAKE2b digests of their ``n``-grams, so the
same files always give the same decisions in every process.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Iterator

from fineinstructions.errors import ConfigError, InputError
from fineinstructions.io.formats import format_suffix
from fineinstructions.io.readers import FieldMapping, read_queries

_WORD = re.compile(r"\w+")
TEXT_SUFFIX = ".txt"


def word_tokens(text: str) -> list[str]:
    """The lowercased word tokens of ``text``."""
    return _WORD.findall(text.lower())


def _digest(tokens: Iterable[str]) -> bytes:
    # Tokens are \w+ runs, so a space cannot occur inside one: the join is unambiguous.
    return hashlib.blake2b(" ".join(tokens).encode("utf-8"), digest_size=8).digest()


class Decontaminator:
    """Protected prompts, grouped in named sets, and the check of a query against them.

    Memory: one dict entry per distinct ``n``-gram of the protected prompts (an 8-byte
    digest as key and the set's index as value: about 85 bytes with the dict's
    overhead, measured), so a prompt of ``m`` tokens costs about ``85 * (m - n + 1)``
    bytes and a prompt shorter than ``n`` tokens about 85 bytes. A benchmark of 10,000
    prompts of 60 tokens takes about 40 MB at ``n = 13``.
    """

    def __init__(self, n: int = 13) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        self.n = n
        self.sets: dict[str, int] = {}  # set name -> prompts registered, in order of registration
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._ngrams: dict[bytes, int] = {}  # digest -> index of the first set holding it
        self._short: dict[bytes, int] = {}  # whole sequences of prompts under n tokens

    def add_set(self, set_name: str) -> int:
        """Register the protected set ``set_name`` (if new) and return its rank: when a
        query overlaps several sets, the earliest registered one is named."""
        if set_name not in self._index:
            self._index[set_name] = len(self._names)
            self._names.append(set_name)
            self.sets[set_name] = 0
        return self._index[set_name]

    def add(self, set_name: str, text: str) -> None:
        """Register ``text`` as a prompt of the protected set ``set_name``. A prompt with no
        word tokens is counted but can match nothing."""
        index = self.add_set(set_name)
        self.sets[set_name] += 1
        tokens = word_tokens(text)
        if not tokens:
            return
        if len(tokens) < self.n:
            table, digests = self._short, [_digest(tokens)]
        else:
            table, digests = self._ngrams, self._ngram_digests(tokens)
        for digest in digests:  # earlier sets win, whatever the order of the adds
            table[digest] = min(table.get(digest, index), index)

    def check(self, text: str) -> str | None:
        """The name of the first protected set (in registration order) that ``text``
        overlaps, or None."""
        tokens = word_tokens(text)
        if not tokens or not self._names:
            return None
        if len(tokens) < self.n:
            index = self._short.get(_digest(tokens))
        else:
            hits = [self._ngrams[d] for d in self._ngram_digests(tokens) if d in self._ngrams]
            index = min(hits) if hits else None
        return None if index is None else self._names[index]

    def _ngram_digests(self, tokens: list[str]) -> Iterator[bytes]:
        for start in range(len(tokens) - self.n + 1):
            yield _digest(tokens[start : start + self.n])


def load_protected(
    paths: Iterable[str | Path], text_field: str = "text", n: int = 13
) -> Decontaminator:
    """A :class:`Decontaminator` holding the protected prompts of ``paths``.

    Each path is one protected set, named by its stem (``mmlu.jsonl`` and a folder
    ``mmlu/`` are both ``mmlu``); a folder's files (searched recursively, hidden ones
    ignored) all belong to its set. JSONL, CSV and Parquet files (and chat logs) are read
    like queries, with the prompt in ``text_field``; a ``.txt`` file holds one prompt per
    non-empty line.
    """
    decontaminator = Decontaminator(n)
    origins: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(
                f"queries.protected: {path}: no such file or folder\n"
                "  fix: give files of protected evaluation prompts, or remove the entry"
            )
        name = _set_name(path)
        if name in origins:
            raise ConfigError(
                f"queries.protected: {origins[name]} and {path} are both named {name!r}\n"
                "  fix: rename one of them, since each protected set is named by its file"
            )
        origins[name] = path
        decontaminator.add_set(name)  # registered even when empty, so .sets lists every file
        for text in _prompts(_set_files(path), text_field):
            decontaminator.add(name, text)
    return decontaminator


def _set_name(path: Path) -> str:
    if path.is_dir():
        return path.resolve().name
    suffix = format_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _set_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and (format_suffix(p) or p.suffix.lower() == TEXT_SUFFIX)
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise ConfigError(
            f"queries.protected: {path}: the folder holds no prompt files\n"
            "  fix: put .jsonl, .csv, .parquet or .txt files of prompts in it"
        )
    return found


def _prompts(files: list[Path], text_field: str) -> Iterator[str]:
    for path in files:
        if path.suffix.lower() == TEXT_SUFFIX:
            yield from _text_lines(path)
            continue
        try:
            for row in read_queries([path], fields=FieldMapping(text=text_field)):
                yield row.text
        except InputError as error:
            if error.field != text_field:
                raise
            raise InputError(
                error.path,
                error.problem,
                location=error.location,
                field=error.field,
                fix=f"set queries.protected_text_field to the field holding the prompt (now {text_field!r})",
            ) from None


def _text_lines(path: Path) -> Iterator[str]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(
                    path, "not valid UTF-8", location=f"line {number}", fix="convert the file to UTF-8"
                ) from None
            line = (line.removeprefix("\ufeff") if number == 1 else line).strip()
            if line:
                yield line
