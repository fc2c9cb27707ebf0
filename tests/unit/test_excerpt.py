import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fineinstructions.text.excerpt import SearchableDocument, expand_excerpts

DOC = (
    "On the Electrodynamics of Moving Bodies. It is known that Maxwell's electrodynamics, "
    "as usually understood, leads to asymmetries. Examples of this sort suggest the "
    "principle of relativity. We raise this conjecture to the status of a postulate."
)


def only_error(expansion):
    (error,) = expansion.errors
    return error


# --- resolving -----------------------------------------------------------------------


def test_prefix_and_suffix_expand_to_the_documents_span():
    answer = "Well: <excerpt>It is known that<...>leads to asymmetries.</excerpt> Indeed."
    expansion = expand_excerpts(answer, DOC)
    start = DOC.index("It is known that")
    end = DOC.index("leads to asymmetries.") + len("leads to asymmetries.")
    assert expansion.spans == [(start, end)]
    assert expansion.text == "Well: " + DOC[start:end] + " Indeed."
    assert expansion.errors == []
    assert expansion.ok
    assert expansion.excerpt_ratio == pytest.approx((end - start) / len(expansion.text))


def test_plain_text_excerpt_must_occur():
    expansion = expand_excerpts("<excerpt>the principle of relativity.</excerpt>", DOC)
    start = DOC.index("the principle of relativity.")
    assert expansion.spans == [(start, start + len("the principle of relativity."))]
    assert expansion.text == "the principle of relativity."
    assert expansion.excerpt_ratio == 1.0


def test_several_markers_keep_their_order_and_the_text_between():
    answer = (
        "First <excerpt>We raise<...>postulate.</excerpt>, then "
        "<excerpt>On the Electrodynamics<...>Bodies.</excerpt>"
    )
    expansion = expand_excerpts(answer, DOC)
    first, second = expansion.spans
    assert first[0] > second[0]  # spans follow the markers, not the document
    assert expansion.text == (
        f"First {DOC[first[0]:first[1]]}, then {DOC[second[0]:second[1]]}"
    )
    excerpt_chars = (first[1] - first[0]) + (second[1] - second[0])
    assert expansion.excerpt_ratio == pytest.approx(excerpt_chars / len(expansion.text))


def test_overlapping_markers_may_quote_overlapping_spans():
    expansion = expand_excerpts(
        "<excerpt>It is known<...>electrodynamics,</excerpt> <excerpt>Maxwell's<...>understood,</excerpt>",
        DOC,
    )
    (a_start, a_end), (b_start, b_end) = expansion.spans
    assert a_start < b_start < a_end < b_end
    assert expansion.ok


def test_markers_at_document_start_and_end():
    expansion = expand_excerpts(
        "<excerpt>On the<...>Bodies.</excerpt> <excerpt>We raise<...>a postulate.</excerpt>", DOC
    )
    assert expansion.spans[0][0] == 0
    assert expansion.spans[1][1] == len(DOC)


def test_whole_document_as_one_excerpt():
    expansion = expand_excerpts(f"<excerpt>{DOC}</excerpt>", DOC)
    assert expansion.spans == [(0, len(DOC))]
    assert expansion.text == DOC


def test_answer_without_markers():
    expansion = expand_excerpts("No quotes here.", DOC)
    assert expansion.text == "No quotes here."
    assert expansion.spans == [] and expansion.errors == []
    assert expansion.excerpt_ratio == 0.0


def test_empty_answer():
    expansion = expand_excerpts("", DOC)
    assert expansion.text == "" and expansion.excerpt_ratio == 0.0 and expansion.spans == []


# --- whitespace ----------------------------------------------------------------------


def test_any_whitespace_run_matches_any_other_and_the_text_is_the_documents_own():
    document = "Step one:\n\n   mix\tthe  flour\r\nand water.\u00a0Then wait."
    expansion = expand_excerpts("<excerpt>mix the flour and water.</excerpt>", document)
    assert expansion.text == "mix\tthe  flour\r\nand water."
    start, end = expansion.spans[0]
    assert document[start:end] == expansion.text


def test_whitespace_in_the_marker_matches_single_spaces_in_the_document():
    expansion = expand_excerpts("<excerpt>Then\n\n  wait.</excerpt>", "Mix. Then wait.")
    assert expansion.text == "Then wait."


def test_unicode_whitespace_counts_as_whitespace():
    document = "alpha\u2003beta\u3000gamma\u2028delta"
    expansion = expand_excerpts("<excerpt>alpha beta<...>gamma delta</excerpt>", document)
    assert expansion.text == document


def test_whitespace_at_the_marker_edges_is_ignored():
    expansion = expand_excerpts("<excerpt>  It is known that <...> asymmetries.  </excerpt>", DOC)
    assert expansion.text.startswith("It is known that") and expansion.text.endswith("asymmetries.")


def test_whitespace_is_not_inserted_where_the_document_has_none():
    assert only_error(expand_excerpts("<excerpt>Moving Bo dies</excerpt>", DOC)) == "unresolved"


def test_matching_is_otherwise_exact():
    assert only_error(expand_excerpts("<excerpt>it is known that</excerpt>", DOC)) == "unresolved"
    assert only_error(expand_excerpts("<excerpt>Maxwell’s</excerpt>", DOC)) == "unresolved"


# --- unresolved ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "<excerpt>Nothing like this<...>asymmetries.</excerpt>",  # prefix absent
        "<excerpt>It is known that<...>nothing like this</excerpt>",  # suffix absent
        "<excerpt>We raise<...>Moving Bodies.</excerpt>",  # suffix only before the prefix
        "<excerpt>not in the document</excerpt>",
        "<excerpt></excerpt>",
        "<excerpt>   </excerpt>",
        "<excerpt><...>asymmetries.</excerpt>",
        "<excerpt>It is known<...></excerpt>",
        "<excerpt>On<...>Maxwell<...>asymmetries.</excerpt>",
    ],
)
def test_unresolved_markers(answer):
    expansion = expand_excerpts(answer, DOC)
    error = only_error(expansion)
    assert error == "unresolved" and error.kind == "unresolved"
    assert error.index == 0
    assert expansion.spans == [None]
    assert expansion.text == answer  # the failed marker stays visible
    assert expansion.excerpt_ratio == 0.0


def test_suffix_must_start_at_or_after_the_end_of_the_prefix():
    assert only_error(expand_excerpts("<excerpt>ab<...>bc</excerpt>", "abc")) == "unresolved"
    assert expand_excerpts("<excerpt>ab<...>c</excerpt>", "abc").spans == [(0, 3)]
    assert expand_excerpts("<excerpt>ab<...>ab</excerpt>", "abab").spans == [(0, 4)]


def test_malformed_markers_are_failures_not_exceptions():
    unclosed = expand_excerpts("Intro <excerpt>It is known that", DOC)
    assert only_error(unclosed) == "unresolved"
    assert unclosed.text == "Intro <excerpt>It is known that"

    stray = expand_excerpts("It is </excerpt> fine", DOC)
    assert only_error(stray) == "unresolved"

    reopened = expand_excerpts("<excerpt>On the <excerpt>We raise<...>postulate.</excerpt>", DOC)
    assert [str(e) for e in reopened.errors] == ["unresolved"]
    assert reopened.spans[0] is None and reopened.spans[1] is not None
    assert reopened.errors[0].index == 0


def test_one_failed_marker_does_not_spoil_the_others():
    expansion = expand_excerpts(
        "<excerpt>On the<...>Bodies.</excerpt> and <excerpt>missing text</excerpt>", DOC
    )
    assert expansion.spans[0] == (0, DOC.index("Bodies.") + len("Bodies."))
    assert expansion.spans[1] is None
    assert [(e.kind, e.index) for e in expansion.errors] == [("unresolved", 1)]


def test_empty_document_resolves_nothing():
    assert only_error(expand_excerpts("<excerpt>a</excerpt>", "")) == "unresolved"


# --- ambiguous -----------------------------------------------------------------------


def test_candidates_with_different_text_are_ambiguous():
    document = "The cat sat on the mat. The cat ran to the mat."
    expansion = expand_excerpts("<excerpt>The cat<...>the mat.</excerpt>", document)
    error = only_error(expansion)
    assert error == "ambiguous" and error.kind == "ambiguous"
    assert expansion.spans == [None]


def test_candidates_with_the_same_text_resolve_to_the_first():
    document = "Wash your hands. Then eat. Wash your hands. Then sleep."
    expansion = expand_excerpts("<excerpt>Wash your<...>hands.</excerpt>", document)
    assert expansion.spans == [(0, len("Wash your hands."))]
    text_only = expand_excerpts("<excerpt>Wash your hands.</excerpt>", document)
    assert text_only.spans == [(0, len("Wash your hands."))]


def test_same_words_with_different_whitespace_are_different_texts():
    document = "red apple\nand red  apple"
    assert only_error(expand_excerpts("<excerpt>red apple</excerpt>", document)) == "ambiguous"
    document = "red  apple and red  apple"
    assert expand_excerpts("<excerpt>red apple</excerpt>", document).spans == [(0, 10)]


def test_overlapping_candidates():
    # "aXa" occurs at 0 and 2; with prefix "a" and suffix "a" candidates are (0,3), (2,5).
    assert expand_excerpts("<excerpt>a<...>a</excerpt>", "aXaXa").spans == [(0, 3)]
    assert only_error(expand_excerpts("<excerpt>a<...>a</excerpt>", "aXaYa")) == "ambiguous"


# --- unicode -------------------------------------------------------------------------


def test_unicode_offsets_are_character_offsets():
    document = "前言。Café ☕ au lait 🥐 croissant.\nคำตอบ ที่นี่ العربية هنا"
    expansion = expand_excerpts("<excerpt>Café<...>croissant.</excerpt> <excerpt>العربية هنا</excerpt>", document)
    (s1, e1), (s2, e2) = expansion.spans
    assert document[s1:e1] == "Café ☕ au lait 🥐 croissant."
    assert document[s2:e2] == "العربية هنا"
    assert expansion.ok


def test_combining_characters_are_matched_exactly():
    document = "cafe\u0301 and café"  # decomposed vs precomposed
    assert expand_excerpts("<excerpt>café</excerpt>", document).spans == [(10, 14)]
    assert expand_excerpts("<excerpt>cafe\u0301</excerpt>", document).spans == [(0, 5)]


# --- prepared documents and huge inputs ----------------------------------------------


def test_a_prepared_document_gives_the_same_result():
    prepared = SearchableDocument(DOC)
    answer = "<excerpt>It is known<...>asymmetries.</excerpt>"
    assert expand_excerpts(answer, prepared) == expand_excerpts(answer, DOC)


@pytest.mark.timeout(60)  # guards against quadratic behaviour; speed is measured in benchmarks/
def test_huge_document_with_many_markers():
    filler = "lorem ipsum  dolor\nsit amet " * 40_000  # ~1 MB, irregular whitespace throughout
    document = filler + "The needle starts here and the needle ends here." + filler
    answer = " ".join(
        [
            "<excerpt>The needle starts<...>ends here.</excerpt>",  # resolves
            "<excerpt>lorem<...>amet</excerpt>",  # thousands of candidates, all the same text
            "<excerpt>lorem ipsum dolor</excerpt>",  # every occurrence identical
            "<excerpt>ipsum<...>needle</excerpt>",  # many candidates with different text
            "<excerpt>absent words</excerpt>",
        ]
        * 4
    )
    expansion = expand_excerpts(answer, document)
    start = document.index("The needle")
    assert expansion.spans[0] == (start, start + len("The needle starts here and the needle ends here."))
    assert expansion.spans[1] == (0, len("lorem ipsum  dolor\nsit amet"))
    assert expansion.spans[2] == (0, len("lorem ipsum  dolor"))
    assert [(e.index, e.kind) for e in expansion.errors] == [
        (i, kind) for block in range(4) for i, kind in ((5 * block + 3, "ambiguous"), (5 * block + 4, "unresolved"))
    ]


# --- agreement with an independent, brute-force reading of the rules ---------------


def _reference(answer_body, document):
    """The rules applied literally on the original text, in quadratic time."""

    def occurrences(pattern):
        words = " ".join(pattern.split()).split(" ")
        rx = re.compile(r"\s+".join(map(re.escape, words)))
        return [m.span() for i in range(len(document)) if (m := rx.match(document, i))]

    if body_count := answer_body.count("<...>"):
        if body_count > 1:
            return "unresolved"
        prefix, suffix = answer_body.split("<...>")
        if not prefix.strip() or not suffix.strip():
            return "unresolved"
        suffixes = occurrences(suffix)
        candidates = []
        for start, end in occurrences(prefix):
            later = [s for s in suffixes if s[0] >= end]
            if later:
                candidates.append((start, min(later)[1]))
    else:
        if not answer_body.strip():
            return "unresolved"
        candidates = occurrences(answer_body)
    if not candidates:
        return "unresolved"
    if len({document[s:e] for s, e in candidates}) > 1:
        return "ambiguous"
    return candidates[0]


small_text = st.text(alphabet="ab \n\t", max_size=24)
pattern = st.text(alphabet="ab \n", min_size=0, max_size=5)


@settings(max_examples=400, deadline=None)
@given(document=small_text, prefix=pattern, suffix=pattern, with_ellipsis=st.booleans())
def test_agrees_with_a_brute_force_reference(document, prefix, suffix, with_ellipsis):
    body = f"{prefix}<...>{suffix}" if with_ellipsis else prefix
    expected = _reference(body, document)
    expansion = expand_excerpts(f"<excerpt>{body}</excerpt>", document)
    if isinstance(expected, tuple):
        assert expansion.errors == []
        assert expansion.spans == [expected]
        assert expansion.text == document[expected[0] : expected[1]]
    else:
        assert [str(e) for e in expansion.errors] == [expected]
        assert expansion.spans == [None]
