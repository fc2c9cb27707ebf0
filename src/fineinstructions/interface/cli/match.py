"""``fineinstructions match``: documents → compatible templates from the index."""

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


@click.command("match", short_help="Documents -> compatible templates.")
@click.argument("documents", nargs=-1, required=True, type=INPUT)
@click.option("--index", "index_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Folder written by `fineinstructions index`.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the matches.")
@click.option("--threshold", type=float, help="Minimum cosine for a candidate (default: the embedder's calibrated value).")
@click.option("--num-chunks", type=int, help="Local Gaussian-pooled vectors per document, K (default 5: 6 vectors).")
@click.option(
    "--complexity-distribution",
    help="Target complexity distribution of chosen templates: 'bank' (default), 'uniform', or a JSON file {complexity: weight}.",
)
@click.option("--seed", type=int, help="Seed of the template sampling (default 0).")
@click.option("--nprobe", type=int, help="IVF cells searched per vector (default: the value the index was built with, 64 unless set).")
@click.option("--limit", type=int, help="Match only the first N documents read.")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder already holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@document_input_options
@output_options
@executor_options
@config_options
def match(documents, index_dir, output, threshold, num_chunks, complexity_distribution, seed, nprobe, limit, overwrite, quiet, **options) -> None:
    """Find compatible templates for each of the DOCUMENTS (files or folders, any
    supported format).

    Each document is embedded once; its global vector and K Gaussian-pooled local
    vectors each search the index, and each picks one template scoring at least the
    threshold (never one the document already has), drawn so that the chosen templates'
    complexity follows the target distribution. Writes rows (document_id, template_id,
    chunk, score) and OUTPUT/stats.json.
    """

    from fineinstructions.execution.match import run_match

    config = build_config(
        options,
        settings={
            "match.threshold": threshold,
            "embed.num_chunks": num_chunks,
            "match.complexity_distribution": complexity_distribution,
            "match.seed": seed,
            "index.nprobe": nprobe,
        },
    )
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    with open_executor(options, config) as executor:
        stats = run_match(
            documents, index_dir, output, config, overwrite=overwrite, limit=limit, executor=executor,
            show_progress=not quiet, log=log,
        )
    step = stats["match"]
    missing = step["vectors_without_match"]
    log(
        f"matched {step['in']} documents: {step['out']} with at least one template "
        f"({(step['matched_fraction'] or 0):.1%}), {step['matches']} matches "
        f"({step['matches_per_document']} per document, {step['distinct_templates']} distinct templates), "
        f"{step['documents_per_s']} documents/s\n"
        f"vectors without a match: {missing['no_candidate_above_threshold']} below the threshold "
        f"{step['threshold']}, {missing['candidates_already_chosen']} whose candidates were taken, "
        f"{missing['no_candidate_in_target_complexities']} outside the target complexities\n"
        f"matches: {output}"
    )
