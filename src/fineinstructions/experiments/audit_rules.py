"""The audit's rules for one pair, re-derived from the row and its source document alone.

Each check returns None when the pair passes, or a sentence saying what is wrong. None
of them trusts what the pipeline recorded: spans are re-expanded against the document,
the excerpt ratio is recomputed, the training text is formatted again.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterator

from fineinstructions.records import PairRow
from fineinstructions.text.packing import format_pair

MARKUP = ("<excerpt>", "</excerpt>", "<...>", "<fi>", "</fi>")
RATIO_TOLERANCE = 1e-6


def check_spans(pair: PairRow, document: str | None) -> str | None:
    """Every excerpt span lies in the document (in the part the model saw, for a cut
    document) and its text appears in the answer, in order."""
    if document is None:
        return f"document {pair.document_id!r} is not among the documents given"
    limit = min(len(document), pair.document_chars) if pair.document_chars else len(document)
    cursor = 0
    for number, (start, end) in enumerate(pair.excerpt_spans):
        if not 0 <= start < end <= limit:
            return f"span {number} ({start}, {end}) lies outside the document's {limit} characters"
        found = pair.answer.find(document[start:end], cursor)
        if found < 0:
            return f"span {number} ({start}, {end}) is not in the answer: {_quote(document[start:end])}"
        cursor = found + (end - start)
    return None


def recomputed_ratio(pair: PairRow) -> float:
    """The share of the answer's characters that its spans quote."""
    quoted = sum(end - start for start, end in pair.excerpt_spans)
    return quoted / len(pair.answer) if pair.answer else 0.0


def check_ratio(pair: PairRow, minimum: float) -> str | None:
    ratio = recomputed_ratio(pair)
    if abs(ratio - pair.excerpt_ratio) > RATIO_TOLERANCE:
        return f"excerpt ratio recorded {pair.excerpt_ratio:.4f}, recomputed {ratio:.4f}"
    if ratio < minimum - RATIO_TOLERANCE:
        return f"excerpt ratio {ratio:.4f} is below the minimum {minimum}"
    return None


def check_markup(pair: PairRow) -> str | None:
    for field in ("instruction", "answer", "text"):
        value = getattr(pair, field) or ""
        for tag in MARKUP:
            if tag in value:
                at = value.find(tag)
                return f"{field} still holds {tag!r}: {_quote(value[max(0, at - 30): at + 40])}"
    return None


def check_format(pair: PairRow) -> str | None:
    if not pair.instruction.strip() or not pair.answer.strip():
        return "empty instruction or answer"
    if pair.text != format_pair(pair.instruction, pair.answer):
        return "text is not 'Instruction: {instruction}\\n\\nAnswer: {answer}'"
    if not pair.token_count:
        return "no token count"
    return None


def kept_score(pair: PairRow, kind: str) -> float | None:
    """The score the judge stage kept the pair on: the expected score where the judge
    reported one and ``kind`` is ``"expected"``, else the written one."""
    if kind == "expected" and pair.judge_expected_score is not None:
        return pair.judge_expected_score
    return pair.judge_score


def check_score(pair: PairRow, minimum: float, kind: str) -> str | None:
    score = kept_score(pair, kind)
    if score is None:
        return "no judge score"
    if score < minimum:
        return f"judge score {score:g} is below the kept minimum {minimum:g}"
    return None


def personal_data(text: str, region: str | None = "US") -> Iterator[tuple[str, str]]:
    """``(kind, value)`` for each e-mail address, phone number and IP address in
    ``text``, each recognised by a library rather than a pattern written here:
    e-mail addresses by ``email-validator`` (syntax only, no network), phone numbers by
    ``phonenumbers`` (Google's libphonenumber; numbers without a country code are read
    as ``region``'s), IP addresses by the standard library's ``ipaddress``."""
    import phonenumbers
    from email_validator import EmailNotValidError, validate_email

    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
        yield "phone", match.raw_string
    for word in text.split():
        token = word.strip("()[]{}<>,;:!?\"'.")
        if "@" in token:
            try:
                yield "email", validate_email(token, check_deliverability=False).normalized
            except EmailNotValidError:
                pass
        elif token.count(".") == 3 or token.count(":") >= 2:
            try:
                address = ipaddress.ip_address(token)
            except ValueError:
                continue
            if not (address.is_loopback or address.is_unspecified):
                yield "ip_address", token


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def example(pair: PairRow, detail: str, **extra: Any) -> dict[str, Any]:
    return {"pair_id": pair.id, "document_id": pair.document_id, "detail": detail, **extra}
