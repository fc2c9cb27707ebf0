from fineinstructions.models.tokens import load_token_counter
from fineinstructions.records import DocumentRow, PairRow
from fineinstructions.stages.pack import pack_stage
from fineinstructions.text.packing import format_pair


def make_pair(document_id, n, answer):
    return PairRow(
        id=f"{document_id}-{n}",
        document_id=document_id,
        template_id=f"t{n}",
        query_id=f"q{n}",
        instruction=f"Question {n}?",
        answer=answer,
        excerpt_ratio=1.0,
    )


def test_pack_stage_formats_counts_and_packs_with_the_embedded_tokenizer():
    counter = load_token_counter("embedded")
    documents = [
        DocumentRow(id="d1", text="Tides rise and fall twice a day. " * 8, source="s"),
        DocumentRow(id="d2", text="Short.", source="s"),
    ]
    pairs = [make_pair("d1", i, "Tides rise and fall twice a day.") for i in range(6)]
    pairs.append(make_pair("d2", 9, "A much longer answer than the document itself could pay for."))
    result = pack_stage(documents, pairs, counter=counter, seed=0)

    doc_tokens = counter.count([d.text for d in documents])
    assert result.budget_tokens == sum(doc_tokens)
    for pair in result.kept:
        assert pair.text == format_pair(pair.instruction, pair.answer)
        assert pair.token_count == counter.count([pair.text])[0]
    assert result.kept_tokens == sum(p.token_count for p in result.kept)
    assert result.kept_tokens <= result.budget_tokens
    assert len(pairs) == len(result.kept) + result.dropped
    assert result.dropped >= 1


def test_documents_already_counted_are_not_recounted():
    class Counting:
        name = "chars"

        def __init__(self):
            self.seen = []

        def count(self, texts):
            self.seen.extend(texts)
            return [len(t) for t in texts]

    counter = Counting()
    documents = [DocumentRow(id="d1", text="abc", source="s", token_count=1000)]
    pack_stage(documents, [make_pair("d1", 0, "x")], counter=counter)
    assert "abc" not in counter.seen
