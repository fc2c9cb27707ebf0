"""The real data of ``../shared/data`` the tests read, and small tables written for the
tests from it."""

from __future__ import annotations

import json
from pathlib import Path

from fineinstructions.io import ShardWriter, read_documents
from fineinstructions.records import DocumentRow, TemplateRow

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DOCUMENTS = DATA / "documents.jsonl"


def real_documents(n: int, step: int = 37) -> list[DocumentRow]:
    documents = list(read_documents([DATA / "documents.jsonl"]))
    return [d for d in documents[::step] if len(d.text) < 6000][:n]


def write_slice(folder: Path, documents: int = 4) -> list[DocumentRow]:
    """24 real queries and ``documents`` real documents as folder/queries.jsonl and
    folder/documents.jsonl; returns the documents."""
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").read_text(encoding="utf-8").splitlines()][::150][:24]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    chosen = real_documents(documents)
    (folder / "documents.jsonl").write_text(
        "".join(json.dumps({"id": d.id, "text": d.text, "source": d.source}) + "\n" for d in chosen)
    )
    return chosen


# A small bank written for these tests: descriptions of kinds of documents.
BANK = [
    ("How do I treat <fi>a garden pest</fi> on my plants?", "A gardening guide that explains how to get rid of pests on plants.", 1),
    ("What happened in the <fi>sports match</fi> between <fi>two teams</fi>?", "A sports news report about a football match and its result.", 2),
    ("Why did <fi>a politician</fi> resign?", "A political news article about a government minister and an election.", 1),
    ("What are the side effects of <fi>a medicine</fi>?", "A health article describing a medical treatment, its benefits and risks.", 1),
    ("How much does it cost to rent <fi>a kind of property</fi> in <fi>a city</fi>?", "A page about renting or buying homes, with prices.", 2),
    ("What is the history of <fi>a country or region</fi>?", "An encyclopedia article about the history of a country, its wars and rulers.", 1),
    ("How do I fix <fi>an error</fi> in <fi>a programming language</fi> when <fi>doing a task</fi>?", "A technical page about software or programming.", 3),
    ("What should I see when visiting <fi>a place</fi>?", "A travel page describing a destination, hotels and sights.", 1),
    ("What did <fi>a company</fi> announce about its <fi>financial results</fi>?", "A business news article about a company's profits, shares or earnings.", 2),
    ("How do I cook <fi>a dish</fi>?", "A recipe with ingredients and cooking steps.", 1),
    ("What did the court decide in <fi>a criminal case</fi>?", "A news report about a crime, a trial and a court ruling.", 1),
    ("Who was <fi>a historical figure</fi>?", "A biography of a person: life, work and death.", 1),
]


def write_bank(folder: Path) -> Path:
    """:data:`BANK` as this package's template rows, in ``folder``."""
    with ShardWriter(folder, TemplateRow) as writer:
        writer.write(
            TemplateRow(
                id=TemplateRow.make_id(template, description),
                query_id=f"q{i}",
                source="test",
                template=template,
                compatible_document_description=description,
                variables=(),
                complexity=complexity,
                model="hand-written",
                prompt_version="test",
            )
            for i, (template, description, complexity) in enumerate(BANK)
        )
    return folder
