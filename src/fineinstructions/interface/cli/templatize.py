"""``fineinstructions templatize``: real user queries → a validated template bank."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import (
    INPUT,
    build_config,
    config_options,
    executor_options,
    open_executor,
    output_options,
    query_input_options,
)


@click.command("templatize", short_help="Queries -> validated instruction templates.")
@click.argument("queries", nargs=-1, required=True, type=INPUT)
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the template bank.")
@click.option(
    "--protected",
    multiple=True,
    type=click.Path(exists=True),
    help="Evaluation prompts to decontaminate against (file or folder; repeatable; each is one named set).",
)
@click.option("--protected-field", help="Field holding a protected prompt's text (default: text).")
@click.option("--ngram", type=int, help="Tokens in the n-grams compared with protected prompts (default 13).")
@click.option("--near-dup-threshold", type=float, help="MinHash Jaccard similarity at which a query counts as a near duplicate (default 0.8).")
@click.option("--moderation", type=click.Choice(["offline", "openai", "off"]), help="Harmful-content filter (default: offline lexicon).")
@click.option("--mode", type=click.Choice(["prompted", "fineinstructions"]), help="Prompt mode (default: prompted).")
@click.option("--limit", type=int, help="Templatize only the first N queries read (for a quick look).")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder already holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@query_input_options
@output_options
@executor_options
@config_options
def templatize(
    queries, output, protected, protected_field, ngram, near_dup_threshold, moderation, mode, limit, overwrite, quiet, **options
) -> None:
    """Turn real user QUERIES (files or folders, any supported format) into a bank of
    instruction templates with compatible document descriptions.

    Queries are deduplicated (exact and MinHash near duplicates), decontaminated against
    --protected evaluation prompts and screened for harmful content; an LLM writes each
    remaining query's template, and templates that do not parse or still carry the
    query's specifics are rejected. Rejections, with the model's raw output, go to
    OUTPUT.rejects.jsonl beside the bank; counts and the complexity histogram to
    OUTPUT/stats.json.
    """

    from fineinstructions.execution.templatize import run_templatize

    config = build_config(
        options,
        settings={
            "queries.protected": tuple(protected) or None,
            "queries.protected_text_field": protected_field,
            "queries.decontamination_ngram": ngram,
            "queries.near_dedup_threshold": near_dup_threshold,
            "queries.moderation": moderation,
            "templatize.mode": mode,
        },
    )
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    with open_executor(options, config) as executor:
        stats = run_templatize(
            queries,
            output,
            config,
            overwrite=overwrite,
            limit=limit,
            executor=executor,
            show_progress=not quiet,
            log=log,
        )
    step = stats["templatize"]
    histogram = ", ".join(f"{k}: {v}" for k, v in stats["complexity_histogram"].items()) or "none"
    failed = ", ".join(f"{k} {v}" for k, v in step["failed"].items()) or "none"
    dropped = ", ".join(f"{k} {v}" for k, v in stats["filter_queries"]["skipped"].items()) or "none"
    log(
        f"read {stats['read_queries']['records']} queries; filtered out: {dropped}\n"
        f"templatized {step['in']} queries: {step['valid']} valid ({(step['valid_rate'] or 0):.1%}), "
        f"{step['out']} distinct templates in the bank, {step['queries_per_s']} queries/s\n"
        f"rejected: {failed}\n"
        f"complexity (variables: templates): {histogram}\n"
        f"bank: {output}   rejects: {stats['rejects_file']}"
    )
