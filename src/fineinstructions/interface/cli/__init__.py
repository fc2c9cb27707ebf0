"""The ``fineinstructions`` command line: thin commands that turn arguments into config
and call the library. Heavy imports happen inside commands, so ``--help`` is instant."""

from __future__ import annotations

import click

from fineinstructions import __version__
from fineinstructions.errors import UserError, os_error_message
from fineinstructions.interface.cli.audit import audit
from fineinstructions.interface.cli.config_command import config_command
from fineinstructions.interface.cli.demo import demo
from fineinstructions.interface.cli.distill import distill
from fineinstructions.interface.cli.doctor import doctor
from fineinstructions.interface.cli.evaluate import evaluate
from fineinstructions.interface.cli.experiment import experiment
from fineinstructions.interface.cli.export import export
from fineinstructions.interface.cli.index import index
from fineinstructions.interface.cli.match import match
from fineinstructions.interface.cli.pack import pack
from fineinstructions.interface.cli.pipeline import instantiate, judge, report, run
from fineinstructions.interface.cli.pretrain import pretrain
from fineinstructions.interface.cli.templatize import templatize
from fineinstructions.interface.cli.train import calibrate, train


class _Group(click.Group):
    """Prints user errors as one clear message and exits with status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(2)
        except Exception as error:  # a full disk, a read-only folder: a message, not a traceback
            message = os_error_message(error)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(2)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # pipeline order, not alphabetical


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fineinstructions")
def main() -> None:
    """Turn a pre-training corpus into grounded instruction→answer training data.

    Real user queries become instruction templates; each document is matched to
    compatible templates, which an LLM fills in with answers quoted from the document;
    a judge keeps the good pairs, packed under the document's own token budget.
    """


for _command in (templatize, index, match, instantiate, judge, pack, run, audit, export, pretrain, evaluate, experiment, distill, train, calibrate, demo, report, config_command, doctor):
    main.add_command(_command)
