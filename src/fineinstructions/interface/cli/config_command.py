"""``fineinstructions config``: show the configuration a command would run with."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import build_config, config_options


@click.command("config", short_help="Print the resolved configuration.")
@config_options
def config_command(**options) -> None:
    """Print the resolved configuration (preset + files + overrides) as TOML."""
    from fineinstructions.config import config_as_toml

    click.echo(config_as_toml(build_config(options)), nl=False)
