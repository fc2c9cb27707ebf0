"""A distilled student against its teacher, on the same requests, side by side in one run.

For each helper, the teacher runs the stage in prompted mode (the embedded SmolLM2 through
llama.cpp unless --teacher-config names another backend) and the student in
``fineinstructions`` mode through the transformers backend, on the same inputs, none of
which the student was trained on. Printed for each: requests, seconds, requests/s, the
share of outputs that pass the stage's validation, and (student) the share identical to
the teacher's output.

    .venv/bin/python benchmarks/bench_helpers.py templatizer --student STUDENT_DIR \\
        --queries held-out-queries.jsonl --limit 100
    .venv/bin/python benchmarks/bench_helpers.py instantiator --student STUDENT_DIR \\
        --matches SILVER/work/matches --documents ../shared/data/documents.jsonl --limit 60
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from fineinstructions.config import load_config
from fineinstructions.io import read_documents, read_queries, read_rows
from fineinstructions.models.factory import make_llm
from fineinstructions.models.llm import backend_class
from fineinstructions.records import MatchRow, TemplateRow
from fineinstructions.stages.instantiate import Instantiator
from fineinstructions.stages.templatize import Templatizer


def timed(rules, work):
    tick = time.monotonic()
    result = rules(work)
    return result, time.monotonic() - tick


def templatizer(args) -> None:
    config = load_config(files=args.config)
    queries = list(read_queries([args.queries]))[: args.limit]
    teacher = make_llm(config.templatize.llm)
    student = backend_class("transformers")(args.student, batch_size=args.batch_size)
    student.load()
    rows = []
    outputs = {}
    for name, rules in (("teacher", Templatizer(teacher)), ("student", Templatizer(student, mode="fineinstructions"))):
        result, seconds = timed(rules, queries)
        outputs[name] = {t.query_id: t.template for t in result.templates}
        rows.append((name, rules.model, len(queries), seconds, len(result.templates)))
    same = sum(outputs["student"].get(q) == t for q, t in outputs["teacher"].items())
    report(rows, same, len(outputs["teacher"]))


def instantiator(args) -> None:
    config = load_config(files=args.config)
    by_document: dict[str, list[MatchRow]] = defaultdict(list)
    for match in read_rows([args.matches], MatchRow):
        by_document[match.document_id].append(match)
    documents = [d for d in read_documents([args.documents]) if d.id in by_document][: args.limit]
    work = []
    for d in documents:
        matches = sorted(by_document[d.id], key=lambda m: m.chunk)
        work.append((d, [TemplateRow(id=m.template_id, query_id=m.query_id, source="", template=m.template,
                                     compatible_document_description="", variables=tuple(m.variables),
                                     complexity=len(set(m.variables)), model="", prompt_version="") for m in matches],
                     [m.chunk for m in matches]))
    requests = sum(len(templates) for _, templates, _ in work)
    teacher = make_llm(config.instantiate.llm)
    student = backend_class("transformers")(args.student, batch_size=args.batch_size)
    student.load()
    rows, outputs = [], {}
    s = config.instantiate  # the stage's own settings, as `instantiate` builds it
    settings = dict(min_excerpt_ratio=s.min_excerpt_ratio, max_tokens=s.max_tokens, max_excerpts=s.max_excerpts, seed=s.seed,
                    region_window=s.region_window, num_chunks=config.embed.num_chunks)
    for name, rules in (
        ("teacher", Instantiator(teacher, context_window=s.llm.n_ctx, **settings)),
        ("student", Instantiator(student, mode="fineinstructions", context_window=2048, **settings)),
    ):
        result, seconds = timed(rules, work)
        outputs[name] = {p.id: (p.instruction, p.answer) for p in result.pairs}
        rows.append((name, rules.model, requests, seconds, len(result.pairs)))
        print(f"{name}: skipped {dict(result.skipped)}, failed {dict(result.failed)}")
    same = sum(outputs["student"].get(k) == v for k, v in outputs["teacher"].items())
    report(rows, same, len(outputs["teacher"]))


def report(rows, same: int, teacher_valid: int) -> None:
    print(f"{'':8} {'model':58} {'requests':>8} {'seconds':>8} {'req/s':>7} {'valid':>6} {'valid share':>11}")
    for name, model, requests, seconds, valid in rows:
        print(f"{name:8} {model[-58:]:58} {requests:8d} {seconds:8.1f} {requests / seconds:7.2f} {valid:6d} {valid / requests:11.3f}")
    (_, _, requests, teacher_s, teacher_ok), (_, _, _, student_s, student_ok) = rows
    print(f"student/teacher: speed {teacher_s / student_s:.2f}x, valid outputs {student_ok / max(teacher_ok, 1):.2f}x the "
          f"teacher's; identical to the teacher's valid output on {same} of {teacher_valid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("helper", choices=["templatizer", "instantiator"])
    parser.add_argument("--student", required=True, help="the trained student's folder")
    parser.add_argument("--queries", help="templatizer: held-out queries")
    parser.add_argument("--matches", help="instantiator: a matches folder (held-out documents)")
    parser.add_argument("--documents", help="instantiator: the documents the matches name")
    parser.add_argument("--config", action="append", default=[], help="config file naming the teacher (default: embedded)")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8, help="the student's generation batch")
    args = parser.parse_args()
    (templatizer if args.helper == "templatizer" else instantiator)(args)


if __name__ == "__main__":
    main()
