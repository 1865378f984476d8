"""Errors a user can act on: each names the field at fault and the fix."""

from __future__ import annotations


class SuperalignError(Exception):
    """Base class for errors caused by user input (config, data, model names)."""


class ConfigError(SuperalignError, ValueError):
    """A config field holds a value that cannot work."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class DataError(SuperalignError, ValueError):
    """The data handed to a task does not fit (columns, labels, split sizes)."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class UnknownNameError(SuperalignError, KeyError):
    """A model or task name that is neither registered nor loadable."""

    def __init__(self, field: str, name: str, known: list[str], fix: str):
        self.field, self.name, self.known = field, name, known
        kind = field.split(".")[-1].split("[")[0]
        kind = "model" if kind.endswith("model") or kind == "policy" else kind
        listed = f" Known: {', '.join(sorted(known))}." if known else ""
        msg = f"{field}: unknown {kind} '{name}'.{listed} Fix: {fix}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class TrainingError(SuperalignError, RuntimeError):
    """Training diverged (NaN/inf loss) or cannot proceed."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class AssetMissingError(SuperalignError, FileNotFoundError):
    """An offline asset (pip/npm/Debian package) is not installed on this machine."""
