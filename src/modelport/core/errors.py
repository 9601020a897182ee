"""Errors users see: each carries the one-line message the CLI prints and the exit code it returns.

The CLI contract is 1 for a failed conversion or verification and 2 for a usage error, so the
class decides the code and callers never have to.
"""
from __future__ import annotations

from pathlib import Path

MAX_MESSAGE = 1000          # characters: a message quoting hostile input stays one readable line
SHOWN_NAME = 80


def cut(name: str) -> str:
    """A name taken from a file (a tensor, a key), cut short for a message."""
    return name if len(name) <= SHOWN_NAME else f"{name[:SHOWN_NAME]}... ({len(name)} characters)"


def quoted(name: str) -> str:
    """`cut(name)`, escaped and quoted, so control characters cannot break the line."""
    return repr(cut(name))


def one_line(text: str) -> str:
    """`text` as a single line of bounded length, whatever a file or a library put into it."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_MESSAGE else f"{flat[:MAX_MESSAGE]}... ({len(flat) - MAX_MESSAGE} more characters)"


class ModelportError(Exception):
    """Base of every error modelport raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.reason = one_line(message)         # what is wrong, without the path
        super().__init__(one_line(f"{path}: {message}" if path is not None else message))


class UsageError(ModelportError):
    """The request itself is wrong: a bad flag, a missing path, an unsupported combination."""

    exit_code = 2


class ModelConversionError(ModelportError):
    """A conversion could not be completed; nothing was left at the destination."""


class ModelVerificationError(ModelportError):
    """A converted model does not compute what its source computes; `report` holds the measurements."""

    report: dict | None = None

    def with_report(self, report: dict) -> "ModelVerificationError":
        self.report = report
        return self


class ModelFileNotFoundError(ModelportError):
    """A file a model needs (config, tokenizer, weights) is missing."""


class ModelConnectionError(ModelportError):
    """A download failed after all retries."""


class CorruptInputError(ModelConversionError):
    """A file exists but cannot be read as what it claims to be (truncated, corrupt, wrong kind)."""


class UnsafeCheckpointError(ModelConversionError):
    """Loading the input would execute code it carries; refused unless explicitly allowed."""


class UnknownArchitectureError(ModelConversionError):
    """No architecture spec is registered for the model's type."""


class KeyMismatchError(ModelConversionError):
    """A checkpoint's tensors do not fit the architecture (missing keys or wrong shapes)."""


class IncompleteCheckpointError(ModelConversionError):
    """A checkpoint is still being written (or was abandoned half-way)."""
