"""``fineinstructions export``: a finished dataset, or its control corpus, for a trainer."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import INPUT, build_config, config_options


@click.command("export", short_help="Dataset or control corpus -> trainer files.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "format", required=True, type=click.Choice(["jsonl", "parquet", "hf", "tokens"]),
              help="jsonl or parquet files, a Hugging Face datasets folder (hf), or uint32 token ids with a loss mask (tokens).")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--control", is_flag=True, help="Export the control corpus instead: the source documents as plain text, cut to the dataset's token count.")
@click.option("--documents", "documents", multiple=True, type=INPUT, help="The source documents, in order (with --control; repeatable).")
@click.option("--tokenizer", help="Tokenizer for token counts and ids (default: the one pack counted the dataset with).")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def export(dataset, format, output, control, documents, tokenizer, overwrite, quiet, **options) -> None:
    """Write the pairs of DATASET (the folder `pack` wrote) as JSONL or Parquet files
    with a `text` column, a Hugging Face datasets folder, or pre-tokenized shards
    (input_ids.npy: uint32 token ids, each pair ended by end-of-sequence; label_mask.npy:
    1 on answer tokens) for trainers that read flat token files.

    With --control, write the other arm of the controlled experiment instead: the
    documents given with --documents as plain text, in order, cut to exactly the
    dataset's token count with the same tokenizer.
    """
    from fineinstructions.experiments.export import (
        dataset_tokenizer,
        export_control,
        export_dataset,
    )

    config = build_config(options)
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    tokenizer = tokenizer or dataset_tokenizer(dataset, config.pack.tokenizer)
    if control:
        if not documents:
            raise click.UsageError("--control needs the source documents: --documents DOCS")
        export_control(dataset, documents, output, format=format, tokenizer=tokenizer, overwrite=overwrite, log=log)
    else:
        export_dataset(dataset, output, format=format, tokenizer=tokenizer, overwrite=overwrite, log=log)
