"""``fineinstructions demo``: the whole pipeline on the bundled examples, offline."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import build_config, config_options


@click.command("demo", short_help="Run the whole pipeline on the bundled examples, offline.")
@click.option(
    "-o", "--output", default="demo-output", show_default=True, type=click.Path(file_okay=False),
    help="Folder for every stage's output, stats.json and report.html.",
)
@click.option("--overwrite", is_flag=True, help="Start again instead of reusing what the folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def demo(output, overwrite, quiet, **options) -> None:
    """Run every stage (templatize, index, match, instantiate, judge, pack) on the
    bundled example queries and documents with the embedded models, offline, on the CPU
    (a few minutes on two cores), audit the dataset, and print where the report is."""
    from fineinstructions.interface.cli.pipeline import print_funnel
    from fineinstructions.interface.demo import examples_dir, run_demo

    config = build_config(options)
    log = (lambda message: None) if quiet else (lambda m: click.echo(m, err=True))
    log(f"demo: the pipeline on {examples_dir()} (queries.jsonl, documents.jsonl) into {output}")
    stats = run_demo(output, config, overwrite=overwrite, show_progress=not quiet, log=log)
    print_funnel(stats, output, log)
    if not stats["audit"]["passed"]:
        raise SystemExit(1)
