"""Read a template bank in any schema: this package's bank, the released one, a team's own.

A bank is any table (JSONL, CSV, Parquet; files, folders or fsspec URLs) with a field for
the template text and one for the description of the documents that could answer it
(:class:`~fineinstructions.io.readers.TemplateFieldMapping` names them). Every row is parsed and checked with the
rules the pipeline applies to the templates it makes itself
(:func:`~fineinstructions.text.genericity.template_problems`): the variables and the
complexity are computed here, never taken from the input; when the bank says which query
a template was made from, the template must also be a generic version of it.

A template that breaks a rule is skipped with a reject naming the rule (``unclosed_tag``,
``no_variables``, ``empty_description``, ...): a bank of millions of rows always holds
some, and they never stop a build. A row that does not fit the schema at all (no
template field) is an :class:`~fineinstructions.errors.InputError` naming the file, row
and field, as for queries and documents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from fineinstructions.errors import InputError
from fineinstructions.io.readers import (
    TemplateFieldMapping,
    file_outcomes,
    input_files,
    source_name,
)
from fineinstructions.records import QueryRow, RejectRow, TemplateRow
from fineinstructions.text.genericity import checked_template

STAGE = "index"
EMPTY_TEMPLATE = "empty_template"
DUPLICATE = "duplicate"  # the same template and description as an earlier row
DUPLICATE_ID = "duplicate_id"  # another template under an id an earlier row has
REPEATED = {  # why a repeat was dropped, as its reject says
    DUPLICATE: "an earlier row has the same template and description",
    DUPLICATE_ID: "an earlier row has another template under this id",
}


def _text(path: Path, location: str, record: dict, name: str, option: str) -> str | None | InputError:
    if name not in record:
        fields = ", ".join(repr(k) for k in list(record)[:12]) or "none"
        return InputError(
            path, f"missing (the row's fields: {fields})", location=location, field=name,
            fix=f"pass {option} NAME for the field that holds it (now {name!r})",
        )
    value = record[name]
    if value is None or isinstance(value, str):
        return value
    return InputError(
        path, f"expected a string, got {type(value).__name__}", location=location, field=name,
        fix=f"pass {option} NAME for the field that holds it (now {name!r})",
    )


def _optional(record: dict, name: str) -> str:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return str(value).strip()


def template_builder(fields: TemplateFieldMapping = TemplateFieldMapping()) -> Callable[[Path, str, dict], list]:
    """The function that turns one raw bank row into a :class:`TemplateRow`, a
    :class:`RejectRow` (a template the rules refuse), or an :class:`InputError`."""
    sources: dict[str, str] = {}

    def default_source(path: Path) -> str:
        if str(path) not in sources:
            sources[str(path)] = source_name(path)
        return sources[str(path)]

    def build(path: Path, location: str, record: dict) -> list[TemplateRow | RejectRow | InputError]:
        template = _text(path, location, record, fields.template, "--template-field")
        if isinstance(template, InputError):
            return [template]
        description = _text(path, location, record, fields.description, "--description-field")
        if isinstance(description, InputError):
            return [description]
        template, description = (template or "").strip(), (description or "").strip()
        row_id = _optional(record, fields.id)
        where = f"{path}:{location}"

        def reject(reason: str, detail: str) -> list[Any]:
            return [RejectRow(stage=STAGE, input_id=row_id or where, reason=reason, detail=f"{where}: {detail}", input=template)]

        if not template:
            return reject(EMPTY_TEMPLATE, f"the {fields.template!r} field is empty")
        query = _optional(record, fields.query)
        parsed, problems = checked_template(template, description, query)
        if problems or parsed is None:
            return reject(problems[0].reason, "; ".join(p.detail for p in problems))
        source = _optional(record, fields.source) or default_source(path)
        return [
            TemplateRow(
                id=row_id or TemplateRow.make_id(template, description),
                query_id=_optional(record, fields.query_id) or (QueryRow.make_id(query) if query else ""),
                source=source,
                template=template,
                compatible_document_description=description,
                variables=tuple(parsed.variables),
                complexity=parsed.complexity,
                model=_optional(record, "model"),
                prompt_version=_optional(record, "prompt_version"),
            )
        ]

    return build


def valid_templates(paths: Sequence[str | Path], fields: TemplateFieldMapping = TemplateFieldMapping()) -> Iterator[TemplateRow]:
    """Every template of a bank that passes the rules, in order (rejects and bad rows are
    passed over: the index build counts them; this is for readers that only need the
    valid ones, such as helper training)."""
    build = template_builder(fields)
    for path in input_files(paths):
        for results in file_outcomes(path, build):
            yield from (row for row in results if isinstance(row, TemplateRow))
