"""``fineinstructions train templatizer|instantiator``: a student fine-tuned on silver data."""

from __future__ import annotations

import click


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


@click.group("train", short_help="Fine-tune a helper: templatizer, instantiator.")
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
