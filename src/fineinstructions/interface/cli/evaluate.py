"""``fineinstructions evaluate``: free-form quality of pre-trained models."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import build_config, config_options


@click.command("evaluate", short_help="Models -> NLL, win rate, grades.")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--eval-set", "eval_set", required=True, type=click.Path(exists=True), help="AlpacaEval, MT-Bench or plain-prompt file (or folder).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for evaluation.json, answers and judgements.")
@click.option("--limit", type=int, help="Evaluate only the first N items.")
@click.option("--no-head-to-head", is_flag=True, help="Skip the judged comparison of the first two models.")
@click.option("--no-grade", is_flag=True, help="Skip the judged 1-10 grading.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def evaluate(models, eval_set, output, limit, no_head_to_head, no_grade, quiet, **options) -> None:
    """Evaluate the MODELS (folders `fineinstructions pretrain` wrote) on EVAL_SET: the
    mean negative log-likelihood per token of its reference answers (judge-free); the
    first model's win rate over the second, judged by the [evaluate] LLM in both orders,
    with a bootstrap 95% confidence interval; and a 1-10 grade of every answer. Writes
    OUTPUT/evaluation.json, answers.jsonl and judgements.jsonl (with raw judge output)."""
    from fineinstructions.experiments.evaluate import run_evaluate

    config = build_config(options)
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    run_evaluate(models, eval_set, output, config, head_to_head=not no_head_to_head, grade=not no_grade,
                 limit=limit, log=log)
