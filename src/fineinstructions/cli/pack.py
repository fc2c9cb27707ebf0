"""``fineinstructions pack``: judged pairs → the final dataset under the token budget."""

from __future__ import annotations

import json

import click

from fineinstructions.cli.options import build_config, config_options, input_options, output_options


@click.command("pack", short_help="Pack judged pairs under the token budget.")
@click.argument("pairs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--documents",
    "documents",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="The documents the pairs were made from (files or folders; repeatable).",
)
@click.option("-o", "--output", "output", required=True, type=click.Path(), help="Output folder.")
@click.option("--tokenizer", help="'embedded', a .gguf path, or a Hugging Face tokenizer name/path.")
@click.option("--seed", type=int, help="Seed of the order pairs are drawn in (default 0).")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder already holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@input_options
@output_options
@config_options
def pack(pairs, documents, output, tokenizer, seed, overwrite, quiet, **options) -> None:
    """Pack judged PAIRS under their documents' token budget into the final dataset.

    Each document adds its token count to the budget; its pairs are drawn in a seeded
    random order and kept while the kept tokens stay within the running budget. The
    dataset's rows carry the formatted training text ("Instruction: …\\n\\nAnswer: …")
    and its token count.
    """
    from fineinstructions.errors import UserError
    from fineinstructions.io import ReadStats, ShardWriter, read_documents, read_rows, write_json
    from fineinstructions.io.writers import prepare_output_dir
    from fineinstructions.records import PairRow
    from fineinstructions.stages.pack import pack_stage
    from fineinstructions.tokens import load_token_counter

    config = build_config(
        options,
        extra={
            "pack.tokenizer": json.dumps(tokenizer) if tokenizer else None,
            "pack.seed": seed,
        },
    )
    out = prepare_output_dir(output, overwrite=overwrite)
    read_stats = ReadStats()
    document_rows = list(
        read_documents(
            documents,
            fields=config.input.field_mapping(),
            stats=read_stats,
            on_error=config.input.on_error,
        )
    )
    pair_rows = list(read_rows(pairs, PairRow))
    counter = load_token_counter(config.pack.tokenizer)
    try:
        result, stats = pack_stage(
            document_rows, pair_rows, counter=counter, seed=config.pack.seed
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    with ShardWriter(
        out, PairRow, format=config.output.format, rows_per_shard=config.output.rows_per_shard
    ) as writer:
        writer.write(result.kept)
    write_json({"read_documents": read_stats.as_dict(), "pack": stats}, out / "stats.json")
    if not quiet:
        click.echo(
            f"packed {stats['out']} of {stats['in']} pairs from {stats['documents']} documents "
            f"({stats['kept_tokens']} of {stats['budget_tokens']} budget tokens, "
            f"{counter.name} tokenizer) into {out}",
            err=True,
        )
