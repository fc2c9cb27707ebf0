"""``fineinstructions demo``: run on the bundled examples with the embedded default."""

from __future__ import annotations

import click

from fineinstructions.cli.options import build_config, config_options


@click.command("demo", short_help="Run on the bundled examples, offline.")
@click.option(
    "-o", "--output", default="demo-output", show_default=True, type=click.Path(file_okay=False),
    help="Folder to write the demo's dataset, stats and rejects to.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@config_options
def demo(output, quiet, **options) -> None:
    """Run the available stages on the bundled examples, offline, on the CPU."""
    from fineinstructions.demo import run_demo

    config = build_config(options)
    run_demo(output, config, log=(lambda message: None) if quiet else (lambda m: click.echo(m, err=True)))
