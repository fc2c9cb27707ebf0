"""``instantiate``, ``judge``, ``run`` and ``report``: the model stages and the whole pipeline."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import (
    INPUT,
    build_config,
    config_options,
    document_input_options,
    executor_options,
    open_executor,
    output_options,
    pipeline_input_options,
    template_input_options,
)


def bank_input_options(command):
    return template_input_options(command, prefix="template-")


def _log(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))


def _reasons(step: dict) -> str:
    found = {**step.get("skipped", {}), **step.get("failed", {})}
    return ", ".join(f"{k} {v}" for k, v in found.items()) or "none"


@click.command("instantiate", short_help="Templates + documents -> grounded pairs.")
@click.argument("matches", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--templates", "templates", multiple=True, required=True, type=click.Path(exists=True), help="The template bank the index was built from (folder or files; repeatable).")
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="The documents that were matched (files, folders or URLs; repeatable).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the pairs.")
@click.option("--mode", type=click.Choice(["prompted", "fineinstructions"]), help="Prompt mode (default: prompted).")
@click.option("--constraint", type=click.Choice(["auto", "document", "schema", "none"]), help="How decoding is constrained (default: auto).")
@click.option("--min-excerpt-ratio", type=float, help="Least share of an answer that must be quoted (default 0.8).")
@click.option("--overwrite", is_flag=True, help="Start again instead of resuming what the output folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@document_input_options
@output_options
@executor_options
@config_options
def instantiate(matches, templates, documents, output, mode, constraint, min_excerpt_ratio, overwrite, quiet, **options) -> None:
    """Write an instruction and a grounded answer for every match in MATCHES (the folder
    `fineinstructions match` wrote).

    The model fills the template's variables from the document and answers with
    <excerpt>PREFIX<...>SUFFIX</excerpt> markers, expanded to the document's own text;
    it may answer null when the template does not fit (a skip). Pairs with an unresolved
    or ambiguous marker, a leftover <fi> tag, an empty side or too little quoted text
    are rejected, each with its reason, into OUTPUT.rejects.jsonl. Running the command
    again resumes an interrupted run.
    """
    from fineinstructions.execution.instantiate import run_instantiate

    config = build_config(
        options,
        settings={"instantiate.mode": mode, "instantiate.constraint": constraint, "instantiate.min_excerpt_ratio": min_excerpt_ratio},
    )
    log = _log(quiet)
    with open_executor(options, config) as executor:
        stats = run_instantiate(
            matches, templates, documents, output, config, overwrite=overwrite, executor=executor,
            show_progress=not quiet, log=log,
        )
    step = stats["instantiate"]
    log(
        f"instantiated {step['in']} matches of {step['documents']} documents: {step['out']} grounded pairs; "
        f"skipped/failed: {_reasons(step)}\n"
        f"excerpt markers: {step['markers']}, unresolved {step['unresolved_markers']}, ambiguous {step['ambiguous_markers']}; "
        f"prompt tokens {step['prompt_tokens']} ({step['cached_prompt_tokens']} reused from the KV cache); "
        f"{step['tokens_per_s']} tokens/s\npairs: {output}"
    )


@click.command("judge", short_help="Score pairs 1-5 and keep the good ones.")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the kept pairs.")
@click.option("--min-score", type=float, help="Keep pairs scored at least this (default 4; the expected score where the backend reports log-probabilities).")
@click.option("--min-relevance", type=float, help="Relevance gate: skip pairs whose instruction-answer relevance is below this before judging them.")
@click.option("--format", "judge_format", type=click.Choice(["auto", "flow", "prompted"]), help="Prompt format (default: auto, flow for Flow-Judge models).")
@click.option("--overwrite", is_flag=True, help="Start again instead of resuming what the output folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@output_options
@executor_options
@config_options
def judge(pairs, output, min_score, min_relevance, judge_format, overwrite, quiet, **options) -> None:
    """Score each pair in PAIRS from 1 (off-topic) to 5 (fully answers, nothing
    extraneous) and keep those scoring at least --min-score. Pairs below --min-relevance
    are skipped before the judge sees them. Unreadable judgements are counted and their
    pairs dropped; every dropped pair is in OUTPUT.rejects.jsonl."""
    from fineinstructions.execution.judge import run_judge

    config = build_config(
        options, settings={"judge.min_score": min_score, "judge.min_relevance": min_relevance, "judge.format": judge_format},
    )
    log = _log(quiet)
    with open_executor(options, config) as executor:
        stats = run_judge(
            pairs, output, config, overwrite=overwrite, executor=executor,
            show_progress=not quiet, log=log,
        )
    step = stats["judge"]
    log(
        f"judged {step['in']} pairs: kept {step['out']} (score >= {step['min_score']}); "
        f"scores {step['score_histogram']}; dropped: {_reasons(step)}\njudged pairs: {output}"
    )


@click.command("run", short_help="Run every stage, resumably.")
@click.option("--queries", "queries", multiple=True, type=INPUT, help="Query files, folders or URLs (repeatable).")
@click.option(
    "--templates", "templates", multiple=True, type=INPUT,
    help="A template bank to index instead of (or with) templates made from --queries: files, folders or URLs (repeatable).",
)
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="Document files, folders or URLs (repeatable).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for every stage's output.")
@click.option("--overwrite", is_flag=True, help="Start again instead of resuming what the output folder holds.")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@click.option("--no-audit", is_flag=True, help="Do not audit the dataset at the end (fineinstructions audit).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@pipeline_input_options
@bank_input_options
@output_options
@executor_options
@config_options
def run(queries, templates, documents, output, overwrite, no_report, no_audit, quiet, **options) -> None:
    """Run the whole pipeline: templatize the queries, index the templates, match the
    documents, instantiate, judge and pack, each into its own subfolder of OUTPUT, with
    stats.json and report.html at its root.

    --templates BANK indexes an existing template bank (such as the released one)
    instead of templatizing queries; given both, the bank and the templates made from
    the queries are indexed together, exact repeats once.

    Query logs and corpora name their fields differently: --query-*-field and
    --messages-field say how queries are read, --document-*-field how documents are,
    --template-field, --description-field and --template-id-field how a bank is.

    At the end the dataset is audited (fineinstructions audit; DATASET/audit.json and a
    section of the report); a failed hard rule is reported, and the run exits with
    status 1.

    Running the same command again after an interruption (even kill -9) resumes it:
    finished stages and shards are kept, and completed model calls come from the
    request caches.
    """
    from fineinstructions.execution.pipeline import run_pipeline
    from fineinstructions.interface.report import write_report

    if not queries and not templates:
        raise click.UsageError("give --queries to templatize, --templates BANK to index, or both")
    config = build_config(options)
    log = _log(quiet)

    def audit(dataset):
        from fineinstructions.experiments.audit import run_audit

        return run_audit(dataset, documents, config, log=log)

    with open_executor(options, config) as executor:
        stats = run_pipeline(
            queries, documents, output, config, templates=templates, overwrite=overwrite,
            report=None if no_report else write_report, audit=None if no_audit else audit, executor=executor,
            show_progress=not quiet, log=log,
        )
    print_funnel(stats, output, log)
    if not stats.get("audit", {}).get("passed", True):
        raise SystemExit(1)


def print_funnel(stats: dict, output: str, log) -> None:
    funnel, stages = stats["funnel"], stats["stages"]
    inst = stages["instantiate"]
    log(
        f"funnel: {funnel['documents']} documents -> {funnel['matches']} matches -> "
        f"{funnel['instantiated']} instantiated -> {funnel['grounded']} grounded -> "
        f"{funnel['judged_kept']} judged >= {stages['judge'].get('min_score')} -> {funnel['packed']} packed "
        f"({funnel['pairs_per_document']} pairs per document)\n"
        f"instantiate: {_reasons(inst)}; judge: {_reasons(stages['judge'])}\n"
        f"dataset: {output}/dataset   stats: {output}/stats.json"
    )


@click.command("report", short_help="HTML report of a finished run.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--samples", default=8, show_default=True, help="Sample pairs shown beside their documents.")
def report(run_dir, samples) -> None:
    """Write RUN_DIR/report.html: complexity, matches per document, excerpt ratios,
    judge scores, template diversity, the funnel and sample pairs with their quoted
    passages highlighted."""
    from fineinstructions.interface.report import write_report

    click.echo(str(write_report(run_dir, samples=samples)))
