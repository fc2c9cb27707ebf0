"""Options shared by commands, and turning them into a validated config."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click

FIELD_OPTIONS = {
    # option name -> config key
    "text_field": "input.text_field",
    "id_field": "input.id_field",
    "source_field": "input.source_field",
    "messages_field": "input.messages_field",
    "on_error": "input.on_error",
    "output_format": "output.format",
}


def config_options(command: Callable) -> Callable:
    """--preset, --config and --set: where configuration comes from."""
    decorators = [
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
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="SECTION.FIELD=VALUE",
            help="Override one config value, e.g. --set pack.seed=7 (repeatable).",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def input_options(command: Callable) -> Callable:
    """How input rows are read: field names and what to do with bad rows."""
    decorators = [
        click.option("--text-field", help="Field holding the text (default: text)."),
        click.option("--id-field", help="Field holding the row id (default: id)."),
        click.option("--source-field", help="Field naming the source (default: source)."),
        click.option("--messages-field", help="Field holding chat messages (default: messages)."),
        click.option(
            "--on-error",
            type=click.Choice(["raise", "skip"]),
            help="Stop at the first bad input row (raise, default) or count it and go on (skip).",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def output_options(command: Callable) -> Callable:
    return click.option(
        "--output-format",
        type=click.Choice(["parquet", "jsonl"]),
        help="Shard format of the output (default: parquet).",
    )(command)


def build_config(options: dict[str, Any], extra: dict[str, Any] | None = None):
    """The validated config from --preset/--config/--set and command options.

    Explicit command options win over --set, which wins over files and the preset.
    """
    from fineinstructions.config import load_config

    overrides = list(options.get("overrides") or ())
    for name, key in FIELD_OPTIONS.items():
        if options.get(name) is not None:
            overrides.append(f"{key}={_yaml_string(options[name])}")
    for key, value in (extra or {}).items():
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(
        preset=options.get("preset") or "embedded",
        files=options.get("config_files") or (),
        overrides=overrides,
    )


def _yaml_string(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a YAML string: field names stay strings


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
    decorators = [
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
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@contextmanager
def open_executor(options: dict[str, Any], config, *, show_progress: bool = False) -> Iterator:
    """The executor the options name, shut down (if it started Ray) when the command ends."""
    from fineinstructions.errors import UserError
    from fineinstructions.execution.executor import make_executor

    if options.get("ray_address") and (options.get("executor") or "local") != "ray":
        raise UserError("--ray-address names a Ray cluster, but the executor is local.\n  fix: add --executor ray")
    executor = make_executor(
        options.get("executor") or "local", config.ray, address=options.get("ray_address"), show_progress=show_progress
    )
    try:
        yield executor
    finally:
        executor.close()
