"""Prompts are data: versioned TOML files in ``fineinstructions/prompts/``.

A prompt file holds a ``version`` (recorded on every row the prompt helps make, so a
changed prompt never mixes silently with old outputs), a ``system`` message and worked
``examples``, each a table of named fields the stage turns into chat turns. A user may
pass their own file instead of a packaged name; it must have the same fields.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fineinstructions.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Prompt:
    """A loaded prompt: its version, system message and worked examples."""

    version: str
    system: str
    examples: tuple[dict[str, str], ...]
    source: str
    fields: tuple[tuple[str, str], ...] = ()  # other top-level strings (e.g. a user-turn layout)

    def field(self, name: str) -> str:
        """A top-level string of the prompt file other than version and system."""
        for key, value in self.fields:
            if key == name:
                return value
        raise ConfigError(f"{self.source}: needs a string {name!r}")

    def require(self, *fields: str) -> "Prompt":
        """Check every example has ``fields``; returns the prompt for chaining."""
        for number, example in enumerate(self.examples, 1):
            missing = [field for field in fields if not str(example.get(field, "")).strip()]
            if missing:
                raise ConfigError(
                    f"{self.source}: example {number} lacks {', '.join(missing)}; "
                    f"every example needs {', '.join(fields)}"
                )
        return self


def packaged_prompts() -> list[str]:
    folder = resources.files("fineinstructions") / "prompts"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_prompt(name_or_path: str | Path) -> Prompt:
    """A packaged prompt by name (``templatize-v1``) or a prompt file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        source, text = str(path), path.read_text("utf-8")
    elif str(name_or_path) in packaged_prompts():
        resource = resources.files("fineinstructions") / "prompts" / f"{name_or_path}.toml"
        source, text = f"prompt {name_or_path}", resource.read_text("utf-8")
    else:
        raise ConfigError(
            f"no prompt {str(name_or_path)!r}: give a .toml file that exists or one of "
            f"{', '.join(packaged_prompts())}"
        )
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: cannot parse: {error}") from None
    if not isinstance(data.get("version"), str) or not data["version"].strip():
        raise ConfigError(f"{source}: needs a non-empty string 'version'")
    if not isinstance(data.get("system"), str):
        raise ConfigError(f"{source}: needs a string 'system' (it may be empty)")
    examples = data.get("examples", [])
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise ConfigError(f"{source}: 'examples' must be an array of tables ([[examples]])")
    return Prompt(
        version=data["version"].strip(),
        system=data["system"].strip(),
        examples=tuple({k: str(v) for k, v in e.items()} for e in examples),
        source=source,
        fields=tuple(
            (k, v.strip("\n")) for k, v in data.items() if isinstance(v, str) and k not in ("version", "system")
        ),
    )
