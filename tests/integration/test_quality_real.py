"""The quality signals with the real embedded models on real documents from ../shared/data:
the judge's expected score, the embedder's relevance, excerpts held to the matched region."""

import json
from pathlib import Path

import pytest

from fineinstructions.config import load_config
from fineinstructions.io import read_documents
from fineinstructions.models.embedder import make_embedder
from fineinstructions.records import DocumentRow, PairRow, TemplateRow
from fineinstructions.stages.instantiate import Instantiator
from fineinstructions.stages.judge import Judge
from fineinstructions.stages.relevance import RelevanceScorer
from fineinstructions.text.instantiate_grammar import (
    chunk_region,
    document_grammar,
    excerpt_anchors,
    sentence_offsets,
    sentences,
)

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def documents(n: int, source: str = "xsum-bbc") -> list[DocumentRow]:
    found = [d for d in read_documents([DATA / "documents.jsonl"]) if d.source == source and 1500 < len(d.text) < 5000]
    return found[:n]


def pair(n: int, document: DocumentRow, instruction: str, start: int, end: int) -> PairRow:
    return PairRow(
        id=f"p{n}", document_id=document.id, template_id="t", query_id="q", instruction=instruction,
        answer=document.text[start:end], excerpt_ratio=1.0, excerpt_spans=((start, end),),
    )


def test_the_real_judge_gives_an_expected_score_that_decides_what_is_kept(llm):
    docs = documents(3)
    pairs = []
    for n, document in enumerate(docs):
        first = sentences(document.text)[0]
        start = document.text.find(first.split(" ")[0])
        pairs.append(pair(n, document, "What happened, according to the report?", start, start + len(first)))
    result = Judge(llm, min_score=1)(pairs)
    assert result.expected_scores == len(result.kept) == len(pairs)
    for kept in result.kept:
        assert 1.0 <= kept.judge_expected_score <= 5.0
        assert kept.judge_score in (1, 2, 3, 4, 5)
    # The same replies with a threshold between them keep exactly the pairs above it.
    cut = sorted(p.judge_expected_score for p in result.kept)[1]
    strict = Judge(llm, min_score=cut)(pairs)
    assert {p.id for p in strict.kept} == {p.id for p in result.kept if p.judge_expected_score >= cut}
    assert strict.skipped.get("low_score", 0) == len(pairs) - len(strict.kept)


# Questions written for three BBC articles of the shared data, and the sentence of each
# article (by position) that answers its question.
QUESTIONS = {
    "xsum-bbc-26e62ea3e89f": ("How many people died in the Honduras prison fire?", 1),
    "xsum-bbc-396bf8131acd": ("What slogans were the JNU students shouting?", 2),
    "xsum-bbc-7015384434c8": ("What was the Ugandan opposition leader charged with?", 2),
}


def test_the_real_embedder_scores_the_answering_sentence_above_other_articles_sentences():
    scorer = RelevanceScorer(make_embedder(load_config("embedded").embed))
    docs = {d.id: d for d in read_documents([DATA / "documents.jsonl"]) if d.id in QUESTIONS}
    texts = {i: d.text for i, d in docs.items()}
    answers = {}
    for document_id, (_, position) in QUESTIONS.items():
        text = texts[document_id]
        body = sentences(text)[position]
        start = text.find(" ".join(body.split(" ")[:4]))
        answers[document_id] = (start, start + len(body))
    pairs = [
        pair(n, docs[source], question, *answers[source])
        for n, (question, _) in enumerate(QUESTIONS.values())
        for source in QUESTIONS
    ]
    scored = scorer(pairs, texts)
    for asked in QUESTIONS:
        mine = [p for p in scored if p.instruction == QUESTIONS[asked][0]]
        right = next(p for p in mine if p.document_id == asked)
        for wrong in (p for p in mine if p.document_id != asked):
            assert right.relevance > wrong.relevance + 0.1, (asked, right.relevance, wrong.relevance)
            assert right.passage_relevance > wrong.passage_relevance, asked


def test_the_region_grammar_admits_real_excerpts_only_from_the_region(llm):
    decoder = llm._decoder
    for document in documents(2, "c4") + documents(1):
        text = document.text
        region = chunk_region(4, 5, len(text), 0.1)
        grammar = document_grammar(text, "what does <fi>the subject</fi> say", region=region)
        offsets = sentence_offsets(text)
        anchors = excerpt_anchors(text)
        admitted = rejected = 0
        for i, anchor in enumerate(anchors):
            if not (anchor.prefix and anchor.suffix):
                continue
            reply = json.dumps({"instruction": "what does the page say",
                                "answer": f"<excerpt>{anchor.prefix}<...>{anchor.suffix}</excerpt>"})
            inside = region[0] <= offsets[i] < region[1]
            assert decoder.accepts(grammar, reply) == inside, (document.id, i)
            admitted += inside
            rejected += not inside
        assert admitted and rejected


def test_real_instantiations_quote_from_the_chunk_that_retrieved_the_template(llm):
    docs = documents(4)
    templates = [
        TemplateRow(id=f"t{i}", query_id=f"q{i}", source="s", template=text, compatible_document_description="d",
                    variables=("a subject",), complexity=1, model="m", prompt_version="v")
        for i, text in enumerate(["what does the article say about <fi>a subject</fi>", "what happened to <fi>a subject</fi>"])
    ]
    stage = Instantiator(llm, constraint="document", context_window=4096, region_window=0.1, num_chunks=5, max_excerpts=1)
    result = stage([(d, templates, [2, 2]) for d in docs])
    assert result.requests == 8 and result.unresolved_markers == 0 and result.markers > 0
    texts = {d.id: d.text for d in docs}
    for made in result.pairs:
        text = texts[made.document_id]
        region = chunk_region(2, 5, len(text), 0.1)
        starts = [o for o in sentence_offsets(text) if region[0] <= o < region[1]]
        (start, _), = made.excerpt_spans
        assert start in starts or len(starts) < 3, (made.document_id, start, region)
