"""``fineinstructions report``: one self-contained HTML page about a finished run.

It reads the run folder (``stats.json``, ``run.json`` and the stage folders) and draws,
as inline SVG with no plotting library and nothing fetched: the template complexity
histogram, matches per document, the excerpt-ratio distribution of grounded pairs, the
judge-score distribution, distinct templates against documents processed, the funnel,
the audit of the dataset (when it was audited), and a sample of final pairs beside the document passages they quote, excerpts
highlighted.
"""

from __future__ import annotations

import html
import json
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

from fineinstructions import __version__
from fineinstructions.errors import UserError
from fineinstructions.io import read_documents, read_rows
from fineinstructions.io.writers import atomic_write
from fineinstructions.records import MatchRow, PairRow

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em; }
.chart { flex: 0 0 auto; } .chart h3 { font-size: 1em; margin: 0.2em 0; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; border: 1px solid #ddd; padding: 0.8em; margin: 1em 0; }
.pair pre { white-space: pre-wrap; font: inherit; margin: 0; }
mark { background: #ffe08a; } .meta { color: #666; font-size: 0.9em; }
"""


def _bars(title: str, data: Sequence[tuple[str, float]], *, xlabel: str = "", width: int = 420, height: int = 220) -> str:
    """A bar chart as inline SVG."""
    if not data or not any(v for _, v in data):
        return f'<div class="chart"><h3>{html.escape(title)}</h3><p class="meta">no data</p></div>'
    top = max(v for _, v in data)
    left, bottom, plot_h = 40, 40, height - 60
    step = (width - left - 10) / len(data)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<line x1="{left}" y1="{10 + plot_h}" x2="{width - 5}" y2="{10 + plot_h}" stroke="#999"/>')
    for i, (label, value) in enumerate(data):
        h = plot_h * value / top if top else 0
        x = left + i * step
        parts.append(
            f'<rect x="{x + step * 0.1:.1f}" y="{10 + plot_h - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" fill="#4c78a8">'
            f"<title>{html.escape(label)}: {value:g}</title></rect>"
        )
        if len(data) <= 25 or i % max(1, len(data) // 10) == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 25}" font-size="11" text-anchor="middle">{html.escape(label)}</text>'
            )
        if value:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{10 + plot_h - h - 3:.1f}" font-size="10" text-anchor="middle">{value:g}</text>'
            )
    parts.append(f'<text x="{width / 2}" y="{height - 2}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append("</svg>")
    return f'<div class="chart"><h3>{html.escape(title)}</h3>{"".join(parts)}</div>'


def line_chart(title: str, points: Sequence[tuple[int, int]], *, xlabel: str, ylabel: str, width: int = 420, height: int = 220) -> str:
    """A line chart (x, y increasing) as inline SVG."""
    if len(points) < 2:
        return f'<div class="chart"><h3>{html.escape(title)}</h3><p class="meta">not enough data</p></div>'
    max_x, max_y = max(p[0] for p in points) or 1, max(p[1] for p in points) or 1
    left, plot_w, plot_h = 45, width - 60, height - 60
    coords = " ".join(f"{left + plot_w * x / max_x:.1f},{10 + plot_h - plot_h * y / max_y:.1f}" for x, y in points)
    return (
        f'<div class="chart"><h3>{html.escape(title)}</h3><svg width="{width}" height="{height}" role="img">'
        f'<line x1="{left}" y1="{10 + plot_h}" x2="{left + plot_w}" y2="{10 + plot_h}" stroke="#999"/>'
        f'<line x1="{left}" y1="10" x2="{left}" y2="{10 + plot_h}" stroke="#999"/>'
        f'<polyline points="{coords}" fill="none" stroke="#4c78a8" stroke-width="2"/>'
        f'<text x="{left}" y="{height - 28}" font-size="11">0</text>'
        f'<text x="{left + plot_w}" y="{height - 28}" font-size="11" text-anchor="end">{max_x}</text>'
        f'<text x="{left - 4}" y="16" font-size="11" text-anchor="end">{max_y}</text>'
        f'<text x="{left + plot_w / 2}" y="{height - 5}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>'
        f'<text x="12" y="{10 + plot_h / 2}" font-size="11" transform="rotate(-90 12 {10 + plot_h / 2})" text-anchor="middle">{html.escape(ylabel)}</text>'
        "</svg></div>"
    )


def html_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{v:,}</td>' if isinstance(v, int) else f"<td>{html.escape(str(v))}</td>" for v in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def highlighted(text: str, spans: Sequence[Sequence[int]], context: int = 200) -> str:
    """The passage of ``text`` around ``spans`` as HTML, each span in ``<mark>``."""
    if not spans:
        return html.escape(text[: 2 * context]) + ("…" if len(text) > 2 * context else "")
    ordered = sorted((int(s), int(e)) for s, e in spans)
    start = max(0, ordered[0][0] - context)
    end = min(len(text), max(e for _, e in ordered) + context)
    out, cursor = ["…" if start else ""], start
    for s, e in ordered:
        s = max(s, cursor)
        if e <= s:
            continue
        out.append(html.escape(text[cursor:s]))
        out.append(f"<mark>{html.escape(text[s:e])}</mark>")
        cursor = e
    out.append(html.escape(text[cursor:end]))
    out.append("…" if end < len(text) else "")
    return "".join(out)


def _rows(folder: Path, row_type: type) -> list:
    from fineinstructions.execution.ledger import data_files

    if not folder.exists():
        return []
    return [row for path in data_files([folder]) for row in read_rows([path], row_type)]


def _audit_section(path: Path) -> str:
    """The audit's rules as a table (``fineinstructions audit`` writes the file)."""
    if not path.exists():
        return ""
    audit = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for name, rule in audit["rules"].items():
        first = rule["examples"][0]["detail"] if rule["examples"] else "—"
        rows.append((name, "hard" if rule["hard"] else "soft", rule["checked"], rule["failed"], first))
    verdict = "passed" if audit["passed"] else "FAILED: " + ", ".join(audit["failed_hard_rules"])
    diversity = audit["rules"].get("diversity", {})
    note = (f"{diversity.get('distinct_templates')} distinct templates; the most used has "
            f"{diversity.get('largest_template_share')} of the pairs (paper: at most {diversity.get('paper_largest_template_share')})")
    return (f"<h2>Audit</h2><p>{html.escape(verdict)} · {audit['pairs']} pairs re-checked against their documents "
            f"({html.escape(str(path))})</p><p class=\"meta\">{html.escape(note)}</p>"
            + html_table(rows, ["rule", "kind", "checked", "flagged", "first example"]))


def write_report(run_dir: str | Path, *, samples: int = 8, seed: int = 0) -> Path:
    """Write ``run_dir/report.html`` for a finished run; returns its path."""
    run = Path(run_dir)
    stats_path = run / "stats.json"
    if not stats_path.exists():
        raise UserError(
            f"{run} holds no finished run (no stats.json).\n"
            "  fix: give the folder `fineinstructions run` wrote, after it finished"
        )
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8")) if (run / "run.json").exists() else {}
    stages = stats["stages"]
    funnel = stats["funnel"]

    complexity = sorted((int(k), v) for k, v in stats.get("complexity_histogram", {}).items())
    per_doc = sorted((int(k), v) for k, v in stages["match"].get("matches_per_document_histogram", {}).items())
    grounded = _rows(run / "pairs", PairRow)
    bins = Counter(min(int(p.excerpt_ratio * 20), 19) for p in grounded)
    ratio_data = [(f"{b / 20:.2f}", bins[b]) for b in range(20)]
    scores = stages["judge"].get("score_histogram", {})
    matches = _rows(run / "matches", MatchRow)
    seen_docs: dict[str, None] = {}
    seen_templates: set[str] = set()
    curve = [(0, 0)]
    for row in matches:
        seen_docs.setdefault(row.document_id)
        seen_templates.add(row.template_id)
        curve.append((len(seen_docs), len(seen_templates)))
    documents_processed = funnel["documents"]
    if curve and documents_processed > curve[-1][0]:
        curve.append((documents_processed, len(seen_templates)))

    charts = "".join(
        [
            _bars("Template complexity (variables per template)", [(str(k), v) for k, v in complexity], xlabel="variables"),
            _bars("Matches per document", [(str(k), v) for k, v in per_doc], xlabel="matches"),
            _bars("Excerpt ratio of grounded pairs", ratio_data, xlabel="share of the answer quoted"),
            _bars("Judge scores", [(str(k), scores.get(str(k), 0)) for k in range(1, 6)], xlabel="score"),
            line_chart("Distinct templates vs documents processed", curve, xlabel="documents", ylabel="distinct templates"),
        ]
    )

    funnel_rows = [
        ("documents", funnel["documents"]),
        ("matches", funnel["matches"]),
        ("instantiated (the model wrote a pair)", funnel["instantiated"]),
        ("grounded (every check passed)", funnel["grounded"]),
        (f"judged ≥ {stages['judge'].get('min_score', 4)}", funnel["judged_kept"]),
        ("packed", funnel["packed"]),
    ]
    stage_rows = []
    for name, step in stages.items():
        if "in" not in step:
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in {**step.get("skipped", {}), **step.get("failed", {})}.items())
        stage_rows.append((name, step["in"], step["out"], sum(step.get("skipped", {}).values()), sum(step.get("failed", {}).values()), reasons or "—"))

    dataset = _rows(run / "dataset", PairRow) or _rows(run / "judged", PairRow)
    chosen = random.Random(seed).sample(dataset, min(samples, len(dataset)))
    texts: dict[str, str] = {}
    wanted = {p.document_id for p in chosen}
    if wanted and manifest.get("documents"):
        try:
            for document in read_documents(manifest["documents"], on_error="skip"):
                if document.id in wanted:
                    texts[document.id] = document.text
        except (UserError, OSError):  # documents moved since the run: show the pairs without passages
            texts = {}
    pair_html = []
    for pair in chosen:
        passage = highlighted(texts[pair.document_id], pair.excerpt_spans) if pair.document_id in texts else "(document not found)"
        pair_html.append(
            f'<div class="pair"><div><p><b>Instruction</b></p><pre>{html.escape(pair.instruction)}</pre>'
            f"<p><b>Answer</b></p><pre>{html.escape(pair.answer)}</pre>"
            f'<p class="meta">judge {pair.judge_score}'
            + (f" (expected {pair.judge_expected_score:.2f})" if pair.judge_expected_score is not None else "")
            + (f" · relevance {pair.relevance:.2f}" if pair.relevance is not None else "")
            + f" · excerpt ratio {pair.excerpt_ratio:.2f} · {html.escape(pair.template_id)}</p></div>"
            f'<div><p><b>Document</b> <span class="meta">{html.escape(pair.document_id)}</span></p><pre>{passage}</pre></div></div>'
        )

    audit_html = _audit_section(run / "dataset" / "audit.json")
    inst = stages["instantiate"]
    facts = [
        ("pairs per document", funnel.get("pairs_per_document")),
        ("unresolved excerpt markers", f"{inst.get('unresolved_markers', 0)} of {inst.get('markers', 0)}"),
        ("prompt tokens reused from the KV cache", f"{inst.get('cached_prompt_tokens', 0):,} of {inst.get('prompt_tokens', 0):,}"),
        ("instantiate model", inst.get("model")),
        ("judge model", stages["judge"].get("model")),
    ]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fineinstructions run report</title>
<style>{_STYLE}</style></head><body>
<h1>fineinstructions run report</h1>
<p class="meta">{html.escape(str(run.resolve()))} · fineinstructions {__version__}</p>
<h2>Funnel</h2>
{html_table(funnel_rows, ["step", "count"])}
{html_table([(k, str(v)) for k, v in facts], ["", ""])}
<h2>Stages</h2>
{html_table(stage_rows, ["stage", "in", "out", "skipped", "failed", "by reason"])}
<h2>Distributions</h2>
<div class="charts">{charts}</div>
{audit_html}
<h2>Sample pairs</h2>
<p class="meta">{len(chosen)} of {len(dataset)} final pairs, drawn at random; quoted passages are highlighted in the document.</p>
{"".join(pair_html) or '<p class="meta">no pair was kept</p>'}
</body></html>
"""
    return atomic_write(run / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
