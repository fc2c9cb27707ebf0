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


class ServerUnavailable(UserError):
    """An LLM server stayed unreachable through every retry; a rerun goes on."""


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


def os_error_message(error: BaseException) -> str | None:
    """What a failure of the machine (a full disk, a read-only folder, a path through a
    file) means to the user, with the fix; None for any other exception. A rerun after
    the fix resumes: finished work is kept."""
    import errno
    import sqlite3

    if isinstance(error, sqlite3.OperationalError) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return ("the disk holding a request cache is full (" + str(error) + ").\n"
                "  fix: free space on that disk, then run the same command again: finished work is kept")
    if not isinstance(error, OSError):
        return None
    path = error.filename or "a file"
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"cannot write {path}: {reason} (the disk or your quota is full).\n"
                "  fix: free space (or choose an output folder on another disk), then run the same command "
                "again: finished work is kept")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"cannot write {path}: {reason}.\n"
                "  fix: choose an output folder you can write to (-o), or make this one writable")
    if error.errno == errno.ENOTDIR:
        return (f"cannot use {path}: a part of that path is a file, not a folder.\n"
                "  fix: choose an output path whose parent folders are folders")
    if error.errno == errno.EISDIR:
        return f"{path} is a folder where a file is expected.\n  fix: give the path of a file"
    return f"{path}: {reason}\n  fix: check the path and its permissions, then run the same command again"
