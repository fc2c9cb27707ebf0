from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fineinstructions.text.packing import PAIR_FORMAT, format_pair, pack_pairs


@dataclass(frozen=True)
class Doc:
    id: str
    token_count: int | None


@dataclass(frozen=True)
class Pair:
    id: str
    document_id: str
    token_count: int | None


def pairs_for(document_id, *counts):
    return [Pair(f"{document_id}-p{i}", document_id, n) for i, n in enumerate(counts)]


def test_format():
    assert format_pair("Why?", "Because.") == "Instruction: Why?\n\nAnswer: Because."
    assert PAIR_FORMAT == "Instruction: {instruction}\n\nAnswer: {answer}"


def test_everything_fits_when_the_budget_allows():
    pairs = pairs_for("d1", 10, 20, 30)
    result = pack_pairs([Doc("d1", 100)], pairs)
    assert sorted(p.id for p in result.kept) == sorted(p.id for p in pairs)
    assert result.kept_tokens == 60 and result.budget_tokens == 100
    assert result.carry_over == 40 and result.dropped == 0


def test_nothing_fits_a_zero_budget():
    result = pack_pairs([Doc("d1", 0)], pairs_for("d1", 1, 2))
    assert result.kept == [] and result.dropped == 2


def test_a_pair_exactly_the_budget_fits():
    result = pack_pairs([Doc("d1", 50)], pairs_for("d1", 50))
    assert len(result.kept) == 1 and result.carry_over == 0


def test_a_pair_that_does_not_fit_is_skipped_and_smaller_ones_still_tried():
    # Budget 100: whichever order, the 90 and the 60 cannot both be kept, but the 5 always fits.
    for seed in range(20):
        result = pack_pairs([Doc("d1", 100)], pairs_for("d1", 90, 60, 5), seed=seed)
        kept = sorted(p.token_count for p in result.kept)
        assert kept in ([5, 90], [5, 60]), kept
        assert result.dropped == 1


def test_unused_budget_carries_over_to_later_documents():
    documents = [Doc("short", 10), Doc("long", 40)]
    # The long document's own budget (40) cannot hold its 45-token pair; with the
    # short document's unused 10 tokens carried over, it can.
    result = pack_pairs(documents, pairs_for("long", 45))
    assert [p.id for p in result.kept] == ["long-p0"]


def test_budget_never_flows_backwards():
    documents = [Doc("first", 10), Doc("second", 100)]
    result = pack_pairs(documents, pairs_for("first", 50) + pairs_for("second", 20))
    assert [p.id for p in result.kept] == ["second-p0"]


def test_carry_in_from_an_earlier_batch():
    assert pack_pairs([Doc("d", 0)], pairs_for("d", 30), carry_in=30).kept_tokens == 30


def test_seeded_order_is_reproducible_and_varies_with_the_seed():
    documents = [Doc("d1", 1000)]
    pairs = pairs_for("d1", *range(1, 21))
    orders = {tuple(p.id for p in pack_pairs(documents, pairs, seed=s).kept) for s in range(10)}
    assert len(orders) > 1
    assert pack_pairs(documents, pairs, seed=3).kept == pack_pairs(documents, pairs, seed=3).kept


def test_result_does_not_depend_on_the_order_pairs_arrive_in():
    documents = [Doc("d1", 50), Doc("d2", 50)]
    pairs = pairs_for("d1", 20, 30, 40) + pairs_for("d2", 25, 25, 10)
    forward = pack_pairs(documents, pairs, seed=1).kept
    backward = pack_pairs(documents, list(reversed(pairs)), seed=1).kept
    assert forward == backward


def test_kept_pairs_come_grouped_by_document_in_document_order():
    documents = [Doc("b", 100), Doc("a", 100)]
    result = pack_pairs(documents, pairs_for("a", 1, 1) + pairs_for("b", 1, 1))
    assert [p.document_id for p in result.kept] == ["b", "b", "a", "a"]


def test_documents_without_pairs_and_no_documents():
    assert pack_pairs([], []).kept == []
    result = pack_pairs([Doc("lonely", 30)], [])
    assert result.kept == [] and result.carry_over == 30


def test_pairs_of_unknown_documents_are_an_error():
    with pytest.raises(ValueError, match="not given"):
        pack_pairs([Doc("d1", 10)], pairs_for("ghost", 1))


@pytest.mark.parametrize("bad", [None, -1])
def test_missing_token_counts_are_an_error(bad):
    with pytest.raises(ValueError, match="token_count"):
        pack_pairs([Doc("d1", bad)], [])
    with pytest.raises(ValueError, match="token_count"):
        pack_pairs([Doc("d1", 10)], [Pair("p", "d1", bad)])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.lists(st.integers(0, 120), max_size=6)),
        max_size=8,
    ),
    st.integers(0, 5),
)
def test_running_kept_tokens_never_exceed_the_running_budget(spec, seed):
    documents = [Doc(f"d{i}", tokens) for i, (tokens, _) in enumerate(spec)]
    pairs = [p for i, (_, counts) in enumerate(spec) for p in pairs_for(f"d{i}", *counts)]
    result = pack_pairs(documents, pairs, seed=seed)

    kept_by_doc = {}
    for pair in result.kept:
        kept_by_doc[pair.document_id] = kept_by_doc.get(pair.document_id, 0) + pair.token_count
    kept_ids = {p.id for p in result.kept}
    budget = used = 0
    for document in documents:
        budget += document.token_count
        used += kept_by_doc.get(document.id, 0)
        assert used <= budget
        # A pair is dropped only when it did not fit; the leftover only shrinks while a
        # document's pairs are tried, so each dropped pair exceeds the final leftover.
        for pair in pairs:
            if pair.document_id == document.id and pair.id not in kept_ids:
                assert pair.token_count > budget - used
    assert result.kept_tokens == used
    assert len(result.kept) + result.dropped == len(pairs)
