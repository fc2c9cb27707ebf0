"""Typed errors. Each one says what is wrong, where, and how to fix it."""

from __future__ import annotations

from typing import Sequence


class FineInstructionsError(Exception):
    """Base class of every error this package raises on purpose."""


class UserError(FineInstructionsError):
    """Something the user can fix: bad input, bad config, a missing dependency.

    The command line prints these as one clear message and exits non-zero,
    without a traceback.
    """


class InputError(UserError):
    """A row of an input file cannot be read.

    ``location`` is ``"line N"`` for line-based formats and ``"row N"`` for Parquet
    (both counted from 1); ``field`` names the field at fault when there is one.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        location: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.path = str(path)
        self.location = location
        self.field = field
        self.problem = problem
        self.fix = fix
        where = self.path + (f", {location}" if location else "")
        what = f"field {field!r}: {problem}" if field else problem
        message = f"{where}: {what}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)

    def __reduce__(self):  # rebuilt with its fields when it crosses processes (Ray workers)
        return _input_error, (self.path, self.problem, self.location, self.field, self.fix)


def _input_error(path: str, problem: str, location: str | None, field: str | None, fix: str | None) -> InputError:
    return InputError(path, problem, location=location, field=field, fix=fix)


class ConfigError(UserError):
    """A configuration file or override is invalid."""


class MissingDependencyError(UserError):
    """An optional dependency is not installed; the message gives the install command."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        self.purpose = purpose
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed.\n"
            f"  fix: pip install 'fineinstructions[{extra}]'"
        )

    def __reduce__(self):
        return MissingDependencyError, (self.package, self.extra, self.purpose)


class TemplateSyntaxError(FineInstructionsError, ValueError):
    """A template does not parse; ``problems`` lists every reason."""

    def __init__(self, text: str, problems: Sequence[str]) -> None:
        self.text = text
        self.problems = list(problems)
        super().__init__("invalid template: " + "; ".join(self.problems))

    def __reduce__(self):
        return TemplateSyntaxError, (self.text, self.problems)
