"""Do the kept pairs answer their instructions? Every filter signal against blind ratings.

The rated set (``benchmarks/data/quality-ratings.jsonl``) holds grounded pairs made by
runs on ``../shared/data`` (instantiated, before any judge), each rated blind by a
careful reader as ``useful`` (the answer addresses the instruction) or not, with a
one-line reason. It stores ids, the instruction, the excerpt spans and the labels, never
document text: the answers are rebuilt from ``../shared/data/documents.jsonl``.

Three steps:

1. ``sheets RUN_DIR... -o SHEETS.jsonl``: a sample of the runs' grounded pairs, with the
   instruction, the answer and the document as the instantiator saw it, for raters (no
   score of any kind is on a sheet);
2. ``collect SHEETS.jsonl LABELS.jsonl... -o RATINGS.jsonl``: the raters' labels
   (``{"pair_id", "label", "reason"}`` lines) joined to the sheets' ids and spans;
3. ``measure`` (the default): rebuilds the pairs, scores each with every signal (the
   judge's written score, its expected score, the embedder's instruction-answer and
   instruction-passage relevance, and a combination), and prints each signal's ROC AUC
   against the ratings, then the precision (share of kept pairs rated useful) and recall
   (share of useful pairs kept) of today's judge (written score >= 4) and of the
   configured filter (relevance gate, then the expected score), and with
   ``--calibrate`` the thresholds that give the best precision while keeping at least
   half of the useful pairs today's judge keeps.

    .venv/bin/python benchmarks/quality.py sheets RUN_A RUN_B -o /tmp/sheets.jsonl
    .venv/bin/python benchmarks/quality.py collect /tmp/sheets.jsonl /tmp/labels-*.jsonl \\
        -o benchmarks/data/quality-ratings.jsonl
    .venv/bin/python benchmarks/quality.py measure --calibrate
    .venv/bin/python benchmarks/quality.py measure --set judge.min_relevance=0.3 --set judge.min_score=4.2

The judge and the embedder are the configured ones (``--preset``, ``--config``,
``--set``), the embedded default unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from fineinstructions.config import load_config
from fineinstructions.io import read_documents, read_rows
from fineinstructions.records import PairRow

ROOT = Path(__file__).resolve().parent
RATINGS = ROOT / "data" / "quality-ratings.jsonl"
DOCUMENTS = ROOT.parent.parent / "shared" / "data" / "documents.jsonl"
LABELS = ("useful", "not_useful")


# -- 1. sheets for the raters ---------------------------------------------------------


def pieces(answer: str, document: str, spans: list[tuple[int, int]]) -> list[str] | None:
    """The text around ``spans`` in ``answer`` (len(spans) + 1 strings), so the answer is
    ``pieces[0] + span_0 + pieces[1] + …``; ``None`` when the spans are not in order in it."""
    out, cursor = [], 0
    for start, end in spans:
        at = answer.find(document[start:end], cursor)
        if at < 0:
            return None
        out.append(answer[cursor:at])
        cursor = at + end - start
    out.append(answer[cursor:])
    return out


def rebuild(spans: list[tuple[int, int]], around: list[str], document: str) -> str:
    text = around[0]
    for (start, end), after in zip(spans, around[1:], strict=True):
        text += document[start:end] + after
    return text


def sheets(args: argparse.Namespace) -> None:
    documents = {d.id: d.text for d in read_documents([args.documents])}
    rated = set()
    for path in args.exclude:  # pairs already rated: the same pair id with the same excerpts
        rated |= {(r["pair_id"], json.dumps(r["excerpt_spans"])) for r in map(json.loads, Path(path).read_text(encoding="utf-8").splitlines())}
    pool: dict[tuple[str, str], tuple[PairRow, str]] = {}
    for run in args.runs:
        for pair in read_rows([Path(run) / "pairs"], PairRow):
            key = (pair.id, json.dumps([list(span) for span in pair.excerpt_spans]))
            if key not in rated:
                pool.setdefault(key, (pair, run))
    chosen = sorted(pool)
    random.Random(args.seed).shuffle(chosen)
    written = 0
    with open(args.output, "w", encoding="utf-8") as out:
        for key in chosen[: args.limit]:
            pair, run = pool[key]
            document = documents[pair.document_id]
            spans = [tuple(span) for span in pair.excerpt_spans]
            around = pieces(pair.answer, document, spans)
            if around is None:
                print(f"skipped {pair.id}: its spans are not in its answer", file=sys.stderr)
                continue
            seen = document[: pair.document_chars] if pair.document_chars else document
            out.write(json.dumps({
                "pair_id": pair.id, "document_id": pair.document_id, "template_id": pair.template_id,
                "query_id": pair.query_id, "run": str(run), "instruction": pair.instruction,
                "answer": pair.answer, "excerpt_spans": spans, "answer_pieces": around,
                "document": seen,
            }, ensure_ascii=False) + "\n")
            written += 1
    print(f"{written} sheets from {len(pool)} grounded pairs in {len(args.runs)} runs: {args.output}")


# -- 2. labels joined to ids ----------------------------------------------------------


def collect(args: argparse.Namespace) -> None:
    sheet = {row["pair_id"]: row for row in map(json.loads, Path(args.sheets).read_text(encoding="utf-8").splitlines())}
    existing = Path(args.output).read_text(encoding="utf-8").splitlines() if args.append and Path(args.output).exists() else []
    rows = []
    for path in args.labels:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            label = json.loads(line)
            where = f"{path}, line {number}"
            if label.get("pair_id") not in sheet:
                sys.exit(f"{where}: pair_id {label.get('pair_id')!r} is on no sheet")
            if label.get("label") not in LABELS:
                sys.exit(f"{where}: label must be one of {LABELS}, not {label.get('label')!r}")
            if not str(label.get("reason", "")).strip():
                sys.exit(f"{where}: give a one-line reason")
            row = sheet[label["pair_id"]]
            rows.append({
                **{k: row[k] for k in ("pair_id", "document_id", "template_id", "query_id", "instruction", "excerpt_spans", "answer_pieces")},
                "label": label["label"], "reason": label["reason"].strip(), "rater": label.get("rater", Path(path).stem),
            })
    seen = set()
    rows = [r for r in rows if not (r["pair_id"] in seen or seen.add(r["pair_id"]))]
    rows = [json.loads(line) for line in existing] + rows
    Path(args.output).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    useful = sum(r["label"] == "useful" for r in rows)
    print(f"{len(rows)} rated pairs ({useful} useful): {args.output}")


# -- 3. measure -----------------------------------------------------------------------


def rated_pairs(ratings: Path, documents: Path) -> tuple[list[PairRow], np.ndarray, dict[str, str]]:
    texts = {d.id: d.text for d in read_documents([documents])}
    pairs, labels = [], []
    for row in map(json.loads, ratings.read_text(encoding="utf-8").splitlines()):
        spans = [tuple(s) for s in row["excerpt_spans"]]
        document = texts[row["document_id"]]
        answer = rebuild(spans, row["answer_pieces"], document)
        excerpted = sum(e - s for s, e in spans)
        seen = sum(p.id.split("~")[0] == row["pair_id"] for p in pairs)  # the same pair, other excerpts
        pairs.append(PairRow(
            id=row["pair_id"] + (f"~{seen + 1}" if seen else ""), document_id=row["document_id"], template_id=row["template_id"], query_id=row["query_id"],
            instruction=row["instruction"], answer=answer, excerpt_ratio=excerpted / max(len(answer), 1),
            excerpt_spans=tuple(spans),
        ))
        labels.append(row["label"] == "useful")
    return pairs, np.array(labels), texts


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(scores)
    return float(roc_auc_score(labels[known], scores[known]))


def ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    filled = np.where(np.isnan(values), np.nanmin(values), values)
    return rankdata(filled) / len(filled)


def outcome(keep: np.ndarray, labels: np.ndarray) -> tuple[int, int, float, float]:
    kept, useful_kept = int(keep.sum()), int((keep & labels).sum())
    return kept, useful_kept, useful_kept / max(kept, 1), useful_kept / max(int(labels.sum()), 1)


def measure(args: argparse.Namespace) -> None:
    from fineinstructions.models.embedder import make_embedder
    from fineinstructions.models.factory import make_llm
    from fineinstructions.stages.judge import Judge
    from fineinstructions.stages.relevance import RelevanceScorer

    config = load_config(args.preset, files=args.config, overrides=args.set)
    pairs, labels, texts = rated_pairs(Path(args.ratings), Path(args.documents))
    print(f"{len(pairs)} rated pairs, {int(labels.sum())} useful ({labels.mean():.1%})")

    pairs = RelevanceScorer(make_embedder(config.embed))(pairs, texts)
    llm = make_llm(config.judge.llm, cache_path=args.cache)
    judge = Judge(llm, format=config.judge.format, prompt=config.judge.prompt, min_score=1, score="expected",
                  max_tokens=config.judge.max_tokens)
    judged = {p.id: p for p in judge(pairs).kept}
    llm.close()

    def column(get) -> np.ndarray:
        return np.array([np.nan if get(p) is None else float(get(p)) for p in pairs])

    written = column(lambda p: judged[p.id].judge_score if p.id in judged else None)
    expected = column(lambda p: judged[p.id].judge_expected_score if p.id in judged else None)
    relevance = column(lambda p: p.relevance)
    passage = column(lambda p: p.passage_relevance)
    signals = {
        "judge, written score": written,
        "judge, expected score": expected,
        "relevance (instruction-answer)": relevance,
        "relevance (instruction-passage)": passage,
        "combined (mean rank: expected score, relevance)": (ranks(expected) + ranks(relevance)) / 2,
    }
    print(f"\n{'signal':50} {'ROC AUC':>8}")
    for name, values in signals.items():
        print(f"{name:50} {auc(values, labels):8.3f}")

    today = np.nan_to_num(written) >= 4
    score = np.where(np.isnan(expected), written, expected)
    min_relevance = config.judge.min_relevance
    gate = np.ones(len(pairs), bool) if min_relevance is None else np.nan_to_num(relevance, nan=1.0) >= min_relevance
    configured = gate & (np.nan_to_num(score) >= config.judge.min_score)
    print(f"\n{'filter':58} {'kept':>5} {'useful':>6} {'precision':>9} {'recall':>7}")
    base = outcome(today, labels)
    rows = [("today: written score >= 4", today),
            (f"configured: relevance >= {min_relevance}, score >= {config.judge.min_score}", configured)]
    for name, keep in rows:
        kept, useful, precision, recall = outcome(keep, labels)
        print(f"{name:58} {kept:5d} {useful:6d} {precision:9.3f} {recall:7.3f}")
    kept, useful, precision, _ = outcome(configured, labels)
    print(f"\nconfigured vs today: precision x{precision / max(base[2], 1e-9):.2f}, "
          f"useful pairs kept {useful} of today's {base[1]} ({useful / max(base[1], 1):.0%})")
    if args.calibrate:
        calibrate(labels, relevance, score, today, [p.document_id for p in pairs])
    if args.output:
        Path(args.output).write_text("".join(
            json.dumps({"pair_id": p.id, "useful": bool(u), "written": _num(w), "expected": _num(e),
                        "relevance": _num(r), "passage_relevance": _num(q)}) + "\n"
            for p, u, w, e, r, q in zip(pairs, labels, written, expected, relevance, passage, strict=True)
        ))
        print(f"scores: {args.output}")


def _num(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def best_thresholds(labels: np.ndarray, relevance: np.ndarray, score: np.ndarray, today: np.ndarray) -> list[tuple]:
    """Every (min_relevance, min_score) that keeps at least half of the useful pairs
    ``today`` keeps, best precision first (ties: more useful pairs kept)."""
    floor = (int((today & labels).sum()) + 1) // 2
    candidates = []
    gates = [None] + sorted({round(float(v), 2) for v in relevance[~np.isnan(relevance)]})
    for gate in gates:
        passed = np.ones(len(labels), bool) if gate is None else np.nan_to_num(relevance, nan=1.0) >= gate
        for min_score in np.round(np.arange(1.0, 5.01, 0.05), 2):
            keep = passed & (np.nan_to_num(score) >= min_score)
            kept, useful, precision, recall = outcome(keep, labels)
            if useful >= floor and kept:
                candidates.append((precision, useful, gate, float(min_score), kept, recall))
    candidates.sort(key=lambda c: (-c[0], -c[1]))
    return candidates


def keep_at(gate: float | None, min_score: float, relevance: np.ndarray, score: np.ndarray) -> np.ndarray:
    passed = np.ones(len(score), bool) if gate is None else np.nan_to_num(relevance, nan=1.0) >= gate
    return passed & (np.nan_to_num(score) >= min_score)


def calibrate(labels, relevance, score, today, documents: list[str]) -> None:
    """The thresholds with the best precision on the whole set, then the same choice made
    on half the documents and measured on the other half (both ways), so the figure a
    user can expect is not the one the thresholds were fitted to."""
    base = outcome(today, labels)
    candidates = best_thresholds(labels, relevance, score, today)
    print(f"\ncalibration: best precision keeping >= {(base[1] + 1) // 2} useful pairs (half of today's {base[1]})")
    print(f"{'min_relevance':>13} {'min_score':>9} {'kept':>5} {'useful':>6} {'precision':>9} {'recall':>7}")
    for precision, useful, gate, min_score, kept, recall in candidates[:10]:
        print(f"{str(gate):>13} {min_score:9.2f} {kept:5d} {useful:6d} {precision:9.3f} {recall:7.3f}")
    names = sorted(set(documents))
    random.Random(0).shuffle(names)
    half = set(names[: len(names) // 2])
    fold = np.array([d in half for d in documents])
    print("\nheld out (thresholds chosen on one half of the documents, measured on the other):")
    print(f"{'fold':>5} {'min_relevance':>13} {'min_score':>9} {'kept':>5} {'useful':>6} {'precision':>9} "
          f"{'today':>7} {'x today':>7} {'useful vs today':>15}")
    for name, fit in (("A->B", fold), ("B->A", ~fold)):
        test = ~fit
        chosen = best_thresholds(labels[fit], relevance[fit], score[fit], today[fit])
        if not chosen:
            print(f"{name:>5} no thresholds keep half of today's useful pairs")
            continue
        _, _, gate, min_score, _, _ = chosen[0]
        keep = keep_at(gate, min_score, relevance[test], score[test])
        kept, useful, precision, _ = outcome(keep, labels[test])
        _, today_useful, today_precision, _ = outcome(today[test], labels[test])
        ratio = f"{precision / today_precision:7.2f}" if today_precision else f"{'n/a':>7}"
        print(f"{name:>5} {str(gate):>13} {min_score:9.2f} {kept:5d} {useful:6d} {precision:9.3f} "
              f"{today_precision:7.3f} {ratio} {useful:>7d} of {today_useful:<5d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    s = commands.add_parser("sheets", help="sample grounded pairs of runs into blind rating sheets")
    s.add_argument("runs", nargs="+", help="run folders (each with pairs/)")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--documents", default=str(DOCUMENTS))
    s.add_argument("--limit", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--exclude", action="append", default=[], help="a ratings file whose pairs are not sheeted again")
    c = commands.add_parser("collect", help="join raters' labels to the sheets' ids")
    c.add_argument("sheets")
    c.add_argument("labels", nargs="+")
    c.add_argument("-o", "--output", default=str(RATINGS))
    c.add_argument("--append", action="store_true", help="add to the ratings the output file already holds")
    m = commands.add_parser("measure", help="every signal against the ratings (the default)")
    for p in (parser, m):
        p.add_argument("--ratings", default=str(RATINGS))
        p.add_argument("--documents", default=str(DOCUMENTS))
        p.add_argument("--preset", default="embedded")
        p.add_argument("--config", action="append", default=[])
        p.add_argument("--set", action="append", default=[], help="section.field=value")
        p.add_argument("--cache", help="a request cache file for the judge's calls")
        p.add_argument("--calibrate", action="store_true")
        p.add_argument("--output", help="write each pair's scores and label here (JSONL)")
    args = parser.parse_args()
    {"sheets": sheets, "collect": collect}.get(args.command, measure)(args)


if __name__ == "__main__":
    main()
