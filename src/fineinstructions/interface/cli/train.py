"""``fineinstructions train templatizer|instantiator``: a student fine-tuned on silver data."""

from __future__ import annotations

import json

import click

from fineinstructions.interface.cli.distill import TEACHER_HELP, teacher_settings
from fineinstructions.interface.cli.options import INPUT, build_config, config_options


def student_options(command):
    for option in reversed([
        click.option("--silver", required=True, type=click.Path(exists=True, file_okay=False), help="Silver data (`distill` wrote it)."),
        click.option("--base", required=True, help="Base model: a Hugging Face name or folder, or 'embedded' (SmolLM2-135M, offline)."),
        click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the trained model."),
        click.option("--max-steps", type=int, help="Optimizer steps (default: --epochs passes over the silver data)."),
        click.option("--epochs", default=1.0, show_default=True, help="Passes over the silver data."),
        click.option("--lr", "learning_rate", type=float, help="Peak learning rate (default: 5e-5, or 2e-4 with --lora)."),
        click.option("--batch-size", default=4, show_default=True, help="Examples per device per step."),
        click.option("--grad-accum", default=1, show_default=True, help="Gradient accumulation steps."),
        click.option("--max-length", default=2048, show_default=True, help="Longest example in tokens (longer ones are left out)."),
        click.option("--lora", is_flag=True, help="Train LoRA adapters (peft) and merge them into the saved model."),
        click.option("--lora-rank", default=16, show_default=True, help="Rank of the LoRA adapters."),
        click.option("--seed", default=0, show_default=True, help="Seed of data order and initialisation."),
        click.option("--save-steps", default=200, show_default=True, help="Steps between checkpoints."),
        click.option("--overwrite", is_flag=True, help="Replace what the output folder holds."),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
    ]):
        command = option(command)
    return command


@click.group("train", short_help="Fine-tune a helper: templatizer, instantiator, retriever.")
def train() -> None:
    """Fine-tune a helper on silver data (`fineinstructions distill`) with the transformers
    Trainer, loss on the assistant turn only. The output is a Hugging Face model folder
    that runs as the stage's model in fineinstructions mode."""


def _student(helper: str):
    stage = "templatize" if helper == "templatizer" else "instantiate"
    about = (
        f"Fine-tune BASE into a {helper} on SILVER. The output folder works as "
        f"--set {stage}.mode=fineinstructions --set {stage}.llm.backend=transformers --set {stage}.llm.model=OUTPUT "
        "(or with vLLM); OUTPUT/train.json holds the loss curve. Run again after a kill, it resumes."
    )

    @train.command(helper, short_help=f"Silver data -> a {helper} model.", help=about)
    @student_options
    def command(silver, base, output, overwrite, quiet, **options) -> None:
        from fineinstructions.experiments.students import StudentSettings, train_student

        log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
        train_student(helper, silver, base, output, StudentSettings(**options), overwrite=overwrite, log=log)
    return command


templatizer = _student("templatizer")
instantiator = _student("instantiator")


@train.command("retriever", short_help="Fine-tune the retriever (rounds 1 and 2).")
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="Document files, folders or URLs (repeatable).")
@click.option("--templates", "templates", multiple=True, required=True, type=INPUT, help="The template bank (repeatable).")
@click.option("--index", "index", type=click.Path(exists=True, file_okay=False), help="The bank's index under the current embedder (default: built into OUTPUT/work/index).")
@click.option("--labels", "labels", multiple=True, type=click.Path(exists=True), help="Labels to train on: JSONL of document_id, template_id, compatible[, chunk] (repeatable).")
@click.option("--held-out", "held_out", multiple=True, type=click.Path(exists=True), help="Labels to calibrate on, never trained on (default: --held-out-share of the documents' labels).")
@click.option("--held-out-share", default=0.2, show_default=True, help="Share of the documents whose labels are held out.")
@click.option("--teacher-config", type=click.Path(exists=True, dir_okay=False), help=TEACHER_HELP)
@click.option("--no-teacher", is_flag=True, help="Train on --labels only; the teacher labels nothing.")
@click.option("--rounds", type=click.IntRange(1, 2), default=2, show_default=True, help="1: global vectors; 2: also each Gaussian-pooled chunk.")
@click.option("--candidates", default=5, show_default=True, help="Templates retrieved per document vector for the teacher to label.")
@click.option("--limit", type=int, help="The teacher labels the candidates of the first N documents only.")
@click.option("--epochs", default=1.0, show_default=True, help="Passes over the labels, each round.")
@click.option("--lr", "learning_rate", default=2e-5, show_default=True, help="Peak learning rate.")
@click.option("--batch-size", default=16, show_default=True, help="Pairs per step.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the trained retriever.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def retriever(documents, templates, index, labels, held_out, held_out_share, teacher_config, no_teacher, rounds, candidates,
              limit, epochs, learning_rate, batch_size, output, quiet, **options) -> None:
    """Fine-tune the [embed] model so that a document lands near the descriptions of the
    templates it can answer: the teacher labels the current index's candidates (round 1:
    whole documents; round 2: each chunk's passage), and sentence-transformers' trainer
    fits a cosine-similarity loss. The match threshold is then recalibrated on held-out
    labels and stored with the model, so match needs no --threshold. Rebuild the index
    with the new model (--set embed.model=OUTPUT): the old one is refused."""
    from fineinstructions.interface.retriever import train_retriever

    config = build_config(options, settings=teacher_settings(teacher_config, "instantiate"))
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    train_retriever(documents, templates, output, config, index=index, labels=labels, held_out=held_out,
                    held_out_share=held_out_share, teacher=not no_teacher, rounds=rounds, candidates=candidates, limit=limit,
                    epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, log=log)


@click.command("calibrate", short_help="Labels -> the embedder's match threshold.")
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(exists=True), help="JSONL of document_id, template_id, compatible[, chunk] (repeatable).")
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="The documents the labels name.")
@click.option("--templates", "templates", multiple=True, required=True, type=INPUT, help="The bank the labels name.")
@click.option("--write", is_flag=True, help="Store the threshold with the embedder's folder, for match to use.")
@config_options
def calibrate(labels, documents, templates, write, **options) -> None:
    """Score labelled (document, template) pairs with the [embed] model as match does,
    and print the threshold with the best F1 with its precision and recall."""
    from fineinstructions.interface.retriever import run_calibrate

    config = build_config(options)
    result = run_calibrate(labels, documents, templates, config, write=write, log=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(result))
