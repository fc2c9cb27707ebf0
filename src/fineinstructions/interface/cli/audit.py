"""``fineinstructions audit``: re-check a finished dataset before training on it."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import INPUT, build_config, config_options


def describe(result: dict) -> str:
    """The audit in a few lines: each rule's count, hard ones marked."""
    lines = [f"audit of {result['pairs']} pairs from {result['documents']} documents: "
             + ("passed" if result["passed"] else f"FAILED ({', '.join(result['failed_hard_rules'])})")]
    for name, rule in result["rules"].items():
        kind = "hard" if rule["hard"] else "soft"
        line = f"  {name:<16} {kind}  {rule['failed']} of {rule['checked']} flagged"
        if name == "diversity":
            line = (f"  {name:<16} {kind}  {rule['distinct_templates']} distinct templates; largest share "
                    f"{rule['largest_template_share']} (paper: at most {rule['paper_largest_template_share']})")
        elif name == "relevance" and "quantiles" in rule:
            line += f" (median {rule['quantiles'][50]})"
        lines.append(line)
        for example in rule["examples"][:1]:
            lines.append(f"      e.g. {example.get('pair_id', '')}: {example['detail']}")
    return "\n".join(lines)


@click.command("audit", short_help="Re-check a finished dataset.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="The source documents (files, folders or URLs; repeatable).")
@click.option("--protected", "protected", multiple=True, type=click.Path(exists=True), help="Evaluation sets whose prompts and references the outputs must not overlap (AlpacaEval, MT-Bench or plain JSONL; repeatable).")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="Where to write the audit (default: DATASET/audit.json).")
@click.option("--min-score", type=float, help="The judge score pairs were kept at (default: judge.min_score).")
@click.option("--min-excerpt-ratio", type=float, help="The least excerpt ratio (default: instantiate.min_excerpt_ratio).")
@click.option("--min-relevance", type=float, help="Flag pairs whose instruction-answer cosine is below this (default: judge.min_relevance).")
@click.option("--examples", type=int, default=5, show_default=True, help="Examples kept per rule.")
@click.option("--no-relevance", is_flag=True, help="Do not embed the pairs (no relevance figures).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def audit(dataset, documents, protected, output, min_score, min_excerpt_ratio, min_relevance, examples, no_relevance, quiet, **options) -> None:
    """Re-derive every figure of the dataset in DATASET from its rows and the source
    documents alone: excerpt spans re-expanded against the documents, the excerpt ratio,
    leftover markup, the training text, judge scores, unique ids (hard rules: exit status
    1 when one fails); instruction-answer relevance, template diversity, overlap of the
    outputs with protected evaluation sets, personal data and near-duplicate pairs (soft
    rules: measured, with examples). Writes DATASET/audit.json.
    """
    from fineinstructions.experiments.audit import run_audit

    config = build_config(options)
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    result = run_audit(
        dataset, documents, config, protected=protected, output=output, log=log, min_score=min_score,
        min_excerpt_ratio=min_excerpt_ratio, min_relevance=min_relevance, examples=examples,
        relevance=False if no_relevance else None,
    )
    log(describe(result))
    if not result["passed"]:
        raise SystemExit(1)
