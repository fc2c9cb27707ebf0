"""``fineinstructions distill templatizer|instantiator``: silver data from a teacher LLM."""

from __future__ import annotations

import click

from fineinstructions.interface.cli.options import (
    INPUT,
    build_config,
    config_options,
    executor_options,
    open_executor,
    template_input_options,
)

TEACHER_HELP = (
    "TOML or YAML file whose [llm] table is the teacher (any backend: backend, model, base_url, ...; "
    "an optional top-level 'prompt' replaces the stage's prompt). Default: the stage's configured LLM."
)


def teacher_settings(path: str | None, section: str) -> dict:
    """The config keys a teacher file sets for ``section`` (``templatize``/``instantiate``)."""
    from fineinstructions.config import read_config_file
    from fineinstructions.errors import ConfigError

    if path is None:
        return {}
    data = read_config_file(path)
    table = data.get("llm")
    unknown = sorted(set(data) - {"llm", "prompt"})
    if not isinstance(table, dict) or unknown:
        raise ConfigError(
            f"{path}: a teacher file holds an [llm] table (and optionally a top-level 'prompt')"
            + (f"; it also has {', '.join(unknown)}" if unknown else "; it has no [llm] table")
            + '\n  fix: write e.g.\n    [llm]\n    backend = "openai"\n    model = "your-teacher"\n    base_url = "http://host:8000/v1"'
        )
    settings = {f"{section}.llm.{key}": value for key, value in table.items()}
    if "prompt" in data:
        settings[f"{section}.prompt"] = data["prompt"]
    return settings


def _log(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))


@click.group("distill", short_help="Silver data for a helper from a teacher LLM.")
def distill() -> None:
    """Make silver data for a helper (the templatizer or the instantiator) with a teacher
    LLM behind any backend: the pipeline's own stages run with the teacher in prompted
    mode, and only outputs that pass the pipeline's validation are kept, written in the
    released models' contract for `fineinstructions train`."""


@distill.command("templatizer", short_help="Queries -> templatizer silver data.")
@click.option("--queries", "queries", multiple=True, required=True, type=INPUT, help="Query files, folders or URLs (repeatable).")
@click.option("--teacher-config", type=click.Path(exists=True, dir_okay=False), help=TEACHER_HELP)
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the silver data.")
@click.option("--limit", type=int, help="Only the first N queries read.")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@executor_options
@config_options
def templatizer(queries, teacher_config, output, limit, overwrite, quiet, **options) -> None:
    """Templatize QUERIES with the teacher; every valid template becomes one silver
    example: the bare query as the user turn, {"template", "compatible_document_description"}
    as the target. The queries are filtered as `templatize` filters them."""
    from fineinstructions.interface.distill import distill_templatizer

    config = build_config(options, settings=teacher_settings(teacher_config, "templatize"))
    with open_executor(options, config) as executor:
        distill_templatizer(queries, output, config, limit=limit, overwrite=overwrite, executor=executor,
                            show_progress=not quiet, log=_log(quiet))


@distill.command("instantiator", short_help="Documents + a bank -> instantiator silver data.")
@click.option("--documents", "documents", multiple=True, required=True, type=INPUT, help="Document files, folders or URLs (repeatable).")
@click.option("--templates", "templates", multiple=True, type=INPUT, help="The template bank (repeatable).")
@click.option("--index", "index", type=click.Path(exists=True, file_okay=False), help="The bank's index, if built already (default: built into OUTPUT/work/index).")
@click.option("--teacher-config", type=click.Path(exists=True, dir_okay=False), help=TEACHER_HELP)
@click.option("--null-share", default=0.05, show_default=True, help="Share of deliberately mismatched examples whose target is null.")
@click.option("--limit", type=int, help="Only the first N documents read.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the silver data.")
@click.option("--overwrite", is_flag=True, help="Replace what the output folder holds.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@template_input_options
@executor_options
@config_options
def instantiator(documents, templates, index, teacher_config, null_share, limit, output, overwrite, quiet, **options) -> None:
    """Match DOCUMENTS to the bank (up to 6 templates a document, one per document
    vector), instantiate every match with the teacher, and keep the grounded pairs: the
    JSON {"instruction_template", "document"} as the user turn, {"instruction", "answer"}
    with compact excerpt markers as the target; plus --null-share mismatched pairs whose
    target is null."""
    from fineinstructions.interface.distill import distill_instantiator

    config = build_config(options, settings=teacher_settings(teacher_config, "instantiate"))
    with open_executor(options, config) as executor:
        distill_instantiator(documents, templates, output, config, index=index, null_share=null_share, limit=limit, overwrite=overwrite,
                             executor=executor, show_progress=not quiet, log=_log(quiet))
