"""Exceptions that mean "the user gave bad input": the CLI prints them as one line."""

from __future__ import annotations

from planner.config import ConfigError
from planner.types import InvalidInputError


class UserError(Exception):
    """Bad input (missing path, unknown name, mismatched results folder) with its fix."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    UserError,
    ConfigError,
    InvalidInputError,
    FileNotFoundError,
)
