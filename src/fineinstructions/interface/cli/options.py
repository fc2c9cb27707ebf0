"""Options shared by commands, and turning them into a validated config."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import click

OPTION_KEYS = {
    # the name a command receives an option under -> the config key it sets
    "text_field": "input.text_field",  # run: queries and documents alike
    "id_field": "input.id_field",
    "source_field": "input.source_field",
    "query_text_field": "input.queries.text_field",
    "query_id_field": "input.queries.id_field",
    "query_source_field": "input.queries.source_field",
    "messages_field": "input.queries.messages_field",
    "document_text_field": "input.documents.text_field",
    "document_id_field": "input.documents.id_field",
    "document_source_field": "input.documents.source_field",
    "template_field": "input.templates.template_field",
    "description_field": "input.templates.description_field",
    "template_id_field": "input.templates.id_field",
    "template_query_field": "input.templates.query_field",
    "on_error": "input.on_error",
    "output_format": "output.format",
}

SET_HELP = (
    "Override one config value, e.g. --set pack.seed=7 (repeatable). A field holding text "
    "or a choice takes VALUE as written (queries.moderation=off, templatize.prompt=yes), "
    "and null unsets one that may be unset (judge.prompt=null); any other field reads VALUE "
    "as YAML (numbers, true/false, null, [lists])."
)


def _apply(command: Callable, decorators: list[Callable]) -> Callable:
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def config_options(command: Callable) -> Callable:
    """--preset, --config and --set: where configuration comes from."""
    return _apply(command, [
        click.option(
            "--preset",
            default="embedded",
            show_default=True,
            help="Named preset to start from: 'embedded' (offline, CPU) or 'paper'.",
        ),
        click.option(
            "--config",
            "config_files",
            multiple=True,
            type=click.Path(dir_okay=False),
            help="TOML or YAML config file, applied over the preset (repeatable).",
        ),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.FIELD=VALUE", help=SET_HELP),
    ])


ON_ERROR = click.option(
    "--on-error",
    type=click.Choice(["raise", "skip"]),
    help="Stop at the first bad input row (raise, default) or count it and go on (skip).",
)


def query_input_options(command: Callable) -> Callable:
    """How query rows are read: field names and what to do with bad rows."""
    return _apply(command, [
        click.option("--text-field", "query_text_field", help="Field holding a query's text (default: text)."),
        click.option("--id-field", "query_id_field", help="Field holding a query's id (default: id)."),
        click.option("--source-field", "query_source_field", help="Field naming a query's source (default: source)."),
        click.option("--messages-field", help="Field holding a chat's messages, for rows without text (default: messages)."),
        ON_ERROR,
    ])


def document_input_options(command: Callable) -> Callable:
    """How document rows are read: field names and what to do with bad rows."""
    return _apply(command, [
        click.option("--text-field", "document_text_field", help="Field holding a document's text (default: text)."),
        click.option("--id-field", "document_id_field", help="Field holding a document's id (default: id)."),
        click.option("--source-field", "document_source_field", help="Field naming a document's source (default: source)."),
        ON_ERROR,
    ])


def pipeline_input_options(command: Callable) -> Callable:
    """How the queries and the documents of a whole run are read, each with its own fields."""
    return _apply(command, [
        click.option("--query-text-field", help="Field holding a query's text (default: text)."),
        click.option("--query-id-field", help="Field holding a query's id (default: id)."),
        click.option("--query-source-field", help="Field naming a query's source (default: source)."),
        click.option("--messages-field", help="Field holding a chat's messages, for query rows without text (default: messages)."),
        click.option("--document-text-field", help="Field holding a document's text (default: text)."),
        click.option("--document-id-field", help="Field holding a document's id (default: id)."),
        click.option("--document-source-field", help="Field naming a document's source (default: source)."),
        click.option("--text-field", help="Field holding the text of queries and documents alike (--query-/--document-text-field win)."),
        click.option("--id-field", help="Field holding the id of queries and documents alike (the specific options win)."),
        click.option("--source-field", help="Field naming the source of queries and documents alike (the specific options win)."),
        ON_ERROR,
    ])


def template_input_options(command: Callable, *, prefix: str = "") -> Callable:
    """How a template bank's rows are read (``index``; ``run --templates``, whose id
    and query options carry a ``--template-`` prefix)."""
    return _apply(command, [
        click.option("--template-field", help="Field holding the template text (default: template)."),
        click.option(
            "--description-field",
            help="Field holding the compatible-document description (default: compatible_document_description).",
        ),
        click.option(
            f"--{prefix}id-field", "template_id_field",
            help="Field holding the template id (default: id; rows without one get a content hash).",
        ),
        click.option(
            f"--{prefix}query-field", "template_query_field",
            help="Field holding the query each template was made from, if the bank has one (default: query).",
        ),
    ])


def output_options(command: Callable) -> Callable:
    return click.option(
        "--output-format",
        type=click.Choice(["parquet", "jsonl"]),
        help="Shard format of the output (default: parquet).",
    )(command)


def build_config(options: Mapping[str, Any], settings: Mapping[str, Any] | None = None):
    """The validated config from --preset/--config/--set, the shared options in
    ``options`` and a command's own ``settings`` (config key -> typed value; None: not
    given). Command options win over --set, which wins over files and the preset.
    """
    from fineinstructions.config import load_config

    given = {key: options[name] for name, key in OPTION_KEYS.items() if options.get(name) is not None}
    given.update({key: value for key, value in (settings or {}).items() if value is not None})
    return load_config(
        preset=options.get("preset") or "embedded",
        files=options.get("config_files") or (),
        overrides=options.get("overrides") or (),
        settings=given,
    )


class InputPath(click.ParamType):
    """An input file or folder that exists, or an fsspec URL (``s3://bucket/docs/``)."""

    name = "path"

    def convert(self, value, param, ctx):
        from fineinstructions.io.formats import is_url

        if is_url(value):
            return value
        return click.Path(exists=True).convert(value, param, ctx)


INPUT = InputPath()


def executor_options(command: Callable) -> Callable:
    """--executor and --ray-address: where the stage's batches run."""
    return _apply(command, [
        click.option(
            "--executor",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Run here (local) or on a Ray cluster (ray; sized by the [ray] config section).",
        ),
        click.option(
            "--ray-address",
            metavar="ADDRESS",
            help="With --executor ray: the cluster to join ('auto', 'ray://HOST:10001'); default: start one here.",
        ),
    ])


@contextmanager
def open_executor(options: dict[str, Any], config) -> Iterator:
    """The executor the options name, shut down (if it started Ray) when the command ends."""
    from fineinstructions.errors import UserError
    from fineinstructions.execution.executor import make_executor

    if options.get("ray_address") and (options.get("executor") or "local") != "ray":
        raise UserError("--ray-address names a Ray cluster, but the executor is local.\n  fix: add --executor ray")
    executor = make_executor(options.get("executor") or "local", config.ray, address=options.get("ray_address"))
    try:
        yield executor
    finally:
        executor.close()
