"""``fineinstructions pretrain``: a model from scratch on an exported token corpus."""

from __future__ import annotations

import click


def training_options(command):
    """The settings both arms of an experiment share (``pretrain`` and ``experiment``)."""
    for option in reversed([
        click.option("--size", default="tiny", show_default=True, help="Model size: tiny, 300m, 1.8b, or a JSON file of LlamaConfig fields."),
        click.option("--seq-len", default=256, show_default=True, help="Tokens per training sequence."),
        click.option("--tokens", type=int, help="Training budget in tokens (default: the whole corpus)."),
        click.option("--loss", type=click.Choice(["answer", "all"]), default="answer", show_default=True,
                     help="Loss on answer tokens only (the paper's objective) or on every token."),
        click.option("--batch-size", default=8, show_default=True, help="Sequences per device per step."),
        click.option("--grad-accum", default=1, show_default=True, help="Gradient accumulation steps."),
        click.option("--lr", "learning_rate", default=3e-3, show_default=True, help="Peak learning rate."),
        click.option("--schedule", default="cosine", show_default=True, help="Learning-rate schedule (a transformers scheduler name)."),
        click.option("--seed", default=0, show_default=True, help="Seed of initialisation and data order."),
        click.option("--save-steps", default=50, show_default=True, help="Steps between checkpoints."),
    ]):
        command = option(command)
    return command


@click.command("pretrain", short_help="Token corpus -> a model from scratch.")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for checkpoints, the final model and train.json.")
@training_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def pretrain(corpus, output, quiet, **options) -> None:
    """Pre-train a Llama-architecture model from scratch on CORPUS (a folder `export
    --format tokens` wrote) with the transformers Trainer. Run again after a kill, it
    resumes from its last checkpoint. For several GPUs or nodes, start the same command
    under torchrun or accelerate launch."""
    from fineinstructions.experiments.pretrain import PretrainSettings, run_pretrain

    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    run_pretrain(corpus, output, PretrainSettings(**options), log=log)
