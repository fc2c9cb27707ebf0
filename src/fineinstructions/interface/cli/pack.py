"""``fineinstructions pack``: judged pairs → the final dataset under the token budget."""

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
)


@click.command("pack", short_help="Pack judged pairs under the token budget.")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--documents",
    "documents",
    multiple=True,
    required=True,
    type=INPUT,
    help="The documents the pairs were made from (files, folders or URLs; repeatable).",
)
@click.option("-o", "--output", "output", required=True, type=click.Path(), help="Output folder.")
@click.option("--tokenizer", help="'embedded', a .gguf path, or a Hugging Face tokenizer name/path.")
@click.option("--seed", type=int, help="Seed of the order pairs are drawn in (default 0).")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder already holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@document_input_options
@output_options
@executor_options
@config_options
def pack(pairs, documents, output, tokenizer, seed, overwrite, quiet, **options) -> None:
    """Pack judged PAIRS under their documents' token budget into the final dataset.

    Each document adds its token count to the budget; its pairs are drawn in a seeded
    random order and kept while the kept tokens stay within the running budget. The
    dataset's rows carry the formatted training text ("Instruction: …\\n\\nAnswer: …")
    and its token count; a dataset card (README.md) is written beside them.
    """
    from fineinstructions.execution.pack import run_pack

    config = build_config(
        options,
        settings={
            "pack.tokenizer": tokenizer,
            "pack.seed": seed,
        },
    )
    with open_executor(options, config) as executor:
        run_pack(
            pairs, documents, output, config, overwrite=overwrite, executor=executor,
            log=(lambda message: None) if quiet else (lambda message: click.echo(f"{message}\ndataset: {output}", err=True)),
        )
