"""Commands of stages this version does not have yet: they say so plainly."""

from __future__ import annotations

import click

from fineinstructions import __version__

_SUMMARIES = {
    "instantiate": "Templates + documents -> grounded pairs.",
    "judge": "Score pairs 1-5 and keep the good ones.",
    "run": "Run every stage, resumably.",
    "report": "HTML report of a finished run.",
}


def _pending(name: str, summary: str) -> click.Command:
    def callback(args: tuple[str, ...]) -> None:
        click.echo(
            f"`fineinstructions {name}` is not available in fineinstructions {__version__} yet; "
            "it arrives in a later release. Available now: templatize, index, match, pack, demo, config.",
            err=True,
        )
        raise SystemExit(2)

    return click.Command(
        name,
        callback=callback,
        help=f"{summary} Not available in this version yet.",
        short_help=f"{summary} [not yet available]",
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


PENDING_COMMANDS = {name: _pending(name, summary) for name, summary in _SUMMARIES.items()}
