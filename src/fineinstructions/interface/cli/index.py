"""``fineinstructions index``: a template bank → a FAISS index of its descriptions."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import (
    ON_ERROR,
    InputPath,
    build_config,
    config_options,
    executor_options,
    open_executor,
    template_input_options,
)


@click.command("index", short_help="Template bank -> FAISS index.")
@click.argument("templates", nargs=-1, required=True, type=InputPath())
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the index.")
@click.option(
    "--kind",
    type=click.Choice(["auto", "flat", "ivf", "ivfsq", "ivfpq", "hnsw"]),
    help="Index type (default auto: exact up to 100K templates, HNSW up to 2M, IVF-SQ8 up to 10M, IVF-PQ beyond).",
)
@click.option("--nlist", type=int, help="IVF cells (default about 4·sqrt(templates)).")
@click.option("--nprobe", type=int, help="IVF cells searched per query (default 64; also settable at match time).")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder already holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@template_input_options
@ON_ERROR
@executor_options
@config_options
def index(templates, output, kind, nlist, nprobe, overwrite, quiet, **options) -> None:
    """Embed the compatible-document description of every template in TEMPLATES and
    store them in a FAISS inner-product index, with the template ids and the embedder's
    identity.

    TEMPLATES are bank folders written by `fineinstructions templatize`, or any table of
    templates: JSONL, CSV or Parquet files, folders of them, or fsspec URLs (hf://datasets/...,
    s3://...). --template-field and --description-field say which fields hold the
    template and its description; rows without an id get a content hash. Every template
    is checked with the pipeline's rules (its variables and complexity are computed
    here); invalid ones and exact repeats are skipped, counted by reason in stats.json
    and kept in OUTPUT.rejects.jsonl. A killed build resumes from its last finished
    shard of vectors.

    Documents must later be matched with the same embedder (embed.model); a different
    one is refused.
    """

    from fineinstructions.execution.index import run_index

    config = build_config(options, settings={"index.kind": kind, "index.nlist": nlist, "index.nprobe": nprobe})
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    with open_executor(options, config) as executor:
        stats = run_index(
            templates, output, config, overwrite=overwrite, executor=executor,
            show_progress=not quiet, log=log,
        )
    step = stats["index"]
    skipped = ", ".join(f"{k} {v}" for k, v in step["skipped"].items())
    log(
        f"indexed {step['out']} templates ({step['kind']}, {step['bytes_per_template']:.0f} bytes/template) "
        f"in {step['seconds']:.1f}s, {step['templates_per_s']} templates/s"
        + (f"; skipped: {skipped} (each with its reason in {step.get('rejects', 'the rejects file')})" if skipped else "")
        + f"\nindex: {output}"
    )
