"""``fineinstructions experiment``: the controlled comparison, end to end."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import INPUT, build_config, config_options
from fineinstructions.interface.cli.pretrain import training_options

TRAINING = ("size", "seq_len", "tokens", "loss", "batch_size", "grad_accum", "learning_rate", "schedule", "seed", "save_steps")


@click.command("experiment", short_help="Pairs vs the same documents: the whole experiment.")
@click.option("--queries", "queries", multiple=True, type=INPUT, help="Query files, folders or URLs (repeatable).")
@click.option("--templates", "templates", multiple=True, type=INPUT, help="A template bank to index instead of (or with) templates made from --queries (repeatable).")
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="Document files, folders or URLs (repeatable).")
@click.option("--eval-set", "eval_set", required=True, type=click.Path(exists=True), help="AlpacaEval, MT-Bench or plain-prompt file.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for every step and the report.")
@training_options
@click.option("--limit", type=int, help="Evaluate on the first N items only.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def experiment(queries, templates, documents, eval_set, output, limit, quiet, **options) -> None:
    """Run the paper's controlled experiment on your corpus: the pipeline (its queries
    decontaminated against EVAL_SET), the audit, the dataset and the control corpus (the
    same documents as plain text, cut to the same token count), two models pre-trained
    from scratch with identical settings, and their evaluation. Writes
    OUTPUT/experiment.json and OUTPUT/report.html; run again after a kill, it resumes."""
    from fineinstructions.experiments.pretrain import PretrainSettings
    from fineinstructions.interface.experiment import run_experiment

    if not queries and not templates:
        raise click.UsageError("give --queries to templatize, --templates BANK to index, or both")
    training = {name: options.pop(name) for name in TRAINING}
    config = build_config(options)
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    settings = PretrainSettings(**training)
    result = run_experiment(queries, documents, eval_set, output, config, settings, templates=templates, limit=limit,
                            show_progress=not quiet, log=log)
    h2h = result.get("head_to_head") or {}
    log(f"experiment: reference NLL pairs {result['arms']['pairs'].get('reference_nll')} vs control "
        f"{result['arms']['control'].get('reference_nll')}; pairs model's win rate {h2h.get('win_rate')} "
        f"(95% CI {h2h.get('ci95')})\nreport: {output}/report.html")
