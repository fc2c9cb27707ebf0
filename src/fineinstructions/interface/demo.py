"""The demo: the whole pipeline on the bundled examples, with the embedded default.

The bundled examples (``fineinstructions/examples/``) were written for this package: a
few dozen queries and six short documents. The demo runs every stage on them
(:func:`fineinstructions.execution.pipeline.run_pipeline`) — templatize, index, match,
instantiate, judge, pack, then the audit — offline on the CPU, and writes the dataset, ``stats.json``
and ``report.html`` to its output folder. Running it again resumes (or, when it had
finished, reuses) what the folder holds.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Callable

from fineinstructions.config import Config


def examples_dir() -> Path:
    return Path(str(resources.files("fineinstructions") / "examples"))


def run_demo(
    out_dir: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    show_progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the pipeline on the bundled examples into ``out_dir``; returns its stats."""
    from fineinstructions.execution.pipeline import run_pipeline
    from fineinstructions.experiments.audit import run_audit
    from fineinstructions.interface.report import write_report

    examples = examples_dir()
    documents = [examples / "documents.jsonl"]
    return run_pipeline(
        [examples / "queries.jsonl"],
        documents,
        out_dir,
        config,
        overwrite=overwrite,
        show_progress=show_progress,
        report=write_report,
        audit=lambda dataset: run_audit(dataset, documents, config, log=log),
        log=log,
    )
