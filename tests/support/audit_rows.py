"""A small hand-made dataset of pairs for the audit, export and evaluation tests:
documents written for the tests and clean pairs quoting them."""

from __future__ import annotations

from fineinstructions.records import PairRow
from fineinstructions.text.packing import format_pair

DOCUMENTS = {
    "bread": "Sourdough bread needs a lively starter. Feed the starter with flour and water the night before baking. "
             "Bake the loaf in a hot covered pot for the first twenty minutes so the crust stays soft while it rises.",
    "bikes": "A bicycle chain wears out slowly. Measure the chain with a ruler every few months. "
             "Replace the chain when twelve links measure more than twelve and one sixteenth inches.",
    "garden": "Tomato plants want six hours of sun. Water tomato plants deeply twice a week rather than a little every day. "
              "Pinch off the suckers that grow between the stem and the branches.",
    "contact": "Questions about the tomato seed catalogue go to orders@seedhouse.example.org or call 212-555-0187 "
               "between nine and five. The catalogue lists forty kinds of tomato seed.",
}
# Our own stand-in for an evaluation set, in MT-Bench's format.
PROTECTED = {"id": "ours-1", "category": "writing", "turns": [
    "Explain how to water tomato plants deeply twice a week rather than a little every day in summer heat",
    "Now say it in one sentence.",
]}


def pair(pid, document, instruction, quotes, *, template="t-1", score=4.5):
    text = DOCUMENTS[document]
    spans = tuple((text.index(q), text.index(q) + len(q)) for q in quotes)
    answer = " ".join(quotes)
    return PairRow(
        id=pid, document_id=document, template_id=template, query_id="q", instruction=instruction, answer=answer,
        excerpt_ratio=sum(e - s for s, e in spans) / len(answer), excerpt_spans=spans, judge_score=round(score),
        judge_expected_score=score, text=format_pair(instruction, answer), token_count=len(answer.split()) + 5,
    )


CLEAN = [
    pair("p-1", "bread", "How should I bake sourdough bread in a pot?",
         ["Bake the loaf in a hot covered pot for the first twenty minutes so the crust stays soft while it rises."]),
    pair("p-2", "bikes", "When should I replace my bicycle chain?",
         ["Measure the chain with a ruler every few months.",
          "Replace the chain when twelve links measure more than twelve and one sixteenth inches."], template="t-2"),
    pair("p-3", "garden", "How much sun do tomato plants want?", ["Tomato plants want six hours of sun."], template="t-3"),
]
