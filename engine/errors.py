"""The error hierarchy. Every message is written for the marketer or operator who must act on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class LifecycleError(Exception):
    """Base of every error the engine reports to a user (exit status 1)."""


@dataclass
class Problem:
    """One located problem in a file the user wrote: `file:line:col: message`."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


def display_path(path: Path, root: Path) -> str:
    """A file as the marketer knows it: relative to the project folder where possible."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class ProblemsError(LifecycleError):
    """One or more located problems in config, campaigns, templates or imported data."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(ProblemsError):
    """config.yaml is invalid or a required secret is missing."""


class CampaignError(ProblemsError):
    """A campaign file is invalid."""


class TemplateError(ProblemsError):
    """A template does not parse, compile or render."""


class NotFound(LifecycleError):
    """A named campaign, customer or step does not exist."""


def describe(exc: BaseException) -> str:
    """An exception as a reason a person can read: a located problem as it is, else its kind and text."""
    if isinstance(exc, ProblemsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
